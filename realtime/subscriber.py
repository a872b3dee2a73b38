"""One pub/sub connection per process, fanned out to in-process listeners.

Redis pub/sub is fire-and-forget: a message published while the connection is down is gone.
So the subscriber never lets a listener rely on having heard everything. Once Redis confirms
a (re)subscribe, each :class:`Wakeup` of the channel is set (a catch-up wake: "look again,
you may have missed something") and each :class:`Listener` of it receives :data:`RESYNC` so
it can replay from a durable log: from that moment on nothing published is missed, so a
replay that starts then leaves no gap. Listener buffers are bounded: a slow listener loses its
oldest messages and is told so (a RESYNC in their place), it never grows memory.

What any number of listeners costs is bounded and paid by whoever causes it: leaving costs what
the leaver followed (each listener knows its channels), the connection's (UN)SUBSCRIBEs go out
in batches from one task, and ``max_channels`` caps the channels one process follows, so a
crowd of clients naming made-up channels can neither hold the event loop nor fill Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.sentinel import SentinelConnectionPool

from rsmq_core.client import AsyncRedis
from rsmq_core.connection import sentinel_pool

from .backoff import backoff
from .sharded import ShardedPubSub, without_retries

log = logging.getLogger(__name__)

# What a dropped or refused connection raises (redis-py wraps socket errors in these).
CONNECTION_LOST = (redis_errors.ConnectionError, redis_errors.TimeoutError)

RESYNC: Final = None
"""Put in a listener's buffer when messages may have been missed: replay from the log."""

Delivery = tuple[str, bytes]
"""A message as a listener gets it: the channel, and the data."""


class Wakeup:
    """A coalescing signal: any number of notifications before the next wait count as one."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.notifications = 0

    def set(self) -> None:
        self.notifications += 1
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or ``timeout`` seconds pass; True if it was set."""
        if timeout is not None and timeout <= 0:
            return self._event.is_set()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Listener:
    """A bounded buffer of (channel, data) deliveries, in the order Redis sent them, with
    RESYNC in place of any it had to drop, and once Redis confirms it hears every channel of
    the listener (after it is made, and after every reconnect)."""

    def __init__(self, maxsize: int, channels: tuple[str, ...] = ()) -> None:
        self.channels = channels
        # Channels Redis has not yet confirmed: RESYNC when the last one is.
        self._pending: set[str] = set()
        self._items: deque[Delivery | None] = deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()
        self.dropped = 0

    def _put(self, item: Delivery | None) -> None:
        if len(self._items) >= self._maxsize:
            # Drop the oldest and say so: the reader resyncs from the durable log instead.
            self._items.popleft()
            self.dropped += 1
            if self._items and self._items[0] is not RESYNC:
                self._items[0] = RESYNC
        self._items.append(item)
        self._ready.set()

    async def get(self) -> Delivery | None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class Handler(Listener):
    """A listener that takes each delivery (and each RESYNC) at once, in the subscriber's
    read loop: no buffer, and no task to keep per listener. ``handle`` must be quick; what it
    raises is logged."""

    def __init__(self, handle: Callable[[Delivery | None], None], channels: tuple[str, ...]):
        super().__init__(0, channels)
        self._handle = handle

    def _put(self, item: Delivery | None) -> None:
        try:
            self._handle(item)
        except Exception:
            log.exception("a pub/sub handler failed on %r", item)


