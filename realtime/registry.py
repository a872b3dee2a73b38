"""Live workers: each registers itself and refreshes the entry while it runs.

Keys sit under ``{ns}:@workers``: ``@`` cannot appear in a queue name, so no queue's keys
(RSMQ's or ours) can ever be one of them. On a cluster they are ``{ns}:{@workers}...``: one
hash slot, so a registration stays one transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from rsmq_core.client import AsyncRedis


@dataclass(slots=True)
class WorkerInfo:
    """What the dashboard shows of a worker."""

    id: str
    host: str
    pid: int
    mode: str  # "realtime" or "polling"
    queues: list[str]
    concurrency: int
    started: int  # epoch ms
    last_seen: int = 0  # epoch ms
    counters: dict[str, int] = field(default_factory=dict)
    commands_per_second: float | None = None  # Redis commands it sent, since its last heartbeat


def index_key(redis: AsyncRedis, ns: str) -> str:
    if isinstance(redis, aioredis.RedisCluster):
        return f"{ns}:{{@workers}}"
    return f"{ns}:@workers"


def info_key(redis: AsyncRedis, ns: str, worker_id: str) -> str:
    return f"{index_key(redis, ns)}:{worker_id}"


async def heartbeat(
    redis: AsyncRedis,
    ns: str,
    info: WorkerInfo,
    *,
    ttl: float,
    also: Callable[[Any, str], None] | None = None,
) -> None:
    """Register or refresh a worker; its entry lapses ``ttl`` seconds after the last one.
    ``also(pipe, index)`` adds commands to the same transaction (the worker's metrics)."""
    index = index_key(redis, ns)
    async with redis.pipeline(transaction=True) as pipe:
        register(pipe, redis, ns, info, ttl=ttl)
        if also is not None:
            also(pipe, index)
        await pipe.execute()


def register(pipe: Any, redis: AsyncRedis, ns: str, info: WorkerInfo, *, ttl: float) -> None:
    """Queue a heartbeat's three writes on ``pipe`` (see :func:`heartbeat`)."""
    info.last_seen = int(time.time() * 1000)
    index = index_key(redis, ns)
    pipe.set(info_key(redis, ns, info.id), json.dumps(asdict(info)), px=int(ttl * 1000))
    pipe.zadd(index, {info.id: info.last_seen})
    pipe.zremrangebyscore(index, "-inf", info.last_seen - 10 * ttl * 1000)


async def unregister(redis: AsyncRedis, ns: str, worker_id: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(info_key(redis, ns, worker_id))
        pipe.zrem(index_key(redis, ns), worker_id)
        await pipe.execute()


async def live_workers(redis: AsyncRedis, ns: str) -> list[WorkerInfo]:
    """Every worker whose entry has not lapsed, oldest first."""
    ids: Any = await redis.zrange(index_key(redis, ns), 0, -1)
    if not ids:
        return []
    rows: Any = await redis.mget(info_keys(redis, ns, ids))
    return parse_infos(rows)


def info_keys(redis: AsyncRedis, ns: str, ids: Any) -> list[str]:
    """The entries' keys of the ids an index read gave (bytes or str)."""
    return [info_key(redis, ns, i.decode() if isinstance(i, bytes) else i) for i in ids]


def parse_infos(rows: Any) -> list[WorkerInfo]:
    """The entries an MGET of :func:`info_keys` read (None: lapsed since), oldest first."""
    return sorted(
        (WorkerInfo(**json.loads(row)) for row in rows if row is not None),
        key=lambda w: (w.started, w.id),
    )
