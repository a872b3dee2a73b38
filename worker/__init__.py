"""worker: the queue's worker process (``python -m worker``)."""

from rsmq_core import __version__ as __version__

from .job import Job, Retry
from .settings import SettingError, Settings
from .worker import Handler, Worker

__all__ = ["Handler", "Job", "Retry", "SettingError", "Settings", "Worker"]
