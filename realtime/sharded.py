"""Sharded pub/sub on a Redis Cluster, shaped like the part of redis-py's PubSub that the
Subscriber uses (ping, subscribe, unsubscribe, get_message, aclose).

On a cluster every queue's channels carry the queue's hash tag, so the scripts SPUBLISH them
on the master that owns the queue, and only that master carries them: a classic PUBLISH would
be copied to every node of the cluster. Listening then takes one connection per master, each
SSUBSCRIBEd to the channels of its slots. redis-py's ClusterPubSub polls those connections one
after another, each for the whole timeout, so a reader task per master feeds one inbox here.

Anything that means the cluster's layout changed (a master unreachable, a slot moved away,
which Redis tells with an SUNSUBSCRIBE nobody asked for) raises ConnectionError: the
Subscriber then builds a new one from a fresh view of the cluster and every listener
catches up, as after any reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

Message = dict[str, Any]


def without_retries(connection_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Connection settings for pub/sub: the same server and credentials, but no silent retry.
    A pub/sub connection that redis-py quietly re-made would hide the gap in which messages
    were lost; the Subscriber must see every disconnect to make its listeners catch up."""
    return {**connection_kwargs, "retry": None, "retry_on_error": [], "retry_on_timeout": False}


class ShardedPubSub:
    def __init__(self, cluster: aioredis.RedisCluster) -> None:
        self._cluster = cluster
        self._masters: dict[str, aioredis.client.PubSub] = {}
        self._clients: list[aioredis.Redis] = []
        self._readers: set[asyncio.Task[None]] = set()
        self._inbox: asyncio.Queue[Message | BaseException] = asyncio.Queue()
        # SUNSUBSCRIBEs sent and not yet answered, per channel: any other SUNSUBSCRIBE is the
        # cluster telling of a moved slot.
        self._dropping: Counter[bytes] = Counter()

    async def ping(self) -> None:
        """Connect to every master on first use; after that, prove each connection alive."""
        if not self._masters:
            await self._connect()
        for pubsub in self._masters.values():
            await pubsub.ping()

    async def _connect(self) -> None:
        # A fresh view of the cluster: a rebuild follows a failure, which may be a failover.
        await self._cluster.initialize()
        await self._cluster.nodes_manager.initialize()
        for node in self._cluster.get_primaries():
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, **without_retries(node.connection_kwargs)
            )
            client = aioredis.Redis.from_pool(pool)
            self._clients.append(client)
            pubsub = client.pubsub()
            await pubsub.ping()  # connects: get_message needs a connection to read from
            self._masters[node.name] = pubsub
            reader = asyncio.create_task(self._read(pubsub), name=f"sharded-pubsub-{node.name}")
            self._readers.add(reader)

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    self._inbox.put_nowait(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._inbox.put_nowait(exc)

    def _master_of(self, channel: str) -> aioredis.client.PubSub:
        why = "a master that joined after this connection was made"
        try:
            node = self._cluster.get_node_from_key(channel)
        except redis_errors.RedisClusterException as error:  # e.g. a slot no master covers
            node, why = None, str(error)
        pubsub = self._masters.get(node.name) if node is not None else None
        if pubsub is None:
            lost = redis_errors.ConnectionError(
                f"no connection to the master of {channel!r}: {why}"
            )
            # Also through the inbox: a subscribe made in the background may be swallowed,
            # and the channel must not stay unheard until some other reconnect.
            self._inbox.put_nowait(lost)
            raise lost
        return pubsub

    def _by_slot(self, channels: tuple[str, ...]) -> list[list[str]]:
        # An SSUBSCRIBE naming channels of two slots is refused (CROSSSLOT): one per slot,
        # so a queue's channels, which share its hash tag, still go in one command.
        slots: dict[int, list[str]] = {}
        for channel in channels:
            slots.setdefault(self._cluster.keyslot(channel), []).append(channel)
        return list(slots.values())

    async def subscribe(self, *channels: str) -> None:
        for group in self._by_slot(channels):
            await self._master_of(group[0]).ssubscribe(*group)

    async def unsubscribe(self, *channels: str) -> None:
        for group in self._by_slot(channels):
            for channel in group:
                self._dropping[channel.encode()] += 1
            await self._master_of(group[0]).sunsubscribe(*group)

    async def get_message(
        self, ignore_subscribe_messages: bool = True, timeout: float | None = None
    ) -> Message | None:
        """The next message from any master, as a classic one ("message"); None after
        ``timeout`` seconds without one."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                item = await asyncio.wait_for(self._inbox.get(), left)
            except TimeoutError:
                return None
            if isinstance(item, BaseException):
                if isinstance(item, redis_errors.ConnectionError | redis_errors.TimeoutError):
                    raise item
                raise redis_errors.ConnectionError(f"sharded pub/sub failed: {item!r}") from item
            kind = item["type"]
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if kind == "smessage":
                return {**item, "type": "message"}
            if kind == "sunsubscribe":
                channel = item["channel"]
                channel = channel.encode() if isinstance(channel, str) else channel
                if self._dropping[channel] <= 0:
                    raise redis_errors.ConnectionError(f"the cluster moved channel {channel!r}")
                self._dropping[channel] -= 1
            if not ignore_subscribe_messages:
                return item

    async def aclose(self) -> None:
        for reader in self._readers:
            reader.cancel()
        if self._readers:
            await asyncio.wait(self._readers, timeout=1.0)
        for pubsub in self._masters.values():
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed in newer redis-py
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._masters.clear()
        self._clients.clear()
