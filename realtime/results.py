"""A message's status and its handler's result, for whoever sent it.

:class:`AsyncResults` (and :class:`Results`, the same blocking) wrap the queue client you
already have::

    async with AsyncResults(q) as results:
        done = await results.wait_for_result("jobs", id, timeout=30)
        print(done.result)

``get_status(qname, id)`` is the message's last :class:`~realtime.StatusEvent` (None when
none is known: never sent, or gone longer than the worker's EVENT_TTL); a "done" one carries
the handler's return value in ``.result``.

``wait_for_result(qname, id, *, timeout)`` waits on the queue's events channel, never by
polling, and returns the "done" event. A message that ends otherwise ("dead": dead-lettered,
"deleted" by an operator, or "expired": past its queue's retention) raises
:class:`JobFailed`; none of those within ``timeout`` seconds raises :class:`ResultTimeout`
(a TimeoutError) with the last status known. It subscribes first and reads the status after,
and reads it again whenever the subscription was (re)made or may have dropped events: a
result that lands at any moment is never missed.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from types import TracebackType
from typing import Any, Self

from redis.cluster import RedisCluster

from rsmq_core import RSMQ, AsyncRSMQ, InvalidValue, QueueNotFound
from rsmq_core import _protocol as p

from .events import Status, StatusEvent, events_channel, parse_published, status_key
from .subscriber import Subscriber

# After these nothing more happens to a message's id: its handler's result is known, or it
# will never be (its dead-letter copy has a new id; an expired one was dropped, past its
# queue's retention).
FINAL: tuple[Status, ...] = ("done", "dead", "deleted", "expired")


class JobFailed(Exception):
    """The message ended without a result: dead-lettered, deleted by an operator, or dropped
    past its queue's retention ("expired"). ``event`` is its last status (``error`` says why
    it died, ``by`` who deleted it)."""

    def __init__(self, event: StatusEvent) -> None:
        why = (
            event.error
            or event.by
            or ("past its queue's retention" if event.status == "expired" else "no reason recorded")
        )
        super().__init__(f"{event.queue}/{event.id} is {event.status}, with no result: {why}")
        self.event = event


class ResultTimeout(TimeoutError):
    """No result within the timeout; ``last`` is the last status known (None: none)."""

    def __init__(self, qname: str, id: str, timeout: float, last: StatusEvent | None) -> None:
        status = "none known" if last is None else last.status
        super().__init__(f"no result for {qname}/{id} within {timeout:g} s (last status: {status})")
        self.last = last


def check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidValue("timeout must be a number of seconds above 0", detail=f"got {timeout!r}")
    if not 0 < timeout < math.inf:  # NaN fails this too
        raise InvalidValue("timeout must be a number of seconds above 0", detail=f"got {timeout}")
    return float(timeout)


def _status(queue_exists: Any, data: bytes | None) -> StatusEvent | None:
    if data is not None:
        return StatusEvent.from_json(data)
    if not queue_exists:
        raise QueueNotFound()
    return None


def _outcome(event: StatusEvent) -> StatusEvent:
    if event.status != "done":
        raise JobFailed(event)
    return event


def _heard(data: bytes, id: str) -> StatusEvent | None:
    """The event a publish on the events channel carries, if it is ``id``'s."""
    if id.encode() not in data:  # most of a busy queue's events are others'
        return None
    _, event = parse_published(data)
    return event if event.id == id else None


