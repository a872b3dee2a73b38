"""What a handler gets: the message, and a way to report progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rsmq_core import Message


@dataclass(frozen=True, slots=True)
class Job:
    """A received message being handled.

    ``progress(fraction)`` (0.0 to 1.0) records a "processing" event; it never blocks and
    may be called from a sync handler's thread or an async handler alike.
    """

    queue: str
    message: Message
    worker: str
    _report: Callable[[float], None] = field(repr=False)

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def body(self) -> str:
        return self.message.message

    @property
    def rc(self) -> int:
        return self.message.rc

    def progress(self, fraction: float) -> None:
        self._report(min(1.0, max(0.0, float(fraction))))
