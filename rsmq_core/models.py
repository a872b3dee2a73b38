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
        return _is_text(self.message)

    def to_json(self) -> dict[str, Any]:
        """The message as JSON can carry it, losing nothing: RSMQ's fields ``id``, ``message``,
        ``rc``, ``fr``, ``sent``; for a body that is not UTF-8, ``message`` is None and
        ``message_base64`` holds the bytes."""
        out = {"id": self.id, "message": None, "rc": self.rc, "fr": self.fr, "sent": self.sent}
        return _with_body(out, self.message)


def _is_text(message: str) -> bool:
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _with_body(out: dict[str, Any], message: str) -> dict[str, Any]:
    """``out`` with the body as ``message`` (text), or ``message`` None and ``message_base64``
    (its ``message`` key is there already, so the field keeps its place)."""
    if _is_text(message):
        out["message"] = message
    else:
        out["message"] = None
        body = message.encode("utf-8", "surrogateescape")
        out["message_base64"] = base64.b64encode(body).decode("ascii")
    return out


@dataclass(frozen=True, slots=True)
class PeekedMessage:
    """A message as :meth:`~rsmq_core.AsyncRSMQ.peek_messages` sees it, left as it was.

    ``rc`` is how many times it has been received (0: never), ``fr`` the epoch milliseconds of
    its first receive (0: never), ``sent`` the epoch milliseconds it was sent, ``visible_at``
    the epoch milliseconds from which a receive may take it (its score), and ``visible``
    whether that time had come when it was peeked (by Redis's clock).
    """

    id: str
    message: str
    rc: int
    fr: int
    sent: float
    visible_at: int
    visible: bool

    def to_json(self) -> dict[str, Any]:
        """As :meth:`Message.to_json`, with ``visible_at`` and ``visible``."""
        out = {
            "id": self.id,
            "message": None,
            "rc": self.rc,
            "fr": self.fr,
            "sent": self.sent,
            "visible_at": self.visible_at,
            "visible": self.visible,
        }
        return _with_body(out, self.message)


@dataclass(frozen=True, slots=True)
class Peek:
    """One page of a queue's messages in visible-at order: ``messages`` from ``offset`` of
    ``total``; ``next_offset`` is where the next page starts (None: this was the last);
    ``paused_since`` the epoch milliseconds the queue was paused, None when it is not."""

    messages: list[PeekedMessage]
    offset: int
    total: int
    next_offset: int | None
    paused_since: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": [m.to_json() for m in self.messages],
            "offset": self.offset,
            "total": self.total,
            "next_offset": self.next_offset,
            "paused_since": self.paused_since,
        }


@dataclass(frozen=True, slots=True)
class QueueAttributes:
    """A queue's settings and counters, as RSMQ's getQueueAttributes reports them.

    ``created`` and ``modified`` are epoch seconds; ``msgs`` counts every message in the queue,
    ``hiddenmsgs`` those not visible now (delayed or received and not yet timed out);
    ``dedup_window`` the seconds a dedup id is remembered, ``retention`` the seconds after its
    send from which a message is never delivered (0: kept forever), ``totalexpired`` how many
    messages were dropped for it (ours; RSMQ has none of these three).
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
    dedup_window: int = 300
    retention: int = 0
    totalexpired: int = 0


@dataclass(frozen=True, slots=True)
class Received:
    """What receive_batch returns: the messages, and when to look again.

    ``next_visible_in`` is 0.0 when the receive took as many as it asked for (there may be
    more), else the seconds until the next message becomes visible, or None if the queue
    holds no message at all.
    """

    messages: list[Message]
    next_visible_in: float | None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic schedule: ``message`` is sent to ``queue`` at each tick of ``cron`` (a
    5-field cron expression, in UTC) or ``every`` seconds (at the multiples of ``every`` since
    the epoch: 30 fires at :00 and :30 of each minute). ``catch_up``: after a time when no
    worker ran, "once" sends one message for all the ticks missed, "skip" none.
    ``next_fire`` is the epoch milliseconds of the next tick (None only for a definition whose
    next time was lost, which the next add sets again)."""

    name: str
    queue: str
    message: str
    cron: str | None
    every: int | None
    catch_up: str
    next_fire: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue": self.queue,
            "message": self.message,
            "cron": self.cron,
            "every": self.every,
            "catch_up": self.catch_up,
            "next_fire": self.next_fire,
        }


@dataclass(frozen=True, slots=True)
class Fired:
    """One tick a worker claimed (see :meth:`~rsmq_core.AsyncRSMQ.fire_schedules`).

    ``outcome``: "sent" (``id`` is the message's), "skipped" (missed while no worker ran, and
    the schedule's catch_up is "skip"), "queueNotFound" (its queue is gone) or
    "messageTooLong" (the queue's maxsize was lowered below the message since it was added)
    or "invalid" (its stored definition is not one this version reads: left as it is).
    ``tick`` is the epoch milliseconds the tick was due.
    """

    name: str
    queue: str
    tick: int
    outcome: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Firing:
    """What :meth:`~rsmq_core.AsyncRSMQ.fire_schedules` did, and ``wait``: the seconds until
    the next schedule is due (None: there is none)."""

    fired: list[Fired]
    wait: float | None


@dataclass(frozen=True, slots=True)
class Expired:
    """What one :meth:`~rsmq_core.AsyncRSMQ.sweep_expired` call dropped: the ids of expired
    messages (those it dropped, and those receives dropped since the last sweep), and the
    cursor the next call of the pass goes on from (0: the pass is done)."""

    ids: list[str]
    cursor: int
