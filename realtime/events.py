"""Status events: every step of a message's life, for anyone watching.

Each event goes, in one script call, to three places (keys beside the queue's own, which
RSMQ never uses and no queue name can reach, as queue names have no ``:``; on a cluster the
queue name is hash-tagged, as in :class:`rsmq_core.Keys`, so all share the queue's slot):

- ``{ns}:{qname}:events``: a capped stream, the durable log a reconnecting reader replays;
- ``{ns}:{qname}:status:{id}``: the message's last status, readable for ``ttl`` seconds
  after the message itself is gone;
- ``{ns}:rt:{qname}:events``: a channel, so live readers hear of it at once.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import json
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from functools import partial
from importlib import resources
from typing import Any, Literal, cast, get_args

import redis.asyncio as aioredis

from rsmq_core import RSMQ, Keys, SendEvents
from rsmq_core._batch import Batcher
from rsmq_core.client import AsyncRedis

log = logging.getLogger(__name__)

# A message's own steps, in the order they come.
JobStatus = Literal[
    "queued",
    "received",
    "processing",
    "done",
    "failed",
    "retrying",
    "dead",
    # Past its queue's retention: dropped undelivered (announced by a worker's sweep).
    "expired",
]
# An operator's actions (the API, the dashboard, the CLI): ``by`` says where from. Those on a
# whole queue (paused, resumed, purged, changed) have the id "".
Action = Literal["deleted", "made visible", "redriven", "paused", "resumed", "purged", "changed"]
Status = Literal[JobStatus, Action]
STATUSES: tuple[Status, ...] = get_args(JobStatus)
ACTIONS: tuple[Status, ...] = get_args(Action)


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One step of a message's life. ``ts`` (epoch ms) is Redis's clock when it was recorded."""

    status: Status
    queue: str
    id: str
    rc: int = 0
    worker: str | None = None
    progress: float | None = None
    error: str | None = None
    retry_in: float | None = None
    dead_letter_id: str | None = None
    by: str | None = None  # an action's origin: "api 10.0.0.7", "dashboard 10.0.0.7", "cli"
    detail: str | None = None  # an action's particulars ("vt=60", "to q", "3 messages")
    # "done": what the handler returned, as JSON data (None: it returned None, or nothing)
    result: Any = None
    ts: int | None = None

    def to_json(self) -> str:
        # Shallow, not asdict: asdict copies a result level by level, and ran out of stack on
        # one that json.dumps (and so the worker's RESULT_MAX_BYTES check) takes.
        return json.dumps(
            {f.name: v for f in dataclass_fields(self) if (v := getattr(self, f.name)) is not None}
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> StatusEvent:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# Named by rsmq_core's Keys, whose delete_queue deletes them with the queue.
def stream_key(keys: Keys) -> str:
    return keys.events


def status_key(keys: Keys, id: str) -> str:
    return keys.status(id)


def events_channel(keys: Keys) -> str:
    return f"{keys.channel}:events"


def parse_published(data: bytes) -> tuple[str, StatusEvent]:
    """A published event: its stream id and the event."""
    eid, _, body = data.partition(b" ")
    return eid.decode(), StatusEvent.from_json(body)


_SCRIPT = resources.files(__package__).joinpath("scripts", "emit.lua").read_text("utf-8")


MAXLEN = 10_000  # events a queue's stream keeps (about: trimmed with ~)
TTL = 86_400  # seconds a message's last status stays readable


def _write_args(queue: Keys, events: Sequence[StatusEvent], maxlen: int, ttl: int) -> Any:
    keys = [stream_key(queue)] + [status_key(queue, e.id) for e in events]
    args: list[Any] = [queue.notify(events_channel(queue)), maxlen, ttl]
    # Marked "S" to be kept as the message's last status: the script then never decodes an
    # event, so a result's JSON goes through byte for byte (Lua's cjson would round floats to
    # 14 digits and turn [] into {}), and no result can make the script fail its batch.
    return keys, args + [("-" if e.id == "" else "S") + _without_ts(e).to_json() for e in events]


def queued_on_send(*, maxlen: int = MAXLEN, ttl: int = TTL) -> Callable[[Keys], SendEvents]:
    """For ``AsyncRSMQ(send_events=...)``: its sends record "queued" for each message they
    store, then wake the workers, in the send's own script call (the web app's sends: one
    round trip where there were three)."""

    # Built once per queue, not at every send (Keys are one object per queue; bounded, as a
    # client may name any number of queues).
    @functools.lru_cache(maxsize=1024)
    def queued(keys: Keys) -> SendEvents:
        # The event as to_json writes it, cut around its id and before its closing brace.
        head, _, tail = StatusEvent("queued", keys.qname, "\x00").to_json().partition('"\\u0000"')
        return SendEvents(
            head + '"', '"' + tail[:-1], keys.notify(events_channel(keys)), maxlen, ttl
        )

    return queued


def _without_ts(event: StatusEvent) -> StatusEvent:
    return event if event.ts is None else replace(event, ts=None)


def record_cli_action(client: RSMQ, what: str, qname: str, id: str, detail: str | None) -> None:
    """The ``rsmq`` CLI's recorder (entry point group "rsmq_core.actions"): its actions leave
    an event as the API's do, ``by`` "cli <user>@<host>"."""
    by = f"cli {getpass.getuser()}@{socket.gethostname()}"
    event = StatusEvent(cast(Status, what), qname, id, by=by, detail=detail)
    keys, args = _write_args(client.keys(qname), [event], MAXLEN, TTL)
    client.redis.register_script(_SCRIPT)(keys=keys, args=args)


class EventLog:
    """Writes status events, coalescing concurrent ones into one round trip per queue."""

    def __init__(self, redis: AsyncRedis, ns: str, *, maxlen: int = MAXLEN, ttl: int = TTL) -> None:
        self._redis = redis
        self._ns = ns
        self._keys = partial(Keys.of, ns, cluster=isinstance(redis, aioredis.RedisCluster))
        self._maxlen = maxlen
        self._ttl = ttl
        self._script = redis.register_script(_SCRIPT)
        # One batch at a time per queue: events must reach the stream in the order they happened.
        self._batcher: Batcher[str, StatusEvent, str] = Batcher(self._write, 500, in_flight=1)
        self._background: set[asyncio.Future[str]] = set()
        self.failures = 0

    @property
    def ns(self) -> str:
        return self._ns

    def channel(self, qname: str) -> str:
        """The channel a queue's events are published on."""
        return events_channel(self._keys(qname))

    async def record(self, event: StatusEvent) -> str:
        """Record an event and return its stream id."""
        return await self._batcher.submit(event.queue, event)

    def emit(self, event: StatusEvent) -> None:
        """Record an event without waiting: the work it describes never waits on the log.
        A future, not a task, per event: a task each was a seventh of a worker's CPU."""
        future = self._batcher.enqueue(event.queue, event)
        self._background.add(future)
        future.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[str]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.failures += 1
            log.warning("could not record a status event: %s", exc)

    async def flush(self) -> None:
        """Wait until every emitted event is written (or has failed)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
            await asyncio.sleep(0)  # for the done callbacks: see Batcher.wait_idle

    async def _write(self, qname: str, events: list[StatusEvent]) -> Sequence[str]:
        keys, args = _write_args(self._keys(qname), events, self._maxlen, self._ttl)
        reply = await self._script(keys=keys, args=args)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in reply]

    async def last_status(self, qname: str, id: str) -> StatusEvent | None:
        """The message's last recorded status, while it is kept (``ttl``)."""
        data = await self._redis.get(status_key(self._keys(qname), id))
        return None if data is None else StatusEvent.from_json(data)

    async def snapshot(
        self, qname: str, ids: Sequence[str] = ()
    ) -> tuple[str, dict[str, StatusEvent]]:
        """What a new follower of the queue starts from, in one round trip: the stream id of
        the newest event ("0-0" when there is none), and the last status of each of ``ids``
        still kept. One MGET, however many ids: a GET each would hold a connection per id."""
        queue = self._keys(qname)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xrevrange(stream_key(queue), count=1)
        if ids:
            # As bytes: redis-py passes bytes through, and encoding a thousand strings one by
            # one would cost more than Redis's whole answer.
            prefix = status_key(queue, "").encode()
            pipe.mget([prefix + i.encode() for i in ids])
        rows, *found = await pipe.execute()
        statuses = {
            i: StatusEvent.from_json(data)
            for i, data in zip(ids, found[0] if found else (), strict=False)
            if data is not None
        }
        return (_text(rows[0][0]) if rows else "0-0"), statuses

    async def last_id(self, qname: str) -> str:
        """The stream id of the queue's newest event ("0-0" when there is none)."""
        rows: Any = await self._redis.xrevrange(stream_key(self._keys(qname)), count=1)
        return _text(rows[0][0]) if rows else "0-0"

    async def timeline(
        self, qname: str, id: str, *, chunk: int = 1000
    ) -> list[tuple[str, StatusEvent]]:
        """Every event of one message the queue's stream still holds, oldest first: a
        timeline reaches back as far as the stream's cap (``maxlen`` events of the whole
        queue) keeps. Read in chunks, so one call never holds Redis for long."""
        stream, start = stream_key(self._keys(qname)), "-"
        out: list[tuple[str, StatusEvent]] = []
        while start:
            rows: Any = await self._redis.xrange(stream, start, "+", count=chunk)
            start = _of_id(rows, id, chunk, out)
        return out

    async def history(
        self, qname: str, *, after: str = "-", count: int = 1000
    ) -> list[tuple[str, StatusEvent]]:
        """Events of a queue after stream id ``after`` (exclusive), oldest first."""
        start = after if after == "-" else f"({after}"
        stream = stream_key(self._keys(qname))
        rows: Any = await self._redis.xrange(stream, start, "+", count=count)
        return [(_text(eid), StatusEvent.from_json(fields[b"e"])) for eid, fields in rows]


def _of_id(rows: Any, id: str, chunk: int, out: list[tuple[str, StatusEvent]]) -> str:
    """Add the events of ``id`` among one XRANGE chunk to ``out``; where the next chunk starts
    ("" when this one was the last)."""
    needle = id.encode()
    for eid, fields in rows:
        # Parsed only when the id is in it: a thousand JSON decodes per chunk would cost more
        # than Redis's whole answer ("" matches every event: then all are parsed).
        if needle in fields[b"e"]:
            event = StatusEvent.from_json(fields[b"e"])
            if event.id == id:
                out.append((_text(eid), event))
    return "" if len(rows) < chunk else f"({_text(rows[-1][0])}"


def read_cli_timeline(client: RSMQ, qname: str, id: str) -> list[dict[str, Any]]:
    """The ``rsmq timeline`` reader (entry point group "rsmq_core.timelines"): as
    :meth:`EventLog.timeline`, each event with its stream id ``eid``."""
    stream, start = stream_key(client.keys(qname)), "-"
    out: list[tuple[str, StatusEvent]] = []
    while start:
        start = _of_id(client.redis.xrange(stream, start, "+", count=1000), id, 1000, out)
    return events_json(out)


def events_json(rows: list[tuple[str, StatusEvent]]) -> list[dict[str, Any]]:
    """Timeline rows as JSON objects, each event with its stream id ``eid``."""
    return [{"eid": eid, **json.loads(event.to_json())} for eid, event in rows]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