class TooManyChannels(Exception):
    """The process already follows as many channels as it may (``max_channels``)."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


BATCH = 500  # channels per SUBSCRIBE or UNSUBSCRIBE: a reply of that many fits any buffer


class Subscriber:
    """Owns the process's pub/sub connection; reconnects with capped, jittered backoff.

    Build it on the process's ``redis.asyncio.Redis``; ``async with`` starts and stops it.
    With ``max_channels``, :meth:`listen` refuses (TooManyChannels) a listener whose new
    channels would take the process past that many.
    """

    def __init__(
        self,
        redis: AsyncRedis,
        *,
        keepalive: float = 30.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        max_channels: int | None = None,
    ) -> None:
        self._redis = redis
        self._keepalive = keepalive
        self._backoff = backoff
        self._max_channels = max_channels
        self._wakeups: dict[str, list[Wakeup]] = {}
        self._listeners: dict[str, dict[Listener, None]] = {}  # insertion-ordered sets
        # What the connection holds, and the channels that may now differ from what is
        # wanted: the sync task brings those (and only those) in line, in batches.
        self._subscribed: set[str] = set()
        # What Redis has confirmed it hears: from then on nothing published is missed.
        self._confirmed: set[str] = set()
        self._changed: set[str] = set()
        self._dirty = asyncio.Event()
        self._pubsub: Any = None
        self._pool: aioredis.ConnectionPool | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()
        self.reconnects = 0

    def __repr__(self) -> str:
        return (
            f"<Subscriber channels={len(self._channels())} connected={self.connected.is_set()}"
            f" reconnects={self.reconnects}>"
        )

    async def __aenter__(self) -> Subscriber:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="realtime-subscriber")

    async def aclose(self) -> None:
        self._closing = True
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            _, pending = await asyncio.wait({task}, timeout=0.5)
            if pending and self._pubsub is not None:
                # redis-py can hold on to a cancelled read after an UNSUBSCRIBE; closing the
                # connection under it ends the read for sure.
                await self._pubsub.aclose()
                await asyncio.wait({task}, timeout=1.0)
            if not task.done():
                log.warning("the pub/sub reader did not stop")
        if self._pool is not None:
            await self._pool.disconnect()

    def wakeup(self, channel: str) -> Wakeup:
        """A Wakeup set by every message on ``channel`` and after every (re)subscribe."""
        wake = Wakeup()
        wake.set()  # nothing was heard before it existed: look once
        self._wakeups.setdefault(channel, []).append(wake)
        self._change(channel)
        return wake

    def listen(
        self,
        *channels: str,
        maxsize: int = 1000,
        handle: Callable[[Delivery | None], None] | None = None,
    ) -> Listener:
        """A Listener receiving every message on ``channels`` (RESYNC after any gap); with
        ``handle``, a Handler that passes each to it at once.

        Raises TooManyChannels, and follows nothing, if the channels not yet followed would
        take the process past ``max_channels``."""
        channels = tuple(dict.fromkeys(channels))
        if self._max_channels is not None:
            new = sum(1 for c in channels if not self._wanted(c))
            followed = len(self._listeners) + sum(
                1 for c, w in self._wakeups.items() if w and c not in self._listeners
            )  # wakeups are few (a worker's queues): this stays cheap
            if new and followed + new > self._max_channels:
                raise TooManyChannels(
                    f"this process follows {followed} channels and may follow at most "
                    f"{self._max_channels}",
                    limit=self._max_channels,
                )
        listener = Listener(maxsize, channels) if handle is None else Handler(handle, channels)
        # A channel not yet heard: what is published before Redis confirms it is missed, so
        # the listener is told to catch up (RESYNC) once it is.
        listener._pending = {c for c in channels if not self._heard(c)}
        for channel in channels:
            self._listeners.setdefault(channel, {})[listener] = None
            self._change(channel)
        return listener

    def unlisten(self, listener: Listener) -> None:
        """Stop a listener; a channel nobody listens to any more is unsubscribed. Costs what
        the listener followed, whatever else the process follows."""
        channels, listener.channels = listener.channels, ()
        for channel in channels:
            listeners = self._listeners.get(channel)
            if listeners is None or listener not in listeners:
                continue
            del listeners[listener]
            if not listeners:
                del self._listeners[channel]
                self._change(channel)

    def _channels(self) -> set[str]:
        return {c for c, w in self._wakeups.items() if w} | set(self._listeners)

    def _heard(self, channel: str) -> bool:
        # Subscribed and confirmed; an UNSUBSCRIBE merely queued (still in _changed) is
        # dropped by the sync task once the channel is wanted again.
        return channel in self._subscribed and channel in self._confirmed

    def _wanted(self, channel: str) -> bool:
        return channel in self._listeners or bool(self._wakeups.get(channel))

    def _change(self, channel: str) -> None:
        # Not connected: the run loop subscribes to every channel when it connects.
        self._changed.add(channel)
        self._dirty.set()

    async def _sync(self, pubsub: Any) -> None:
        """Brings the connection's subscriptions in line with what is wanted, in batches:
        a thousand listeners leaving at once cost a few UNSUBSCRIBEs, not a thousand."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            changed, self._changed = self._changed, set()
            add = [c for c in changed if c not in self._subscribed and self._wanted(c)]
            drop = [c for c in changed if c in self._subscribed and not self._wanted(c)]
            await self._batches(pubsub, add, subscribe=True)
            await self._batches(pubsub, drop, subscribe=False)

    async def _batches(self, pubsub: Any, channels: list[str], *, subscribe: bool) -> None:
        for i in range(0, len(channels), BATCH):
            batch = channels[i : i + BATCH]
            if subscribe:
                self._subscribed.update(batch)
                await pubsub.subscribe(*batch)
            else:
                self._subscribed.difference_update(batch)
                await pubsub.unsubscribe(*batch)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        # The last failure was a refusal after connecting (a subscribe the ACL user may not
        # make): the next connection is not announced, which it would be over and over.
        refused = False
        while not self._closing:
            pubsub = self._new_pubsub()
            up_since: float | None = None
            try:
                await pubsub.ping()  # connects
                self._pubsub = pubsub
                self.connected.set()
                # Everything wanted now is subscribed to before anyone is told to catch up
                # (a replay must not end before the channel is heard); what changes from
                # here on goes in the sync task's batches.
                self._subscribed, self._changed, self._confirmed = set(), set(), set()
                for listener in {x for ls in self._listeners.values() for x in ls}:
                    listener._pending = set(listener.channels)
                await self._batches(pubsub, list(self._channels()), subscribe=True)
                if failures:
                    self.reconnects += 1
                    if not refused:
                        log.info("pub/sub reconnected after %d failed attempt(s)", failures)
                up_since = loop.time()
                await self._serve(pubsub)
            except Exception as exc:
                # Any failure, not only a dropped connection: a cluster that cannot be reached
                # at all, a refused subscribe... The subscriber must outlive them all.
                self.connected.clear()
                self._pubsub = None
                if self._closing:
                    return
                # The backoff starts again only after a connection that lasted: a subscribe
                # refused right after connecting (an ACL user without the channel) is a
                # failure to connect, not a new outage each time.
                lasted = None if up_since is None else loop.time() - up_since
                if lasted is not None and lasted >= self._backoff[1]:
                    failures = 0
                refused = lasted is not None and not isinstance(exc, CONNECTION_LOST)
                failures += 1
                delay = backoff(failures, *self._backoff)
                what = exc if isinstance(exc, CONNECTION_LOST) else f"{type(exc).__name__}: {exc}"
                # One warning per outage; its further attempts are details.
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "pub/sub connection lost (%s); attempt %d, retrying in %.2fs",
                    what,
                    failures,
                    delay,
                )
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _serve(self, pubsub: Any) -> None:
        """Reads and syncs on one connection until either fails."""
        tasks = {asyncio.create_task(self._read(pubsub)), asyncio.create_task(self._sync(pubsub))}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            # Bounded: a read redis-py holds on to ends when _run closes the connection.
            await asyncio.wait(tasks, timeout=1.0)

    def _new_pubsub(self) -> Any:
        if isinstance(self._redis, aioredis.RedisCluster):
            return ShardedPubSub(self._redis)
        if self._pool is None:
            # A pool of its own, without the client's retries (see without_retries).
            pool = self._redis.connection_pool
            kwargs = without_retries(pool.connection_kwargs)
            if isinstance(pool, SentinelConnectionPool):
                # Through the sentinels, so a reconnect finds the master after a failover.
                self._pool = sentinel_pool(pool, **kwargs)
            else:
                self._pool = aioredis.ConnectionPool(
                    connection_class=pool.connection_class, **kwargs
                )
        return aioredis.Redis(connection_pool=self._pool).pubsub()

    def _confirm(self, kind: str, channel: str) -> None:
        """Redis now hears ``channel`` (or no longer does): whoever waits on it catches up,
        since anything published before this moment was not heard."""
        if kind in ("unsubscribe", "sunsubscribe"):
            self._confirmed.discard(channel)
            return
        self._confirmed.add(channel)
        for wake in self._wakeups.get(channel, ()):
            wake.set()
        for listener in list(self._listeners.get(channel, ())):
            if channel in listener._pending:
                listener._pending.discard(channel)
                if not listener._pending:
                    listener._put(RESYNC)

    async def _read(self, pubsub: Any) -> None:
        while True:
            # Subscribe confirmations are read, not ignored: redis-py answers an ignored one
            # with None, which would look like silence and cost a PING each.
            message = await pubsub.get_message(
                ignore_subscribe_messages=False, timeout=self._keepalive
            )
            if message is None:
                # Quiet for a while: a PING proves the connection still carries messages
                # (a dead one raises here, and the loop reconnects).
                await pubsub.ping()
                continue
            kind = message["type"]
            kind = kind.decode() if isinstance(kind, bytes) else kind
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            if kind != "message":
                if kind in ("subscribe", "ssubscribe", "unsubscribe", "sunsubscribe"):
                    self._confirm(kind, channel)
                continue
            for wake in self._wakeups.get(channel, ()):
                wake.set()
            data = message["data"]
            data = data.encode() if isinstance(data, str) else data
            for listener in self._listeners.get(channel, ()):
                listener._put((channel, data))
