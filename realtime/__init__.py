"""realtime: pub/sub wake-ups, status events and the live-worker registry."""

from rsmq_core import __version__ as __version__

from .events import ACTIONS, STATUSES, EventLog, Status, StatusEvent, events_json, queued_on_send
from .registry import WorkerInfo, live_workers
from .results import AsyncResults, JobFailed, Results, ResultTimeout
from .subscriber import RESYNC, Listener, Subscriber, Wakeup

__all__ = [
    "ACTIONS",
    "RESYNC",
    "STATUSES",
    "AsyncResults",
    "EventLog",
    "JobFailed",
    "Listener",
    "ResultTimeout",
    "Results",
    "Status",
    "StatusEvent",
    "Subscriber",
    "Wakeup",
    "WorkerInfo",
    "events_json",
    "live_workers",
    "queued_on_send",
]
