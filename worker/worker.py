"""The worker: receive → handler → delete, for one or more queues, realtime or polling.

Realtime mode never polls. Each queue has one consumer loop per process: it receives as many
messages as the process has free slots; when the queue has nothing visible it asks Redis how
long until the earliest message is due (a delayed one, or one whose visibility timeout will
run out because its worker died) and sleeps exactly that long — or until a notification on
RSMQ's channel wakes it, whichever comes first. Notifications coalesce: any number of them
while the loop is busy cause one receive. Polling mode receives every POLL_INTERVAL instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from redis import RedisError, ResponseError

from realtime import EventLog, StatusEvent, Subscriber, Wakeup, preflight
from realtime.backoff import backoff
from realtime.events import Status
from realtime.metrics import Rate, Recorder, count_commands, job_families, own_fields
from realtime.registry import (
    WorkerInfo,
    heartbeat,
    index_key,
    info_keys,
    live_workers,
    parse_infos,
    register,
    unregister,
)
from realtime.subscriber import CONNECTION_LOST
from rsmq_core import AsyncRSMQ, Keys, Message, QueueExists, QueueNotFound, RSMQError
from rsmq_core._protocol import PAUSED_FIELD, RETENTION_FIELD
from rsmq_core.client import AsyncRedis, connect
from rsmq_core.connection import HOW_TO_GET_REDIS, explain, is_misconfigured, mask_url, scrub
from rsmq_core.schedules import channel as schedule_channel

from . import scheduler
from .job import Job, Retry
from .settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[Any] | Any]
# A handler module's startup(ctx) and shutdown(ctx), sync or async.
Hook = Callable[[dict[str, Any]], Awaitable[Any] | Any]
REDIS_DOWN = CONNECTION_LOST
MISSING_QUEUE_RETRY = 5  # seconds
# The sweep of expired messages runs every SWEEP_EVERY heartbeats (30 s at the default 5 s: it
# is a backstop, receives drop what they meet, and an idle worker's cost stays near its
# heartbeat's), the first with the first heartbeat; per queue, this many calls of up to 1000
# messages at most, going on where the last sweep stopped, so a huge queue is swept over several
# and never holds Redis (or the heartbeat) for long.
SWEEP_EVERY = 6
SWEEP_CALLS = 10


class StartupFailed(Exception):
    """The handler module's ``startup`` raised: the worker does not start."""


def _to_sweep(retention: Any, waiting: Any) -> bool:
    """Whether a queue has expired messages to drop or announce, by its retention and the
    count of its expired ids; an error reply (keys of someone else's) is never swept."""
    if isinstance(retention, Exception) or isinstance(waiting, Exception):
        return False
    return retention not in (None, b"0", "0") or bool(waiting)


class _TimedOut(Exception):
    """A handler still running at JOB_TIMEOUT."""


class _BadResult(Exception):
    """A handler's return value that cannot be kept: not JSON data, or over RESULT_MAX_BYTES."""


def _hook_name(hook: Hook) -> str:
    module = getattr(hook, "__module__", None) or "?"
    return f"{module}.{getattr(hook, '__qualname__', repr(hook))}"


async def _call_hook(hook: Hook, ctx: dict[str, Any]) -> None:
    if inspect.iscoroutinefunction(hook):
        await hook(ctx)
        return
    # In a thread: a sync startup may block for seconds (connecting a pool), and asyncio.run
    # inside one would be refused on the loop's own thread.
    result = await asyncio.to_thread(hook, ctx)
    if inspect.isawaitable(result):
        await result


class _QueueState:
    """What one queue's consumer loop knows between receives."""

    def __init__(self) -> None:
        self.wake = Wakeup()
        self.wake.set()  # look once at start
        self.maybe_more = False
        self.due_at: float | None = None  # loop time the next message becomes visible
        self.stagger: asyncio.TimerHandle | None = None
        self.due_timer: asyncio.TimerHandle | None = None
        self.paused = False  # pause_queue's mark, as last heard or read

    def set_paused(self, paused: bool) -> None:
        if self.paused and not paused:
            self.maybe_more = True  # resumed: receive at once
            self.wake.set()
        self.paused = paused

    def set_due(self, wait: float | None, *, keep_earlier: bool = False) -> None:
        due = None if wait is None else asyncio.get_running_loop().time() + wait
        if keep_earlier and self.due_at is not None:
            due = self.due_at if due is None else min(due, self.due_at)
        self.due_at = due

    def wake_when_due(self) -> None:
        """Wake the consumer at ``due_at``: asleep, it still waits for the due time it knew
        when it fell asleep (none, or a later one)."""
        self.cancel_due_timer()
        if self.due_at is not None:
            self.due_timer = asyncio.get_running_loop().call_at(self.due_at, self.wake.set)

    def cancel_due_timer(self) -> None:
        if self.due_timer is not None:
            self.due_timer.cancel()
            self.due_timer = None

    def fire_stagger(self) -> None:
        self.stagger = None
        self.wake.set()

    def cancel_stagger(self) -> None:
        if self.stagger is not None:
            self.stagger.cancel()
            self.stagger = None


