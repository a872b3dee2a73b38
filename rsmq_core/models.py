"""The values rsmq_core returns: a received message and a queue's attributes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any


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

    @property
    def body(self) -> bytes:
        """The body exactly as stored, whatever wrote it.

        Bodies sent by this library are UTF-8, and ``message`` is their text. Another RSMQ
        client (or redis-cli) can store any bytes: then ``message`` holds them decoded with
        ``surrogateescape`` (each byte that is not UTF-8 is a lone surrogate, which no UTF-8
        encoder accepts), and ``body`` gives the bytes back.
        """
        return self.message.encode("utf-8", "surrogateescape")

    @property
    def is_text(self) -> bool:
        """Whether the body is UTF-8 text, so ``message`` can go anywhere text goes."""
        try:
            self.message.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        """The message as JSON can carry it, losing nothing: RSMQ's fields ``id``, ``message``,
        ``rc``, ``fr``, ``sent``; for a body that is not UTF-8, ``message`` is None and
        ``message_base64`` holds the bytes."""
        out: dict[str, Any] = {"id": self.id, "message": self.message, "rc": self.rc}
        out["fr"], out["sent"] = self.fr, self.sent
        if not self.is_text:
            out["message"] = None
            out["message_base64"] = base64.b64encode(self.body).decode("ascii")
        return out


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
