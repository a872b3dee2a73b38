"""The values rsmq_core returns: a received message and a queue's attributes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """A message as received or popped.

    ``rc`` is how many times it has been received (this time included), ``fr`` the epoch
    milliseconds of its first receive, ``sent`` the epoch milliseconds it was sent (from its id,
    so it may have a fractional part, as in RSMQ).
    """

    id: str
    message: str
    rc: int
    fr: int
    sent: float


@dataclass(frozen=True, slots=True)
class QueueAttributes:
    """A queue's settings and counters, as RSMQ's getQueueAttributes reports them.

    ``created`` and ``modified`` are epoch seconds; ``msgs`` counts every message in the queue,
    ``hiddenmsgs`` those not visible now (delayed or received and not yet timed out).
    """

    vt: int
    delay: int
    maxsize: int
    totalrecv: int
    totalsent: int
    created: int
    modified: int
    msgs: int
    hiddenmsgs: int


@dataclass(frozen=True, slots=True)
class Received:
    """What receive_batch returns: the messages, and when to look again.

    ``next_visible_in`` is 0.0 when the receive took as many as it asked for (there may be
    more), else the seconds until the next message becomes visible, or None if the queue
    holds no message at all.
    """

    messages: list[Message]
    next_visible_in: float | None