class _OwnMetrics(Collector):
    """METRICS_PORT: this worker's own job counters and histograms since it started (the
    web process's /metrics has every worker's, through Redis)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self.worker
        # Copied whole (one C call, under the GIL) while the loop's thread may add to them.
        yield from job_families(
            own_fields(w.metrics), list(w.settings.queues), lambda _queue: [w.mode]
        )


class Worker:
    """Runs ``handler`` on the messages of ``settings.queues`` until :meth:`stop`.

    ``startup(ctx)`` runs once before the first receive and ``shutdown(ctx)`` once after the
    last handler, both given :attr:`context`, the dict every job also holds (``job.context``).
    """

    def __init__(
        self,
        settings: Settings,
        handler: Handler,
        *,
        redis: AsyncRedis | None = None,
        startup: Hook | None = None,
        shutdown: Hook | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.startup = startup
        self.shutdown = shutdown
        self.context: dict[str, Any] = {}
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.mode = "realtime" if settings.realtime else "polling"
        self._redis = redis or connect(
            settings.redis_url, cluster=settings.redis_cluster, connection=settings.connection
        )
        self._owns_redis = redis is None
        # Only a client of its own: a shared one's count would include others' commands.
        self._commands = count_commands(self._redis) if self._owns_redis else None
        self.metrics = Recorder(self.mode)
        self.rsmq = AsyncRSMQ(self._redis, ns=settings.ns)
        self.events = EventLog(self._redis, settings.ns, ttl=settings.event_ttl)
        self._subscriber = Subscriber(self._redis) if settings.realtime else None
        self._wakeups: list[Wakeup] = []
        self._peers: dict[str, tuple[str, ...]] = {}
        self._peer_ids: list[bytes] = []  # the live workers' ids the last heartbeat read
        self._sweep_known: list[Keys] = []  # the namespace's queues the last sweep found
        self._states: dict[str, _QueueState] = {}
        self._stopping = asyncio.Event()
        self._permitted = False  # the ACL user's permissions were checked (see _prepare)
        self._fatal: Exception | None = None
        self._slot_freed = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], tuple[str, Message]] = {}
        self._reserved = 0  # slots asked for by receives still out
        self._sweep_cursors: dict[str, int] = {}  # where each queue's sweep goes on from
        # Not a pool: a thread given up on at JOB_TIMEOUT runs on, and in a pool it would hold
        # a place that a later job then waited for (its own deadline ticking meanwhile).
        self._thread_ids = itertools.count(1)
        self.counters = dict.fromkeys(
            (
                "receives",
                "empty_receives",
                "received",
                "done",
                "failed",
                "retried",
                "dead",
                "lost_leases",
                "released",
                "timed_out",
            ),
            0,
        )

    def __repr__(self) -> str:
        c = self.counters
        return (
            f"<Worker {self.mode} done={c['done']} failed={c['failed']} dead={c['dead']}"
            f" receives={c['receives']} empty={c['empty_receives']} inflight={len(self._inflight)}>"
        )

    # Running -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop receiving; run() then lets in-flight handlers finish within the grace period."""
        self._stopping.set()
        for wake in self._wakeups:
            wake.set()
        self._slot_freed.set()

    async def run(self) -> None:
        info = WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            mode=self.mode,
            queues=list(self.settings.queues),
            concurrency=self.settings.concurrency,
            started=int(time.time() * 1000),
            counters=self.counters,
        )
        log.info(
            "worker %s starting: %s mode, queues %s, concurrency %d",
            self.id,
            self.mode,
            ",".join(self.settings.queues),
            self.settings.concurrency,
        )
        try:
            await self._prepare()
            await self._start_up()
        except (RedisError, preflight.CannotUse, StartupFailed):  # no retry cures it
            if self._owns_redis:
                await self._redis.aclose()
            raise
        wake = None
        if self._subscriber is not None and not self.rsmq.cluster:  # followed from the start
            wake = self._subscriber.wakeup(schedule_channel(self.settings.ns))
            self._wakeups.append(wake)
        if self._subscriber is not None:
            self._subscriber.start()
        server = None
        if self.settings.metrics_port is not None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_OwnMetrics(self))
            server, _ = start_http_server(self.settings.metrics_port, registry=registry)
        beat = asyncio.create_task(self._heartbeat(info))
        consumers = [asyncio.create_task(self._consume(q)) for q in self.settings.queues]
        if not self.rsmq.cluster:  # schedules need a standalone Redis (rsmq_core.schedules)
            consumers.append(
                asyncio.create_task(
                    scheduler.run(
                        self.rsmq,
                        self.settings.schedules,
                        self._stopping,
                        wake,
                        self.settings.poll_interval,
                    )
                )
            )
        try:
            await self._stopping.wait()
            await asyncio.gather(*consumers, return_exceptions=True)
            await self._drain()
        finally:
            for task in consumers:
                task.cancel()
            beat.cancel()
            # Ended before unregistering: a heartbeat still in flight would register again.
            # Bounded all the same: nothing may keep a stopping worker past its grace.
            await asyncio.wait({beat}, timeout=5.0)
            await self._shut_down()
            await self.events.flush()
            with contextlib.suppress(*REDIS_DOWN):
                await self._flush_metrics()
            with contextlib.suppress(*REDIS_DOWN):
                await unregister(self._redis, self.settings.ns, self.id)
            if self._subscriber is not None:
                await self._subscriber.aclose()
            if server is not None:
                server.shutdown()
            if self._owns_redis:
                await self._redis.aclose()
            log.info("worker %s stopped: %r", self.id, self)
        if self._fatal is not None:
            raise self._fatal

    async def _start_up(self) -> None:
        if self.startup is None:
            return
        try:
            await _call_hook(self.startup, self.context)
        except Exception as exc:
            raise StartupFailed(
                f"{_hook_name(self.startup)} raised {type(exc).__name__}: {exc}"
            ) from exc

    async def _shut_down(self) -> None:
        """After the last handler finished or was given up on (a sync handler's thread may
        still run: it cannot be stopped). A failure is logged; the worker stops all the same."""
        if self.shutdown is None:
            return
        try:
            await _call_hook(self.shutdown, self.context)
        except Exception as exc:
            log.error("%s raised %s: %s", _hook_name(self.shutdown), type(exc).__name__, exc)
            log.debug("the shutdown's traceback", exc_info=exc)

    async def _prepare(self) -> None:
        """Check the connection and the ACL user's permissions (see realtime.preflight), and
        create missing queues. A setting no retry can cure (a certificate that fails
        verification, a refused password, an ACL user without the permissions the worker
        needs) raises; an unreachable Redis is waited for as ever."""
        try:
            await self._redis.ping()
            await self._check_permissions()
        except REDIS_DOWN as exc:
            if is_misconfigured(exc):
                raise
            url = self.settings.redis_url
            log.warning(
                "Redis at %s is not reachable yet (%s); retrying. No Redis? %s",
                mask_url(url),
                scrub(explain(exc), url),
                HOW_TO_GET_REDIS,
            )
        await self._create_missing_queues()

    async def _check_permissions(self) -> None:
        """Raise MissingPermissions if the ACL user may not run all the worker needs (or
        UnsupportedServer, see realtime.preflight); once."""
        ns, realtime = self.settings.ns, self._subscriber is not None
        needs = preflight.worker_needs(
            self._redis, ns, self.settings.queues, self.id, realtime=realtime
        )
        await preflight.check(self._redis, needs, process="worker", ns=ns)
        self._permitted = True

    async def _flush_metrics(self, info: WorkerInfo | None = None) -> None:
        """Add what was counted since the last heartbeat to Redis's totals: with ``info`` in
        the heartbeat's transaction, else (at stop) on its own. Given back if it failed."""
        taken = self.metrics.take()
        try:
            if info is None:
                index = index_key(self._redis, self.settings.ns)
                async with self._redis.pipeline(transaction=True) as pipe:
                    self.metrics.write(pipe, index, taken)
                    await pipe.execute()
            else:
                await heartbeat(
                    self._redis,
                    self.settings.ns,
                    info,
                    ttl=3 * self.settings.heartbeat,
                    also=lambda pipe, index: self.metrics.write(pipe, index, taken),
                )
        except BaseException:
            self.metrics.give_back(taken)
            raise

    async def _heartbeat(self, info: WorkerInfo) -> None:
        failures = 0
        beats = itertools.count()
        rate = Rate(self._commands) if self._commands is not None else None
        # Ends on stop by itself, not only by cancellation: a cancel that lands inside a Redis
        # call can come out of redis-py as a connection or timeout error, which this loop
        # survives by design, and a worker then waited for its heartbeat forever on SIGTERM.
        while not self._stopping.is_set():
            try:
                if not self._permitted:  # Redis was out of reach at start: check now
                    await self._check_permissions()
                if rate is not None:
                    info.commands_per_second = rate()
                sweep = next(beats) % SWEEP_EVERY == 0
                if isinstance(self._redis, aioredis.RedisCluster):
                    # Keys in many slots: no one transaction can hold them all.
                    await self._flush_metrics(info)
                    await self._refresh_paused()
                    if self._subscriber is not None:
                        await self._refresh_peers()
                        await self._look_for_unannounced()
                    if sweep:
                        await self._sweep_expired()
                else:
                    await self._beat(info, sweep=sweep)
                if failures:
                    log.info("heartbeat: Redis is back after %d failed heartbeat(s)", failures)
                failures = 0
            except REDIS_DOWN as exc:
                failures += 1
                # One warning per outage; its further attempts are details.
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "heartbeat failed (attempt %d): %s",
                    failures,
                    exc,
                )
            except preflight.CannotUse as exc:
                self._fatal = exc  # run() raises it once stopped
                self.stop()
                return
            except Exception:
                # Logged and tried again: a heartbeat that died quietly would leave the worker
                # running unregistered and blind to unannounced messages.
                log.exception("heartbeat failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat):
                    await self._stopping.wait()

    async def _create_missing_queues(self) -> None:
        """A worker's queues exist from its start (with VT as their visibility timeout), so a
        typo in QUEUES shows up as a new queue in the logs, not as a worker waiting forever."""
        for qname in self.settings.queues:
            try:
                await self.rsmq.create_queue(qname, vt=self.settings.vt)
                log.info("created queue %s (vt %ds)", qname, self.settings.vt)
            except QueueExists:
                pass
            except REDIS_DOWN as exc:
                log.warning("could not check queue %s yet: %s", qname, exc)

    async def _recreate(self, qname: str) -> bool:
        """Create a queue of this worker's that a receive found gone (Redis restarted without
        persistence, a FLUSHALL, a delete): as at start, or the queue would stay missing and
        every send to it would be refused. Whether it exists again."""
        try:
            await self.rsmq.create_queue(qname, vt=self.settings.vt)
        except QueueExists:
            return True  # another worker (or the web app) was quicker
        except RedisError as exc:
            log.warning(
                "queue %s is gone and could not be created again (%s); trying again in %ds",
                qname,
                explain(exc),
                MISSING_QUEUE_RETRY,
            )
            return False
        log.warning(
            "queue %s was gone (Redis lost its data, or it was deleted); created it again (vt %ds)",
            qname,
            self.settings.vt,
        )
        return True

    async def _beat(self, info: WorkerInfo, *, sweep: bool = False) -> None:
        """A heartbeat in one round trip, one transaction: register, add the metrics, and read
        what the worker checks at each beat (its queues' pause flags; in realtime mode the
        live workers and each queue's first message). The live workers' entries are read by
        the ids the last beat found: only a newcomer among them costs a second round trip.
        With ``sweep``, also the namespace's queues and, of those the last sweep found, which
        have expired messages to drop or announce (a new queue is looked at in a round trip
        of its own); the sweep's script calls follow, where there is work."""
        ns, realtime = self.settings.ns, self._subscriber is not None
        index = index_key(self._redis, ns)
        queues = self.settings.queues
        keys = [self.rsmq.keys(q) for q in queues]
        known = self._peer_ids
        swept = self._sweep_known if sweep else []
        taken = self.metrics.take()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                register(pipe, self._redis, ns, info, ttl=3 * self.settings.heartbeat)
                self.metrics.write(pipe, index, taken)
                if sweep:
                    pipe.smembers(f"{ns}:QUEUES")
                    for k in swept:
                        pipe.hget(k.hash, RETENTION_FIELD)
                        pipe.scard(k.expired)
                writes = len(pipe)
                for k in keys:
                    pipe.hexists(k.hash, PAUSED_FIELD)
                if realtime:
                    pipe.zrange(index, 0, -1)
                    if known:
                        pipe.mget(info_keys(self._redis, ns, known))
                    pipe.time()
                    for k in keys:
                        pipe.zrange(k.zset, 0, 0, withscores=True)
                        pipe.exists(k.hash)
                # An error as a reply, not raised: {ns}:QUEUES may be someone else's key, and
                # so may a listed queue's hash or set of expired ids, which must not stop the
                # heartbeat (list_queues reports them); such a queue is not swept.
                replies = await pipe.execute(raise_on_error=False)
        except BaseException:
            self.metrics.give_back(taken)
            raise
        # EXEC ran: the metrics are in, whatever a read answered (given back, they would be
        # counted twice).
        members = writes - 2 * len(swept) - 1 if sweep else writes
        for i, reply in enumerate(replies):
            if isinstance(reply, Exception) and not members <= i < writes:
                raise reply
        reads = replies[writes:]
        if sweep:
            found = replies[members + 1 : writes]
            self._sweep_known = self._queue_keys(replies[members])
            for k, retention, waiting in zip(swept, found[::2], found[1::2], strict=True):
                if _to_sweep(retention, waiting):
                    await self._sweep_queue(k.qname)
            # Queues new since the last sweep (all of them at the first): looked at now, in a
            # round trip of their own, not a whole sweep later.
            old = {k.qname for k in swept}
            await self._sweep_these([k for k in self._sweep_known if k.qname not in old])
        for qname, paused in zip(queues, reads, strict=False):
            if (state := self._states.get(qname)) is not None:
                state.set_paused(bool(paused))
        if not realtime:
            return
        reads = reads[len(queues) :]
        ids, rows = reads.pop(0), (reads.pop(0) if known else [])
        if set(ids) <= set(known):
            live = set(ids)
            workers = [w for w in parse_infos(rows) if w.id.encode() in live]
        else:
            workers = await live_workers(self._redis, ns)
        self._peer_ids = list(ids)
        self._set_peers(workers)
        seconds, micros = reads.pop(0)
        self._wake_for_unannounced(seconds * 1000 + micros // 1000, reads)

    async def _look_for_unannounced(self) -> None:
        """Catch messages nobody announced: a sender not in realtime mode publishes nothing.

        Plain reads, no receive: with the heartbeat, so such a message waits at most one
        HEARTBEAT, and an idle worker still sends no receive.
        """
        # TIME on its own: a cluster pipeline refuses a command without a key.
        seconds, micros = await self._redis.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for qname in self.settings.queues:
                keys = self.rsmq.keys(qname)
                pipe.zrange(keys.zset, 0, 0, withscores=True)
                pipe.exists(keys.hash)
            replies = await pipe.execute()
        self._wake_for_unannounced(seconds * 1000 + micros // 1000, replies)

    def _wake_for_unannounced(self, now_ms: int, replies: list[Any]) -> None:
        """``replies``: each queue's first message (ZRANGE 0 0 WITHSCORES) and whether it
        exists, in turn."""
        loop_now = asyncio.get_running_loop().time()
        for qname, first, exists in zip(
            self.settings.queues, replies[::2], replies[1::2], strict=True
        ):
            state = self._states.get(qname)
            if state is None:
                continue
            if not exists:
                # Gone (Redis lost its data?): the receive this wakes finds it so and creates
                # it again, before any sender is refused for long.
                state.wake.set()
                continue
            if not first:
                continue
            wait = max(0.0, (first[0][1] - now_ms) / 1000)
            if state.due_at is None or loop_now + wait < state.due_at - 0.001:
                # Due before this worker thought: receive now (which also says when to look).
                state.wake.set()

    async def _refresh_paused(self) -> None:
        """Pause and resume reach a realtime worker at once on the queue's pause channel; this
        read, with the heartbeat, is how a polling worker (or one that missed it) learns."""
        for qname, state in list(self._states.items()):
            state.set_paused(await self.rsmq.is_paused(qname))

    async def _sweep_expired(self) -> None:
        """Drop the expired messages of every queue of the namespace, not only this worker's:
        receives drop them too, but a queue nobody receives from would grow forever. Each one
        dropped, here or by a receive, gets its "expired" event here. Plain reads find the
        queues with a retention or expired ids to announce, so a namespace without retention
        costs two round trips and no script call."""
        try:
            # The index RSMQ keeps ({ns}:QUEUES), read as list_queues reads it, but as a plain
            # command: an idle realtime worker runs no script.
            names = await self._redis.smembers(f"{self.rsmq.ns}:QUEUES")
        except ResponseError:  # not a set: someone else's key, which list_queues reports
            return
        await self._sweep_these(self._queue_keys(names))

    async def _sweep_these(self, queues: list[Keys]) -> None:
        """Sweep those of ``queues`` that have a retention or expired ids to announce."""
        if not queues:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys in queues:
                pipe.hget(keys.hash, RETENTION_FIELD)
                pipe.scard(keys.expired)
            replies = await pipe.execute(raise_on_error=False)  # as in _beat
        for keys, retention, waiting in zip(queues, replies[::2], replies[1::2], strict=True):
            if _to_sweep(retention, waiting):
                await self._sweep_queue(keys.qname)

    def _queue_keys(self, names: Any) -> list[Keys]:
        """The keys of the queues an SMEMBERS of {ns}:QUEUES gave (an error reply, from a
        key that is not a set, gives none: list_queues reports it)."""
        if isinstance(names, Exception):
            return []
        queues = []
        for name in sorted(n.decode() if isinstance(n, bytes) else n for n in names):
            with contextlib.suppress(RSMQError):  # a name no operation takes (QUEUES)
                queues.append(self.rsmq.keys(name))
        return queues

    async def _sweep_queue(self, qname: str) -> None:
        cursor = self._sweep_cursors.pop(qname, 0)
        try:
            for _ in range(SWEEP_CALLS):
                got = await self.rsmq.sweep_expired(qname, cursor=cursor)
                for mid in got.ids:
                    self.events.emit(StatusEvent("expired", qname, mid))
                cursor = got.cursor
                if not cursor:
                    return
        except QueueNotFound:
            return  # deleted since it was listed
        self._sweep_cursors[qname] = cursor

    async def _refresh_peers(self) -> None:
        self._set_peers(await live_workers(self._redis, self.settings.ns))

    def _set_peers(self, workers: list[WorkerInfo]) -> None:
        self._peers = {
            q: tuple(sorted(w.id for w in workers if w.mode == "realtime" and q in w.queues))
            for q in self.settings.queues
        }

    async def _drain(self) -> None:
        """Give in-flight handlers the grace period, then make the rest visible at once."""
        if not self._inflight:
            return
        log.info(
            "waiting up to %.1fs for %d handler(s)",
            self.settings.shutdown_grace,
            len(self._inflight),
        )
        _, late = await asyncio.wait(set(self._inflight), timeout=self.settings.shutdown_grace)
        if not late:
            return
        held = [self._inflight[t] for t in late]
        for task in late:
            task.cancel()
        await asyncio.wait(late, timeout=1.0)
        log.warning("releasing %d message(s) whose handlers did not finish in time", len(held))
        released: Counter[str] = Counter()
        for qname, msg in held:
            with contextlib.suppress(*REDIS_DOWN):
                if await self.rsmq.change_message_visibility(qname, msg.id, 0, rc=msg.rc):
                    released[qname] += 1
                    self.metrics.job(qname, "retrying")
                    self._emit("retrying", qname, msg, error="worker shut down", retry_in=0)
        self.counters["released"] += released.total()
        for qname, n in released.items():
            # Tell the other workers, as a send would: they are asleep until they hear.
            with contextlib.suppress(*REDIS_DOWN):
                keys = self.rsmq.keys(qname)
                if keys.cluster:
                    await self._redis.spublish(keys.channel, n)
                else:
                    await self._redis.publish(keys.channel, n)

    # Receiving ---------------------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self.settings.concurrency - len(self._inflight) - self._reserved

    async def _consume(self, qname: str) -> None:
        state = self._states[qname] = _QueueState()
        self._wakeups.append(state.wake)
        dispatch = None
        if self._subscriber is not None:
            dispatch = asyncio.create_task(self._dispatch(qname, state))
        with contextlib.suppress(*REDIS_DOWN):  # else the heartbeat reads it
            state.paused = await self.rsmq.is_paused(qname)
        failures = 0
        try:
            while not self._stopping.is_set():
                if state.paused:
                    # Until resumed (set_paused wakes it) or stopped; sends meanwhile wake it
                    # only to find it still paused.
                    state.wake.clear()
                    await state.wake.wait()
                    continue
                if self._free_slots() <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                if not state.maybe_more and not await self._wait_for_work(state):
                    continue
                if state.paused:  # heard while waiting
                    continue
                if self._free_slots() <= 0:
                    # Another queue took the last slots while this one waited: receive as
                    # soon as one is free (a receive of none would be refused).
                    state.maybe_more = True
                    continue
                state.wake.clear()  # notifications from here on mean "look again"
                try:
                    await self._receive(qname, state)
                    if failures:
                        log.info(
                            "queue %s: Redis is back after %d failed receive(s)", qname, failures
                        )
                    failures = 0
                except QueueNotFound:
                    state.maybe_more = await self._recreate(qname)  # then receive at once
                    if not state.maybe_more:
                        state.due_at = asyncio.get_running_loop().time() + MISSING_QUEUE_RETRY
                except REDIS_DOWN as exc:
                    failures += 1
                    delay = backoff(failures, 0.05, 2.0)
                    # One warning per outage; its further attempts are details.
                    log.log(
                        logging.WARNING if failures == 1 else logging.DEBUG,
                        "queue %s: Redis unavailable (%s); attempt %d, retrying in %.2fs",
                        qname,
                        exc,
                        failures,
                        delay,
                    )
                    state.due_at = asyncio.get_running_loop().time() + delay
                except Exception:
                    # A bug must not silently leave a queue without its consumer.
                    log.exception("queue %s: receive failed; looking again in 1s", qname)
                    state.due_at = asyncio.get_running_loop().time() + 1.0
                    state.maybe_more = False
        finally:
            if dispatch is not None:
                dispatch.cancel()

    async def _wait_for_work(self, state: _QueueState) -> bool:
        """Sleep until work may be there: a wake-up, the next message's due time, or (polling)
        the next poll. False if woken to stop."""
        loop = asyncio.get_running_loop()
        if self._subscriber is None:
            timeout: float | None = self.settings.poll_interval
        else:
            timeout = None if state.due_at is None else max(0.0, state.due_at - loop.time())
        await state.wake.wait(timeout)
        return not self._stopping.is_set()

    async def _receive(self, qname: str, state: _QueueState) -> None:
        asked = min(self._free_slots(), 1000)
        # Announce only where peers may be waiting to help (see _dispatch).
        peers = self._peers.get(qname, ())
        announce = self._peers_channel(qname) if len(peers) > 1 else None
        # The slots asked for are held while the receive is out: other queues' consumers,
        # receiving at the same time, must not count them as free too (CONCURRENCY is a bound).
        self._reserved += asked
        try:
            got = await self.rsmq.receive_batch(
                qname, asked, vt=self.settings.vt, announce=announce
            )
        finally:
            self._reserved -= asked
            self._slot_freed.set()  # what this receive did not fill is free again
        self.counters["receives"] += 1
        if not got.messages:
            self.counters["empty_receives"] += 1
        state.maybe_more = len(got.messages) == asked
        state.set_due(got.next_visible_in)
        state.cancel_due_timer()  # the consumer's own wait now knows the due time
        for msg in got.messages:
            self._start(qname, msg)

    def _peers_channel(self, qname: str) -> str:
        return f"{self.rsmq.keys(qname).channel}:receives"

    async def _dispatch(self, qname: str, state: _QueueState) -> None:
        """Turn notifications into wake-ups, without waking every process for every message.

        Every realtime worker of a queue hears each of RSMQ's notifications, in the same order.
        They rank themselves for it the same way (by the notification's payload over the
        sorted live worker ids): rank 0 receives at once, rank k only after k * STAGGER, and
        stands down if a receive announces meanwhile that it emptied the queue. Receives
        announce in the same script step as they run, so a send that follows a receive is
        always announced after it. A process with no free slot takes no part; the next rank
        covers for it, as for a crashed process still in the registry.
        """
        assert self._subscriber is not None
        rt, pause = self.rsmq.keys(qname).channel, self.rsmq.keys(qname).pause_channel
        listener = self._subscriber.listen(rt, self._peers_channel(qname), pause, maxsize=100)
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await listener.get()
                if item is None:  # (re)subscribed: something may have been missed
                    state.cancel_stagger()
                    state.wake.set()
                    continue
                channel, data = item
                if channel == pause:
                    state.set_paused(data == b"1")
                elif channel == rt:
                    rank = self._rank(qname, data)
                    if rank == 0:
                        state.cancel_stagger()
                        state.wake.set()
                    elif state.stagger is None:
                        state.stagger = loop.call_later(
                            rank * self.settings.stagger, state.fire_stagger
                        )
                elif data.startswith(b"0"):
                    # A peer emptied the queue: stand down, but remember when the next message
                    # is due (it may be the one that peer now holds, should the peer die).
                    state.cancel_stagger()
                    wait = int(data[2:] or -1)
                    if wait >= 0:
                        known = state.due_at
                        state.set_due(wait / 1000, keep_earlier=True)
                        if state.due_at != known:
                            # Earlier than the consumer's sleep knows (a message due now, or
                            # when the peer's lease runs out): without this, nothing but a
                            # notification would wake it, and the heartbeat's look would
                            # find the due time known and wake nothing either.
                            state.wake_when_due()
        finally:
            self._subscriber.unlisten(listener)

    def _rank(self, qname: str, payload: bytes) -> int:
        peers = self._peers.get(qname) or (self.id,)
        if self.id not in peers:
            peers = tuple(sorted((*peers, self.id)))
        turn = int(payload) if payload.isdigit() else 0
        return (peers.index(self.id) - turn) % len(peers)

    def _start(self, qname: str, msg: Message) -> None:
        task = asyncio.create_task(self._handle(qname, msg))
        self._inflight[task] = (qname, msg)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # str, not repr: redis-py's repr of its errors hides their message.
            log.error("handling failed unexpectedly: %s: %s", type(exc).__name__, exc)

    # Handling ----------------------------------------------------------------------------------

    def _emit(self, status: Status, qname: str, msg: Message, **extra: Any) -> None:
        self.events.emit(
            StatusEvent(status=status, queue=qname, id=msg.id, rc=msg.rc, worker=self.id, **extra)
        )

    async def _handle(self, qname: str, msg: Message) -> None:
        self.counters["received"] += 1
        if msg.rc == 1:  # a first receive: fr is when this receive ran, on Redis's clock
            self.metrics.pickup(qname, msg.sent, msg.fr)
        self._emit("received", qname, msg)
        if msg.rc > self.settings.max_receives:
            # Received more often than allowed without a handler ever failing: its workers
            # died mid-handler. Running it again would likely kill another.
            await self._dead_letter(qname, msg, f"received {msg.rc} times")
            return
        # The lease keeper starts only for a handler still running when the lease must be
        # extended: a task and a timer for every job, most done in milliseconds, cost more.
        keeper: list[asyncio.Task[None]] = []
        start_keeper = asyncio.get_running_loop().call_later(
            self.settings.vt * 0.6,
            lambda: keeper.append(asyncio.create_task(self._keep_hidden(qname, msg))),
        )
        started = time.perf_counter()
        try:
            self._emit("processing", qname, msg, progress=0.0)
            result = self._result(await self._run_handler(qname, msg))
        except Retry as retry:
            self.metrics.duration(qname, time.perf_counter() - started)
            await self._retry(qname, msg, retry)
        except Exception as exc:
            self.metrics.duration(qname, time.perf_counter() - started)
            await self._failed(qname, msg, exc)
        else:
            self.metrics.duration(qname, time.perf_counter() - started)
            if await self._delete_handled(qname, msg) or not await self._queued(qname, msg):
                # Not deleted, yet gone: most likely by a try of this delete whose reply was
                # lost with its connection (redis-py resent it). The handler finished anyway.
                self.counters["done"] += 1
                self.metrics.job(qname, "done")
                self.metrics.done(msg.sent, time.time() * 1000)
                self._emit("done", qname, msg, result=result)
                log.info(
                    "%6.3fs done %s/%s rc=%d", time.perf_counter() - started, qname, msg.id, msg.rc
                )
            else:
                self.counters["lost_leases"] += 1
                log.warning(
                    "%s/%s was handled, but another worker received it meanwhile (its "
                    "visibility timeout ran out); it stays with them",
                    qname,
                    msg.id,
                )
        finally:
            start_keeper.cancel()
            for task in keeper:
                task.cancel()

    async def _queued(self, qname: str, msg: Message) -> bool:
        """Whether the message is still in its queue (by anyone's hand)."""
        try:
            return bool(await self._redis.hexists(self.rsmq.keys(qname).hash, msg.id))
        except REDIS_DOWN:
            return True  # unknown: say the lease was lost, the cautious reading

    async def _delete_handled(self, qname: str, msg: Message) -> bool:
        """Delete a handled message, trying again while Redis is away (the keeper goes on
        extending its lease meanwhile): a delete given up on would have the message handled
        again once its visibility timeout ran out. Returns whether it was deleted; gives up
        (raises) only at stop or after two visibility timeouts."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 2 * self.settings.vt
        failures = 0
        while True:
            try:
                return await self.rsmq.delete_message(qname, msg.id, rc=msg.rc)
            except REDIS_DOWN as exc:
                failures += 1
                delay = backoff(failures, 0.1, 2.0)
                if self._stopping.is_set() or loop.time() + delay > give_up:
                    raise
                log.warning(
                    "could not delete handled %s/%s yet (%s); trying again in %.1fs",
                    qname,
                    msg.id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    def _result(self, value: Any) -> Any:
        """What the handler returned, as JSON data (a copy), checked before the message is
        deleted: a value that is not JSON data, or is over RESULT_MAX_BYTES, fails the job
        (and is retried as any failure) rather than losing the result or the "done"."""
        if value is None:
            return None
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise _BadResult(
                f"the handler returned a value that is not JSON-serialisable ({exc}); return "
                "JSON data (dict, list, str, int, float, bool) or None"
            ) from None
        cap = self.settings.result_max_bytes
        if len(text) > cap:  # ASCII (json.dumps escapes the rest): characters are bytes
            raise _BadResult(
                f"the handler's result is {len(text)} bytes as JSON, over RESULT_MAX_BYTES "
                f"({cap}); return less (a key to where the rest is kept, say)"
            )
        # A copy, as checked: the event is written after the delete, and a handler may go on
        # changing what it returned (a shared dict).
        return json.loads(text)

    async def _run_handler(self, qname: str, msg: Message) -> Any:
        """Run the handler, within JOB_TIMEOUT if set: an async one is cancelled at the
        deadline, a sync one's thread is given up on (a thread cannot be stopped). Returns
        what the handler returned."""
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        # The deadline passed: what the handler says now is stale. Read and set in the loop's
        # thread only (report sends a thread's reports there), so a plain flag does.
        over = [False]

        def emit(fraction: float) -> None:
            if not over[0]:
                self._emit("processing", qname, msg, progress=fraction)

        def report(fraction: float) -> None:
            # In order with the handler's other events: directly from the loop's own thread,
            # through the loop from a sync handler's thread.
            if threading.get_ident() == loop_thread:
                emit(fraction)
            else:
                with contextlib.suppress(RuntimeError):  # the loop closed: the worker stopped
                    loop.call_soon_threadsafe(emit, fraction)

        job = Job(queue=qname, message=msg, worker=self.id, _report=report, context=self.context)
        limit = self.settings.job_timeout
        deadline = asyncio.timeout(limit)
        result = None
        try:
            async with deadline:
                result = await self._call_handler(qname, job)
        except Exception:
            if not deadline.expired():
                raise  # the handler's own failure (a TimeoutError of its own included)
        if deadline.expired():
            # Whatever came out past the deadline (the TimeoutError of its cancellation, or a
            # return or Retry from a handler that caught it) is too late, as a thread's is.
            over[0] = True
            raise _TimedOut(f"timed out after {limit:g} s")
        return result

    async def _call_handler(self, qname: str, job: Job) -> Any:
        if inspect.iscoroutinefunction(self.handler):
            return await self.handler(job)
        result = await self._in_thread(qname, job)
        if inspect.isawaitable(result):
            return await result
        return result

    def _in_thread(self, qname: str, job: Job) -> asyncio.Future[Any]:
        """A sync handler in a thread of its own. Its future may be given up on (JOB_TIMEOUT, a
        shutdown): the thread runs on, but what it returns or raises then reaches nothing, so
        it can never delete the message or count as done."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        began = time.monotonic()

        def settle(result: Any, exc: BaseException | None) -> None:
            if future.done():  # given up on
                log.warning(
                    "%s/%s: the handler given up on returned after %.1fs; ignored",
                    qname,
                    job.id,
                    time.monotonic() - began,
                )
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        def run() -> None:
            try:
                outcome: tuple[Any, BaseException | None] = (self.handler(job), None)
            except BaseException as exc:  # as a ThreadPoolExecutor hands it over
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed: the worker stopped
                loop.call_soon_threadsafe(settle, *outcome)

        name = f"handler-{next(self._thread_ids)}"  # __main__ looks for these at exit
        threading.Thread(target=run, name=name, daemon=True).start()
        return future

    async def _failed(self, qname: str, msg: Message, exc: Exception) -> None:
        self.counters["failed"] += 1
        self.metrics.job(qname, "failed")
        if isinstance(exc, _TimedOut):
            self.counters["timed_out"] += 1
            error = str(exc)
        elif isinstance(exc, _BadResult):
            error = str(exc)
        else:
            error = f"{type(exc).__name__}: {exc}"[:500]
        self._emit("failed", qname, msg, error=error)
        if msg.rc >= self.settings.max_receives:
            await self._dead_letter(qname, msg, error)
            return
        backoff = min(
            self.settings.retry_backoff * 2 ** (msg.rc - 1), self.settings.retry_backoff_max
        )
        delay = math.ceil(backoff)  # RSMQ's visibility timeouts are whole seconds
        log.warning("failed %s/%s rc=%d (%s); retry in %ds", qname, msg.id, msg.rc, error, delay)
        await self._hand_back(qname, msg, delay, error=error)

    async def _retry(self, qname: str, msg: Message, retry: Retry) -> None:
        """The handler raised Retry(delay): back in ``delay`` seconds, not after the backoff;
        not a failure, but a receive, so MAX_RECEIVES still ends it."""
        if msg.rc >= self.settings.max_receives:
            why = (
                f"asked to retry in {retry.seconds}s at receive {msg.rc}, and "
                f"MAX_RECEIVES is {self.settings.max_receives}"
            )
            await self._dead_letter(qname, msg, why)
            return
        log.info(
            "%s/%s rc=%d: the handler asked to retry in %ds", qname, msg.id, msg.rc, retry.seconds
        )
        await self._hand_back(qname, msg, retry.seconds)

    async def _hand_back(
        self, qname: str, msg: Message, delay: int, *, error: str | None = None
    ) -> None:
        """Make the message visible again in ``delay`` seconds, if it is still this receive's."""
        if await self.rsmq.change_message_visibility(qname, msg.id, delay, rc=msg.rc):
            self.counters["retried"] += 1
            self.metrics.job(qname, "retrying")
            self._emit("retrying", qname, msg, error=error, retry_in=delay)
            # Nothing announces a message coming back, so this worker looks again now: the
            # receive finds when the earliest message is due (this one, or an earlier one).
            self._states[qname].wake.set()

    async def _dead_letter(self, qname: str, msg: Message, why: str) -> None:
        dead = self.settings.dead_letter_queue(qname)
        with contextlib.suppress(Exception):
            await self.rsmq.create_queue(dead)
        new_id = await self.rsmq.move_message(qname, msg.id, dead, rc=msg.rc)
        if new_id is not None:
            self.counters["dead"] += 1
            self.metrics.job(qname, "dead")
            self._emit("dead", qname, msg, error=why, dead_letter_id=new_id)
            log.error(
                "dead-lettered %s/%s rc=%d to %s/%s: %s", qname, msg.id, msg.rc, dead, new_id, why
            )

    async def _keep_hidden(self, qname: str, msg: Message) -> None:
        """Extend a long handler's visibility timeout, now (0.6 of it has passed: see
        _handle) and again each time 0.6 of it passes."""
        vt = self.settings.vt
        while True:
            try:
                still_ours = await self.rsmq.change_message_visibility(qname, msg.id, vt, rc=msg.rc)
            except REDIS_DOWN as exc:
                log.warning("could not extend %s/%s: %s", qname, msg.id, exc)
            else:
                if not still_ours:
                    self.counters["lost_leases"] += 1
                    log.warning(
                        "%s/%s: lost to another worker while its handler ran", qname, msg.id
                    )
                    return
            await asyncio.sleep(vt * 0.6)