class AsyncResults:
    """Statuses and results of the messages of ``rsmq``'s queues. Waiting takes one pub/sub
    connection of its own (or the ``subscriber`` given), closed by :meth:`aclose`."""

    def __init__(self, rsmq: AsyncRSMQ, *, subscriber: Subscriber | None = None) -> None:
        self._rsmq = rsmq
        self._subscriber = subscriber
        self._owns_subscriber = subscriber is None

    async def get_status(self, qname: str, id: str) -> StatusEvent | None:
        """The message's last status (None when none is kept); QueueNotFound when the queue
        does not exist. One round trip."""
        keys = self._rsmq.keys(p.check_qname(qname))
        pipe = self._rsmq.redis.pipeline(transaction=False)
        pipe.exists(keys.hash)
        pipe.get(status_key(keys, p.check_id(id)))
        exists, data = await pipe.execute()
        return _status(exists, data)

    async def wait_for_result(self, qname: str, id: str, *, timeout: float) -> StatusEvent:
        """The message's "done" event, as soon as it is recorded (at once if it is already);
        JobFailed if it ends otherwise, ResultTimeout after ``timeout`` seconds."""
        keys = self._rsmq.keys(p.check_qname(qname))
        p.check_id(id)
        seconds = check_timeout(timeout)
        if self._subscriber is None:
            self._subscriber = Subscriber(self._rsmq.redis)
            self._subscriber.start()
        listener = self._subscriber.listen(events_channel(keys), maxsize=100)
        last: StatusEvent | None = None
        try:
            async with asyncio.timeout(seconds):
                # After listen(): whatever is recorded from here on is either in this read or
                # heard (a RESYNC, once Redis confirms the subscription, reads again).
                last = await self.get_status(qname, id)
                while last is None or last.status not in FINAL:
                    item = await listener.get()
                    if item is None:
                        last = await self.get_status(qname, id) or last
                    elif (event := _heard(item[1], id)) is not None:
                        last = event
        except TimeoutError:
            raise ResultTimeout(qname, id, seconds, last) from None
        finally:
            self._subscriber.unlisten(listener)
        assert last is not None  # the loop ends on a final status
        return _outcome(last)

    async def aclose(self) -> None:
        if self._owns_subscriber and self._subscriber is not None:
            await self._subscriber.aclose()
            self._subscriber = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Results:
    """:class:`AsyncResults`, blocking, on an :class:`~rsmq_core.RSMQ` client. Each wait
    takes a pub/sub connection for its own duration."""

    def __init__(self, rsmq: RSMQ) -> None:
        self._rsmq = rsmq

    def get_status(self, qname: str, id: str) -> StatusEvent | None:
        keys = self._rsmq.keys(p.check_qname(qname))
        pipe = self._rsmq.redis.pipeline(transaction=False)
        pipe.exists(keys.hash)
        pipe.get(status_key(keys, p.check_id(id)))
        exists, data = pipe.execute()
        return _status(exists, data)

    def wait_for_result(self, qname: str, id: str, *, timeout: float) -> StatusEvent:
        keys = self._rsmq.keys(p.check_qname(qname))
        p.check_id(id)
        seconds = check_timeout(timeout)
        deadline = time.monotonic() + seconds
        channel = events_channel(keys)
        # A cluster SPUBLISHes a queue's events on the master of its slot (see emit.lua).
        sharded = isinstance(self._rsmq.redis, RedisCluster)
        pubsub: Any = self._rsmq.redis.pubsub()
        try:
            if sharded:
                pubsub.ssubscribe(channel)
            else:
                pubsub.subscribe(channel)
            read = pubsub.get_sharded_message if sharded else pubsub.get_message
            last = self.get_status(qname, id)
            while last is None or last.status not in FINAL:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeout(qname, id, seconds, last)
                # At most a minute a read: the socket's wait overflows past 24.8 days.
                message = read(ignore_subscribe_messages=False, timeout=min(left, 60.0))
                if message is None:
                    continue
                kind = message["type"]
                kind = kind.decode() if isinstance(kind, bytes) else kind
                if kind in ("subscribe", "ssubscribe"):
                    # Confirmed (again, after redis-py reconnected): what was published
                    # before is not heard, so read the status now.
                    last = self.get_status(qname, id) or last
                elif kind in ("message", "smessage"):
                    data = message["data"]
                    event = _heard(data.encode() if isinstance(data, str) else data, id)
                    last = event or last
        finally:
            pubsub.close()
        assert last is not None  # the loop ends on a final status
        return _outcome(last)


def read_cli_status(client: RSMQ, qname: str, id: str, wait: float | None) -> dict[str, Any] | None:
    """The ``rsmq status`` reader (entry point group "rsmq_core.statuses"): the last status, or
    with ``wait`` the final one (a dead or deleted one too: its status says so)."""
    results = Results(client)
    if wait is None:
        event = results.get_status(qname, id)
    else:
        try:
            event = results.wait_for_result(qname, id, timeout=wait)
        except JobFailed as failed:
            event = failed.event
    return None if event is None else json.loads(event.to_json())
