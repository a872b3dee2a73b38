"""AsyncRSMQ: the asyncio client, and the core every other part of the project stands on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from types import TracebackType
from typing import Any, NamedTuple, Self, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from . import _protocol as p
from . import _replication as replication
from . import schedules as sched
from ._batch import Batcher
from ._scripts import NAMES, source
from .connection import AsyncRedis as AsyncRedis  # where realtime/, worker/, web/ import it
from .connection import ConnectionOptions, async_client
from .errors import RSMQError
from .models import Expired, Firing, Message, Peek, QueueAttributes, Received, Schedule

DEFAULT_URL = "redis://localhost:6379/0"
# A dropped connection (Redis restarted, a proxy's idle cut) is retried on a new one: three
# tries over about a second. redis-py's async from_url would otherwise not retry at all.
RETRIES = 3
BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=0.5)

_SendKey = tuple[p.Keys, str | int]  # the queue, and the delay


class _Receive(NamedTuple):
    """A coalesced receive_message (or pop_message) waiting for its batch."""

    vt: str | int
    pop: bool


_RECEIVE, _POP = _Receive("", False), _Receive("", True)  # the common ones, made once
_Op = _Receive | p.Fenced  # a receive, or a delete: they share one batch per queue
_Done = Message | bool | None  # what a receive (a message or None) or a delete answers


def connect(
    url: str = DEFAULT_URL,
    *,
    cluster: bool = False,
    connection: ConnectionOptions | None = None,
    **kwargs: Any,
) -> AsyncRedis:
    """A redis-py asyncio client (a cluster client with ``cluster``) that retries a call
    whose connection dropped; see :func:`~rsmq_core.connection.async_client`."""
    kwargs.setdefault("retry", Retry(BACKOFF, RETRIES))
    return async_client(url, connection, cluster=cluster, **kwargs)


class AsyncRSMQ:
    """An RSMQ client for asyncio.

    Every operation is one round trip (one Lua script that reads the server's clock and the
    queue's attributes itself). Concurrent ``send_message``, ``receive_message``,
    ``pop_message`` and ``delete_message`` calls on one queue are coalesced into batched
    script calls, so fifty coroutines cost a handful of round trips, not fifty; waiting
    deletes ride on the receive call of the same queue.

    Build it around a ``redis.asyncio.Redis`` (or ``RedisCluster``) you own, or with
    :meth:`from_url` (then :meth:`aclose` closes the connection too). On a cluster each
    queue's keys are hash-tagged by its name (see :meth:`keys`).
    """

    def __init__(
        self,
        redis: AsyncRedis,
        *,
        ns: str = "rsmq",
        realtime: bool = False,
        min_replicas: int = 0,
        replica_timeout: float = replication.DEFAULT_TIMEOUT,
        send_events: Callable[[p.Keys], p.SendEvents] | None = None,
        _owns_redis: bool = False,
    ) -> None:
        """``send_events``: each send records an event of every message it stores, then
        wakes the queue's workers, in its own script call (the web app's "queued", which
        must come first in a message's history): the events a queue's sends record."""
        self.redis = redis
        self._send_events = send_events
        self.ns = p.check_ns(ns)
        self.realtime = realtime
        self.cluster = isinstance(redis, aioredis.RedisCluster)
        socket_timeout = (
            None if self.cluster else redis.get_connection_kwargs().get("socket_timeout")
        )
        replication.check(
            min_replicas, replica_timeout, cluster=self.cluster, socket_timeout=socket_timeout
        )
        self.min_replicas, self.replica_timeout = min_replicas, replica_timeout
        self._owns_redis = _owns_redis
        self._keys = partial(p.Keys.of, self.ns, cluster=self.cluster)
        self._scripts = {name: redis.register_script(source(name)) for name in NAMES}
        self._sends: Batcher[_SendKey, bytes, str] = Batcher(self._send_each, p.MAX_BATCH)
        # Receives and deletes of a queue share batches: fifty callers that each receive,
        # then delete, have both kinds waiting at once, and one call carries both. One batch
        # in flight, not two: the client's cost per call, not Redis, is what limits these
        # callers, and a second batch in flight halves what each call carries (26 operations
        # a call instead of 50, and 10-30% more client CPU per message, for less throughput
        # in same-run comparisons; see docs/benchmarks.md).
        self._receive_delete: Batcher[p.Keys, _Op, _Done] = Batcher(
            self._receive_delete_each, p.MAX_BATCH, in_flight=1
        )

    @classmethod
    def from_url(
        cls,
        url: str = DEFAULT_URL,
        *,
        ns: str = "rsmq",
        realtime: bool = False,
        cluster: bool = False,
        connection: ConnectionOptions | None = None,
        min_replicas: int = 0,
        replica_timeout: float = replication.DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> Self:
        """A client on its own connection pool; extra keyword arguments go to redis-py.

        With ``cluster``, ``url`` names any node of a Redis Cluster and the client is
        redis-py's cluster client. ``redis+sentinel://host:port,host:port/service/db`` asks
        those sentinels for the master of ``service``, and again after a failover.
        ``rediss://`` URLs verify the server's certificate unless ``connection`` says
        otherwise (see :class:`~rsmq_core.ConnectionOptions`). A call whose connection drops
        is retried on a new connection; a send retried that way is stored once (its first try
        leaves a marker that lives as long as a retry can come).

        With ``min_replicas``, a send returns only once Redis's ``WAIT`` says that many
        replicas have its messages; when they do not within ``replica_timeout`` seconds it
        raises :class:`~rsmq_core.NotReplicated` (the messages are stored on the master).
        """
        timeout = kwargs.get("socket_timeout")  # checked before a pool is made for nothing
        replication.check(min_replicas, replica_timeout, cluster=cluster, socket_timeout=timeout)
        client = connect(url, cluster=cluster, connection=connection, **kwargs)
        return cls(
            client,
            ns=ns,
            realtime=realtime,
            min_replicas=min_replicas,
            replica_timeout=replica_timeout,
            _owns_redis=True,
        )

    def __repr__(self) -> str:
        return f"<AsyncRSMQ ns={self.ns!r} realtime={self.realtime} cluster={self.cluster}>"

    def keys(self, qname: str) -> p.Keys:
        """The Redis key and channel names of a queue (RSMQ's own on a standalone Redis)."""
        return self._keys(qname)

    async def _call(self, call: p.Call) -> Any:
        return await self._scripts[call.script](keys=call.keys, args=call.args)

    async def _run(self, steps: p.Steps) -> Any:
        # A call that fails is thrown into the steps: one that has changed state already may
        # decide that what fails after it is not the caller's failure.
        call = steps.send(None)
        try:
            while True:
                try:
                    reply = await self._call(call)
                except Exception as exc:
                    call = steps.throw(exc)
                else:
                    call = steps.send(reply)
        except StopIteration as done:
            return done.value

    # Queues ------------------------------------------------------------------------------------

    async def create_queue(
        self,
        qname: str,
        *,
        vt: int = p.DEFAULT_VT,
        delay: int = p.DEFAULT_DELAY,
        maxsize: int = p.DEFAULT_MAXSIZE,
        dedup_window: int | None = None,
        retention: int = 0,
    ) -> None:
        """Create a queue; ``QueueExists`` if it is there already. ``dedup_window``: the
        seconds (1..86400) a dedup id is remembered, 300 when not given. ``retention``: the
        seconds (0..9999999) after its send from which a message is never delivered, but
        dropped and counted in ``totalexpired``; 0, the default, keeps messages forever."""
        steps = p.create_queue_steps(self._keys(qname), vt, delay, maxsize, dedup_window, retention)
        await self._run(steps)

    async def list_queues(self) -> list[str]:
        """Every queue's name, sorted."""
        return p.parse_queues(await self._call(p.list_queues(self.ns)))

    async def delete_queue(self, qname: str) -> None:
        """Delete a queue, every message in it and every key of ours that belongs to it (its
        status events, its dedup ids, its sends' retry markers); ``QueueNotFound`` if there is
        none."""
        await self._run(p.delete_queue_steps(self._keys(qname)))

    async def get_queue_attributes(self, qname: str) -> QueueAttributes:
        """The queue's settings, counters and sizes."""
        return p.parse_attributes(await self._call(p.get_attributes(self._keys(qname))))

    async def set_queue_attributes(
        self,
        qname: str,
        *,
        vt: int | None = None,
        delay: int | None = None,
        maxsize: int | None = None,
        dedup_window: int | None = None,
        retention: int | None = None,
    ) -> QueueAttributes:
        """Change any of vt, delay, maxsize, dedup_window and retention; returns the
        attributes after the change."""
        call = p.set_attributes(self._keys(qname), vt, delay, maxsize, dedup_window, retention)
        return p.parse_attributes(await self._call(call))

    # Messages ----------------------------------------------------------------------------------

    async def send_message(
        self, qname: str, message: str, *, delay: int | None = None, dedup_id: str | None = None
    ) -> str:
        """Put a message on the queue (visible after ``delay`` seconds); returns its id.

        With ``dedup_id``, a send of the same id within the queue's dedup window stores
        nothing and returns the first message's id."""
        keys = self._keys(qname)
        body = p.encode_message(message)
        if dedup_id is None:
            return await self._sends.submit((keys, p.delay_arg(delay)), body)
        dedup = [p.check_dedup_id(dedup_id)]
        call = p.send(
            keys,
            [body],
            p.delay_arg(delay),
            all_or_none=False,
            realtime=self.realtime,
            dedup_ids=dedup,
            events=self._events_of(keys),
        )
        # Not coalesced: a batch has one dedup id per message, and these sends are rare.
        reply, acked = await self._send_call(call)
        ids = p.parse_ids(reply)
        (result,) = ids if acked is None else self._confirm(ids, acked)
        if isinstance(result, RSMQError):
            raise result
        return result

    async def send_messages(
        self,
        qname: str,
        messages: Sequence[str],
        *,
        delay: int | None = None,
        dedup_ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Send up to 1000 messages in one round trip, all or none; returns their ids in order.
        ``dedup_ids``: one per message (None for one without), as ``send_message``'s."""
        reply, acked = await self._send_batch(qname, messages, delay, dedup_ids)
        ids = p.parse_batch_ids(reply)
        return ids if acked is None else self._confirm_all(ids, acked)

    async def _send_deduplicated(
        self,
        qname: str,
        messages: Sequence[str],
        dedup_ids: Sequence[str | None],
        *,
        delay: int | None = None,
    ) -> list[tuple[str, bool]]:
        """As :meth:`send_messages`, saying of each message whether it was a duplicate (for the
        web API, which records and announces only what was stored)."""
        reply, acked = await self._send_batch(qname, messages, delay, dedup_ids)
        sent = p.parse_sent(reply)
        if acked is not None:
            self._confirm_all([mid for mid, _ in sent], acked)
        return sent

    async def receive_message(self, qname: str, *, vt: int | None = None) -> Message | None:
        """Take the next visible message and hide it for ``vt`` seconds; None if none is visible."""
        op = _RECEIVE if vt is None else _Receive(p.vt_arg(vt), False)
        return cast(Message | None, await self._receive_delete.submit(self._keys(qname), op))

    async def receive_messages(
        self, qname: str, count: int, *, vt: int | None = None
    ) -> list[Message]:
        """Receive up to ``count`` (1..1000) visible messages in one round trip."""
        call = p.receive(self._keys(qname), p.check_count(count), p.vt_arg(vt), pop=False)
        return p.parse_messages(await self._call(call))

    async def receive_batch(
        self, qname: str, count: int, *, vt: int | None = None, announce: str | None = None
    ) -> Received:
        """Receive up to ``count`` messages and learn when to look again, in one round trip.

        For workers that wait rather than poll: when fewer than ``count`` were visible, the
        result says how long until the next message becomes visible. With ``announce``, the
        same step PUBLISHes "1" (took ``count``: there may be more) or "0 <ms>" (took fewer;
        <ms> until the next message is visible, -1 for none) on that channel, so peers
        waiting to help know whether to stand down, and when to look again. On a cluster that
        channel must be one of the queue's (``keys(qname).channel + ":..."``): it is
        published on the queue's master, as sharded pub/sub.
        """
        keys = self._keys(qname)
        call = p.receive(keys, p.check_count(count), p.vt_arg(vt), pop=False, announce=announce)
        return p.parse_received(await self._call(call))

    async def pop_message(self, qname: str) -> Message | None:
        """Receive and delete the next visible message at once; None if none is visible."""
        return cast(Message | None, await self._receive_delete.submit(self._keys(qname), _POP))

    async def pop_messages(self, qname: str, count: int) -> list[Message]:
        """Receive and delete up to ``count`` (1..1000) visible messages in one round trip."""
        call = p.receive(self._keys(qname), p.check_count(count), "", pop=True)
        return p.parse_messages(await self._call(call))

    async def delete_message(self, qname: str, id: str, *, rc: int | None = None) -> bool:
        """Delete a message; False if there was no such message.

        With ``rc``, only while the message's receive count is still ``rc``: a worker whose
        visibility timeout ran out cannot delete a message another worker has received since.
        """
        keys = self._keys(qname)
        return cast(bool, await self._receive_delete.submit(keys, p.fenced(id, rc)))

    async def delete_messages(self, qname: str, ids: Sequence[str]) -> int:
        """Delete up to 1000 messages in one round trip; returns how many were deleted."""
        keys = self._keys(qname)
        return p.parse_count(await self._call(p.delete_all(keys, p.check_ids(ids))))

    async def change_message_visibility(
        self, qname: str, id: str, vt: int, *, rc: int | None = None
    ) -> bool:
        """Hide a message for ``vt`` seconds from now; False if there is no such message
        (or, with ``rc``, if it has been received again since)."""
        call = p.change_visibility(self._keys(qname), id, vt, rc)
        return p.parse_flags(await self._call(call))[0]

    async def next_visible_in(self, qname: str) -> float | None:
        """Seconds until the queue's next message is visible by Redis's clock: 0.0 if one is
        visible now, None if the queue is empty."""
        return p.parse_next_visible(await self._call(p.next_visible(self._keys(qname))))

    async def move_message(
        self, qname: str, id: str, to_qname: str, *, rc: int | None = None
    ) -> str | None:
        """Move a message to another queue in one step (dead-lettering): it becomes a new,
        visible message there. Returns its new id, or None if there was no such message
        (or, with ``rc``, if it has been received again since)."""
        src, dst = self._keys(qname), self._keys(to_qname)
        steps = p.move_steps(src, dst, [p.fenced(id, rc)], realtime=self.realtime)
        moved: list[str] = await self._run(steps)
        return moved[0] or None

    async def redrive_messages(self, qname: str, to_qname: str, *, count: int = 1000) -> int:
        """Move the oldest ``count`` (1..1000) messages of ``qname`` (a dead-letter queue) to
        ``to_qname`` in one round trip; returns how many moved (fewer when it ran out)."""
        src, dst = self._keys(qname), self._keys(to_qname)
        return len(await self._run(p.redrive_steps(src, dst, count, realtime=self.realtime)))

    async def sweep_expired(self, qname: str, *, cursor: int = 0, count: int = 1000) -> Expired:
        """Drop the queue's expired messages (see ``retention``) among about ``count`` of them
        (1..1000), starting a pass over the queue at ``cursor`` 0 and going on from the cursor
        each call returns until it is 0 again; also hands over the ids that receives dropped
        since the last sweep (each once), for the caller to announce."""
        return p.parse_expired(await self._call(p.expire(self._keys(qname), cursor, count)))

    async def notify(self, qname: str) -> int:
        """PUBLISH the queue's size on its realtime channel, as a realtime send does; returns
        how many subscribers heard it. For a client not in realtime mode that must record
        something between storing a message and waking the workers."""
        return int(await self._call(p.notify(self._keys(qname))))

    async def purge_queue(self, qname: str) -> int:
        """Remove every message, keeping the queue and its counters; returns how many."""
        return int(p.check_status(await self._call(p.purge(self._keys(qname))))[1])

    async def peek_messages(self, qname: str, *, offset: int = 0, count: int = 50) -> Peek:
        """Look at up to ``count`` (1..1000) messages from ``offset``, in visible-at order,
        visible and hidden alike, without receiving them: no receive count, first-receive
        time, visibility or counter changes. One round trip; page on with ``next_offset``."""
        return p.parse_peek(await self._call(p.peek(self._keys(qname), offset, count)), offset)

    async def make_visible(self, qname: str, id: str) -> bool:
        """Make a hidden or delayed message visible now ("retry now") and wake realtime
        workers; False if there is no such message."""
        return p.parse_flags(await self._call(p.make_visible(self._keys(qname), id)))[0]

    async def move_messages(self, qname: str, ids: Sequence[str], to_qname: str) -> list[str]:
        """Move the messages ``ids`` (up to 1000) to another queue, as :meth:`move_message`
        does; returns each one's new id, "" for one that was not there."""
        src, dst = self._keys(qname), self._keys(to_qname)
        moved: list[str] = await self._run(
            p.move_selected_steps(src, dst, ids, realtime=self.realtime)
        )
        return moved

    async def pause_queue(self, qname: str) -> bool:
        """Mark the queue paused: this project's workers stop receiving from it (at once, or
        at their next heartbeat) until :meth:`resume_queue`. Sends are still accepted, and
        RSMQ clients, which do not know the mark, receive as before. False if it already was."""
        return p.parse_flags(await self._call(p.pause(self._keys(qname), True)))[0]

    async def resume_queue(self, qname: str) -> bool:
        """Undo :meth:`pause_queue`; False if the queue was not paused."""
        return p.parse_flags(await self._call(p.pause(self._keys(qname), False)))[0]

    async def is_paused(self, qname: str) -> bool:
        """Whether the queue is paused (False for a queue that does not exist)."""
        return bool(await self.redis.hexists(self._keys(qname).hash, p.PAUSED_FIELD))

    # Schedules ---------------------------------------------------------------------------------

    async def add_schedule(
        self,
        name: str,
        qname: str,
        message: str,
        *,
        cron: str | None = None,
        every: int | None = None,
        catch_up: str = "once",
    ) -> Schedule:
        """Send ``message`` to ``qname`` periodically: at each tick of ``cron`` (5 fields, in
        UTC) or every ``every`` seconds; workers fire it. Replaces a schedule of the same
        name, keeping its next fire time when the timing is the same. ``catch_up``: ticks
        missed while no worker ran are sent "once" (one message for all) or "skip"ped.
        ``QueueNotFound`` if there is no such queue (standalone Redis only)."""
        steps = sched.add_steps(self.ns, self.cluster, name, qname, message, cron, every, catch_up)
        return cast(Schedule, await self._run(steps))

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name, with its next fire time."""
        return sched.parse_list(await self._call(sched.list_call(self.ns, self.cluster)))

    async def remove_schedule(self, name: str) -> bool:
        """Remove a schedule; False if there was none of that name."""
        call = sched.remove(self.ns, self.cluster, name)
        return bool(int(p.check_status(await self._call(call))[1]))

    async def fire_schedules(self) -> Firing:
        """Send one message for each schedule tick due now (what workers do): each tick is
        claimed, moved on and sent in one script call, so however many processes call this at
        once, a tick is sent once. Returns what was fired and the seconds until the next."""
        return cast(Firing, await self._run(sched.fire_steps(self.ns, self.cluster)))

    # Lifecycle ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait for calls in flight, then close the connection pool if this client made it."""
        await self._sends.wait_idle()
        await self._receive_delete.wait_idle()
        if self._owns_redis:
            await self.redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Batched runners behind the coalesced calls --------------------------------------------------

    async def _send_each(self, key: _SendKey, bodies: list[bytes]) -> list[str | RSMQError]:
        keys, delay = key
        call = p.send(
            keys,
            bodies,
            delay,
            all_or_none=False,
            realtime=self.realtime,
            events=self._events_of(keys),
        )
        reply, acked = await self._send_call(call)  # one WAIT for the whole batch
        ids = p.parse_ids(reply)
        return ids if acked is None else self._confirm(ids, acked)

    async def _send_batch(
        self, qname: str, messages: object, delay: object, dedup_ids: object
    ) -> tuple[Any, int | None]:
        """An all-or-none batch send's reply (see _send_call), the one both batch sends make."""
        keys = self._keys(qname)
        call = p.send_batch(
            keys,
            messages,
            delay,
            realtime=self.realtime,
            dedup_ids=dedup_ids,
            events=self._events_of(keys),
        )
        return await self._send_call(call)

    def _events_of(self, keys: p.Keys) -> p.SendEvents | None:
        return None if self._send_events is None else self._send_events(keys)

    async def _send_call(self, call: p.Call) -> tuple[Any, int | None]:
        """The send script's reply, and with min_replicas how many replicas confirmed it."""
        if not self.min_replicas:
            return await self._call(call), None
        script = self._scripts[call.script]
        commands = replication.commands(script.sha, call, self.min_replicas, self.replica_timeout)
        for _ in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            settled = replication.settle(await pipe.execute(raise_on_error=False))
            if settled is not None:
                return settled
            await self.redis.script_load(script.script)  # a new master: nothing was written
        raise replication.not_loaded(call.script)

    def _confirm(self, ids: list[str | RSMQError], acked: int) -> list[str | RSMQError]:
        return replication.confirm(ids, acked, self.min_replicas, self.replica_timeout)

    def _confirm_all(self, ids: list[str], acked: int) -> list[str]:
        return replication.confirm_all(ids, acked, self.min_replicas, self.replica_timeout)

    async def _receive_delete_each(
        self, keys: p.Keys, items: list[_Op]
    ) -> list[_Done | BaseException]:
        """One call per kind of receive waiting (vt and pop alike), the deletes riding on the
        first, in the same script step before its receive; a call of their own when no
        receive waits. A call that fails fails only the callers it carried."""
        first = items[0]
        if type(first) is _Receive and all(item is first for item in items):
            # The common batch, of plain receives or pops only: no sorting out to do.
            call = p.receive(keys, len(items), first.vt, pop=first.pop)
            got: list[_Done | BaseException] = [*p.parse_messages(await self._call(call))]
            return got + [None] * (len(items) - len(got))
        done: list[_Done | BaseException] = [None] * len(items)
        receives: dict[_Receive, list[int]] = {}
        deletes: list[int] = []
        fenced: list[p.Fenced] = []
        for slot, item in enumerate(items):
            if isinstance(item, _Receive):
                receives.setdefault(item, []).append(slot)
            else:
                deletes.append(slot)
                fenced.append(item)
        calls: list[tuple[p.Call, list[int], list[int]]] = []
        if not receives:
            calls.append((p.delete(keys, fenced), [], deletes))
        for (vt, pop), slots in receives.items():
            calls.append((p.receive(keys, len(slots), vt, pop=pop, deletes=fenced), slots, deletes))
            deletes, fenced = [], []
        for call, slots, carried in calls:
            messages: Sequence[Message] = ()
            try:
                reply = await self._call(call)
                if slots:
                    messages, flags = p.parse_messages(reply), p.parse_deleted(reply)
                else:
                    flags = p.parse_flags(reply)
            except Exception as exc:
                for slot in (*slots, *carried):
                    done[slot] = exc
                continue
            for slot, message in zip(slots, messages, strict=False):  # the rest: none visible
                done[slot] = message
            for slot, flag in zip(carried, flags, strict=True):
                done[slot] = flag
        return done
