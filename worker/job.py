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
        """The body as text; one that is not UTF-8 (another RSMQ client can store any bytes)
        holds each stray byte as a lone surrogate: ``raw`` gives the bytes back."""
        return self.message.message

    @property
    def raw(self) -> bytes:
        """The body exactly as stored."""
        return self.message.body

    @property
    def rc(self) -> int:
        return self.message.rc

    def progress(self, fraction: float) -> None:
        self._report(min(1.0, max(0.0, float(fraction))))
