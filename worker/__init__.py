"""worker: the queue's worker process (``python -m worker``)."""

from .job import Job, Retry
from .settings import SettingError, Settings
from .worker import Handler, Worker

__all__ = ["Handler", "Job", "Retry", "SettingError", "Settings", "Worker"]
