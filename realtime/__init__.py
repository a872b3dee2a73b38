"""realtime: pub/sub wake-ups, status events and the live-worker registry."""

from rsmq_core import __version__ as __version__

from .events import ACTIONS, STATUSES, EventLog, Status, StatusEvent, events_json
from .registry import WorkerInfo, live_workers
from .subscriber import RESYNC, Listener, Subscriber, Wakeup

__all__ = [
    "ACTIONS",
    "RESYNC",
    "STATUSES",
    "EventLog",
    "Listener",
    "Status",
    "StatusEvent",
    "Subscriber",
    "Wakeup",
    "WorkerInfo",
    "events_json",
    "live_workers",
]
