"""One pub/sub connection per process, fanned out to in-process listeners.

Redis pub/sub is fire-and-forget: a message published while the connection is down is gone.
So the subscriber never lets a listener rely on having heard everything. After every
(re)subscribe each :class:`Wakeup` is set (a catch-up wake: "look again, you may have missed
something") and each :class:`Listener` receives :data:`RESYNC` so it can replay from a
durable log. Listener buffers are bounded: a slow listener loses its oldest messages and is
told so (a RESYNC in their place), it never grows memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Final

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from rsmq_core.client import AsyncRedis

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
    RESYNC in place of any it had to drop (and after every reconnect)."""

    def __init__(self, maxsize: int) -> None:
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


class Subscriber:
    """Owns the process's pub/sub connection; reconnects with capped, jittered backoff.

    Build it on the process's ``redis.asyncio.Redis``; ``async with`` starts and stops it.
    """

    def __init__(
        self,
        redis: AsyncRedis,
        *,
        keepalive: float = 30.0,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self._redis = redis
        self._keepalive = keepalive
        self._backoff = backoff
        self._wakeups: dict[str, list[Wakeup]] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._pubsub: Any = None
        self._pool: aioredis.ConnectionPool | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Future[None]] = set()
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
        # Calls in flight on the connection first: a pending (un)subscribe would otherwise
        # hold the connection while the reader is being cancelled.
        for call in list(self._calls):
            call.cancel()
        if self._calls:
            await asyncio.wait(self._calls, timeout=1.0)
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            _, pending = await asyncio.wait({task}, timeout=0.5)
            if pending and self._pubsub is not None:
                # redis-py can hold on to a cancelled read after an UNSUBSCRIBE; closing the
                # connection under it ends the read for sure.
                await self._pubsub.aclose()
                await asyncio.wait({task}, timeout=2.0)
            if not task.done():
                log.warning("the pub/sub reader did not stop")
        if self._pool is not None:
            await self._pool.disconnect()

    def wakeup(self, channel: str) -> Wakeup:
        """A Wakeup set by every message on ``channel`` and after every (re)subscribe."""
        wake = Wakeup()
        wake.set()  # nothing was heard before it existed: look once
        self._wakeups.setdefault(channel, []).append(wake)
        self._subscribe_later(channel)
        return wake

    def listen(self, *channels: str, maxsize: int = 1000) -> Listener:
        """A Listener receiving every message on ``channels`` (RESYNC after any gap)."""
        listener = Listener(maxsize)
        for channel in channels:
            self._listeners.setdefault(channel, []).append(listener)
            self._subscribe_later(channel)
        return listener

    def unlisten(self, listener: Listener) -> None:
        """Stop a listener; a channel nobody listens to any more is unsubscribed."""
        for channel, listeners in list(self._listeners.items()):
            if listener not in listeners:
                continue
            listeners.remove(listener)
            if not listeners and not self._wakeups.get(channel):
                del self._listeners[channel]
                if self._pubsub is not None and self.connected.is_set():
                    self._in_background(self._pubsub.unsubscribe(channel))

    def _channels(self) -> set[str]:
        return {c for c, w in self._wakeups.items() if w} | {
            c for c, ls in self._listeners.items() if ls
        }

    def _subscribe_later(self, channel: str) -> None:
        # Not connected: the run loop subscribes to every channel when it connects.
        if self._pubsub is not None and self.connected.is_set():
            self._in_background(self._pubsub.subscribe(channel))

    def _in_background(self, call: Any) -> None:
        task = asyncio.ensure_future(self._quietly(call))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    @staticmethod
    async def _quietly(call: Any) -> None:
        # A failure here is a dropped connection: the run loop resubscribes everything.
        with contextlib.suppress(*CONNECTION_LOST):
            await call

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
                # From here on a new channel is subscribed to as it is added; the ones
                # added before are subscribed to now.
                self._pubsub = pubsub
                self.connected.set()
                if channels := self._channels():
                    await pubsub.subscribe(*channels)
                if failures:
                    self.reconnects += 1
                    if not refused:
                        log.info("pub/sub reconnected after %d failed attempt(s)", failures)
                up_since = loop.time()
                self._catch_up()
                await self._read(pubsub)
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
                log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                        "pub/sub connection lost (%s); attempt %d, retrying in %.2fs", what,
                        failures, delay)  # fmt: skip
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _new_pubsub(self) -> Any:
        if isinstance(self._redis, aioredis.RedisCluster):
            return ShardedPubSub(self._redis)
        if self._pool is None:
            # A pool of its own, without the client's retries (see without_retries).
            pool = self._redis.connection_pool
            kwargs = without_retries(pool.connection_kwargs)
            self._pool = aioredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        return aioredis.Redis(connection_pool=self._pool).pubsub()

    def _catch_up(self) -> None:
        for wakes in self._wakeups.values():
            for wake in wakes:
                wake.set()
        for listener in {id(x): x for ls in self._listeners.values() for x in ls}.values():
            listener._put(RESYNC)

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=self._keepalive
            )
            if message is None:
                # Quiet for a while: a PING proves the connection still carries messages
                # (a dead one raises here, and the loop reconnects).
                await pubsub.ping()
                continue
            if message["type"] != "message":
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            for wake in self._wakeups.get(channel, ()):
                wake.set()
            data = message["data"]
            data = data.encode() if isinstance(data, str) else data
            for listener in self._listeners.get(channel, ()):
                listener._put((channel, data))
