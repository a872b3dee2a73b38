"""What a handler gets (the message, a way to report progress, the context its module's
``startup`` set up) and what it may raise besides a failure (:class:`Retry`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rsmq_core import Message
from rsmq_core._protocol import MAX_SECONDS


@dataclass(frozen=True, slots=True)
class Job:
    """A received message being handled.

    ``progress(fraction)`` (0.0 to 1.0) records a "processing" event; it never blocks and
    may be called from a sync handler's thread or an async handler alike.

    ``context`` is the dict the handler module's ``startup(ctx)`` was given (and its
    ``shutdown(ctx)`` will be): one per worker process, shared by every job.
    """

    queue: str
    message: Message
    worker: str
    _report: Callable[[float], None] = field(repr=False)
    context: dict[str, Any] = field(default_factory=dict, repr=False)

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


class Retry(Exception):
    """Raised by a handler: hand the message back, to be received again in ``delay`` seconds
    instead of after the usual backoff. Not a failure, but a receive all the same: a message
    retried at its MAX_RECEIVES-th receive is dead-lettered.

    RSMQ's visibility timeouts are whole seconds, so a fractional delay is rounded up.
    """

    def __init__(self, delay: float) -> None:
        if isinstance(delay, bool) or not isinstance(delay, numbers.Real):
            raise TypeError(f"Retry(delay): delay must be a number of seconds, not {delay!r}")
        if not 0 <= delay <= MAX_SECONDS:  # NaN fails this too
            raise ValueError(
                f"Retry(delay): delay must be a finite number of seconds from 0 to "
                f"{MAX_SECONDS}, not {delay!r}"
            )
        self.delay: float = delay
        self.seconds: int = math.ceil(delay)
        super().__init__(f"retry in {self.seconds}s")
