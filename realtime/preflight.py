"""What a process needs of its Redis ACL user, checked once at start.

An ACL user that lacks a permission fails later and in odd ways: a user without pub/sub has
every SUBSCRIBE refused (the process hears nothing and says it is fine), a read-only one fails
its first receive, one without a queue's ``:events`` keys fails each websocket. So each
process lists the commands it will run, on the keys and channels it will run them on, and
asks Redis at start which of them its user may not run: one line then names them all.

Redis answers with ``redis.acl_check_cmd`` inside a script (Redis 7.0 and later): ACL DRYRUN
would say the same, but is an admin command that a queue's user should not have. A Redis
without it (6.2) is not asked, unless it is a Redis Cluster: cluster mode needs 7.0 (sharded
pub/sub), which is said at once (:class:`UnsupportedServer`). A user that may not run scripts at
all is told so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from rsmq_core import Keys
from rsmq_core.client import AsyncRedis

from .events import events_channel, status_key, stream_key
from .metrics import done_key, metrics_key, pickups_key
from .registry import index_key, info_key

log = logging.getLogger(__name__)

# What the README's rule grants; a message about a missing permission shows it.
GRANT = "+@read +@write +@scripting +@pubsub +@transaction +@connection +time"

_SHA = "0" * 40  # any script: a permission to run one is not about which
_SCRIPT = """
if not redis.acl_check_cmd then return -1 end
local refused, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(ARGV, i + 1, i + n))
  if ok and not allowed then refused[#refused + 1] = i end
  i = i + n + 1
end
return refused
"""


@dataclass(frozen=True, slots=True)
class Need:
    """A command the process will run, with representative arguments, and what it touches."""

    args: tuple[str, ...]
    target: str  # "key K", "channel C" or "" (a command that touches neither)

    @property
    def command(self) -> str:
        return self.args[0].upper() if self.args[0] != "script" else "SCRIPT LOAD"


class CannotUse(Exception):
    """What a process finds at start that no retry can cure: it stops, saying this."""


class UnsupportedServer(CannotUse):
    """The server lacks what the process's mode needs (Redis Cluster mode: Redis 7.0+)."""


class MissingPermissions(CannotUse):
    """The process's ACL user may not run some of what the process needs."""

    def __init__(self, user: str, process: str, missing: Sequence[Need], ns: str) -> None:
        by_target: dict[str, list[str]] = {}
        for need in missing:
            commands = by_target.setdefault(need.target, [])
            if need.command not in commands:
                commands.append(need.command)
        what = "; ".join(
            f"{', '.join(commands)}{f' on {target}' if target else ''}"
            for target, commands in by_target.items()
        )
        self.user, self.missing = user, list(missing)
        super().__init__(
            f"the Redis ACL user {user!r} may not run what the {process} needs: {what}; grant "
            f"them, e.g. ACL SETUSER {user} ~{ns}:* &{ns}:* {GRANT} (see the README)"
        )


def _key(name: str) -> str:
    return f"key {name}"


def _queue_needs(redis: AsyncRedis, ns: str, qname: str) -> list[Need]:
    """A queue's scripts (the commands they run, on the keys they run them on), its events."""
    cluster = isinstance(redis, aioredis.RedisCluster)
    keys = Keys.of(ns, qname, cluster=cluster)
    stream, status = stream_key(keys), status_key(keys, "<id>")
    publish = _publish(redis)
    needs = [
        Need(("evalsha", _SHA, "2", keys.zset, keys.hash), _key(keys.zset)),
        Need(("script", "load", "return 0"), ""),
        Need(("evalsha", _SHA, "2", stream, status), _key(stream)),
    ]
    needs += [Need((c, keys.zset, "0", "x"), _key(keys.zset)) for c in ("zadd", "zrange")]
    needs += [Need((c, keys.zset, "x"), _key(keys.zset)) for c in ("zrem", "zscore")]
    needs += [Need(("zrangebyscore", keys.zset, "0", "1"), _key(keys.zset))]
    needs += [Need(("zcount", keys.zset, "0", "1"), _key(keys.zset))]
    needs += [Need(("zcard", keys.zset), _key(keys.zset))]
    needs += [Need(("zscan", keys.zset, "0"), _key(keys.zset))]
    needs += [Need((c, keys.expired, "x"), _key(keys.expired)) for c in ("sadd", "spop")]
    needs += [Need(("scard", keys.expired), _key(keys.expired))]
    needs += [
        Need((c, keys.hash, "f", "1"), _key(keys.hash)) for c in ("hset", "hsetnx", "hincrby")
    ]
    needs += [
        Need((c, keys.hash, "f"), _key(keys.hash)) for c in ("hget", "hmget", "hdel", "hexists")
    ]
    if not cluster:  # a cluster keeps the queue list out of the scripts (see Keys)
        needs += [Need((c, keys.queues, "x"), _key(keys.queues)) for c in ("sadd", "srem")]
    needs += [
        Need(("xadd", stream, "*", "f", "v"), _key(stream)),
        Need(("xrange", stream, "-", "+"), _key(stream)),
        Need(("set", status, "v"), _key(status)),
        Need(("get", status), _key(status)),
        Need((publish, keys.channel, "1"), f"channel {keys.channel}"),
        Need((publish, events_channel(keys), "1"), f"channel {events_channel(keys)}"),
    ]
    return needs


def _publish(redis: AsyncRedis) -> str:
    return "spublish" if isinstance(redis, aioredis.RedisCluster) else "publish"


def _subscribe(redis: AsyncRedis, channels: Iterable[str]) -> list[Need]:
    command = "ssubscribe" if isinstance(redis, aioredis.RedisCluster) else "subscribe"
    return [Need((command, c), f"channel {c}") for c in channels]


def worker_needs(
    redis: AsyncRedis, ns: str, queues: Iterable[str], worker_id: str, *, realtime: bool
) -> list[Need]:
    """What a worker runs: its queues' scripts and events, the worker registry, and in realtime
    mode a subscription to each queue's channels."""
    index, info = index_key(redis, ns), info_key(redis, ns, worker_id)
    needs = [Need(("ping",), ""), Need(("time",), ""), Need(("multi",), "")]
    needs += [
        Need(("set", info, "v"), _key(info)),
        Need(("del", info), _key(info)),
        Need(("mget", info), _key(info)),
        Need(("zadd", index, "0", "x"), _key(index)),
        Need(("zrange", index, "0", "-1"), _key(index)),
        Need(("zrem", index, "x"), _key(index)),
        Need(("zremrangebyscore", index, "0", "1"), _key(index)),
        Need(("hincrby", metrics_key(index), "f", "1"), _key(metrics_key(index))),
        Need(("hincrbyfloat", metrics_key(index), "f", "1"), _key(metrics_key(index))),
        Need(("lpush", pickups_key(index, "x"), "v"), _key(pickups_key(index, "x"))),
        Need(("ltrim", pickups_key(index, "x"), "0", "1"), _key(pickups_key(index, "x"))),
        Need(("lpush", done_key(index, "x"), "v"), _key(done_key(index, "x"))),
        Need(("ltrim", done_key(index, "x"), "0", "1"), _key(done_key(index, "x"))),
        # the sweep of expired messages lists every queue of the namespace
        Need(("smembers", f"{ns}:QUEUES"), _key(f"{ns}:QUEUES")),
    ]
    for qname in queues:
        needs += _queue_needs(redis, ns, qname)
        keys = Keys.of(ns, qname, cluster=isinstance(redis, aioredis.RedisCluster))
        needs += [Need(("exists", keys.hash), _key(keys.hash))]
        if realtime:
            needs += _subscribe(
                redis, (keys.channel, f"{keys.channel}:receives", keys.pause_channel)
            )
    return needs


def web_needs(redis: AsyncRedis, ns: str, queue: str) -> list[Need]:
    """What the web app runs: the example queue's scripts and events (as a stand-in for every
    queue the API serves), the queue list, the registry (read), and the events' channel."""
    keys = Keys.of(ns, queue, cluster=isinstance(redis, aioredis.RedisCluster))
    index = index_key(redis, ns)
    needs = [Need(("ping",), ""), Need(("time",), "")]
    needs += _queue_needs(redis, ns, queue)
    needs += [
        Need(("smembers", keys.queues), _key(keys.queues)),
        # pause and resume announce on the queue's pause channel
        Need((_publish(redis), keys.pause_channel, "1"), f"channel {keys.pause_channel}"),
        Need(("xrevrange", stream_key(keys), "+", "-"), _key(stream_key(keys))),
        Need(("zrange", index, "0", "-1"), _key(index)),
        Need(("mget", info_key(redis, ns, "x")), _key(info_key(redis, ns, "x"))),
        Need(("hgetall", metrics_key(index)), _key(metrics_key(index))),
        Need(("lrange", pickups_key(index, "x"), "0", "-1"), _key(pickups_key(index, "x"))),
        Need(("lrange", done_key(index, "x"), "0", "-1"), _key(done_key(index, "x"))),
    ]
    return needs + _subscribe(redis, [events_channel(keys)])


def user_of(redis: AsyncRedis) -> str:
    """The ACL user ``redis`` logs in as (from its URL): ``default`` when it names none."""
    kwargs: dict[str, Any] = (
        redis.nodes_manager.connection_kwargs
        if isinstance(redis, aioredis.RedisCluster)
        else redis.connection_pool.connection_kwargs
    )
    return str(kwargs.get("username") or "default")


async def check(redis: AsyncRedis, needs: Sequence[Need], *, process: str, ns: str) -> None:
    """Raise :class:`MissingPermissions` naming each need the connection's user may not run.

    Errors of a Redis that cannot be reached (or refuses the password) go to the caller.
    """
    args: list[str] = []
    starts: dict[int, Need] = {}
    for need in needs:
        starts[len(args) + 1] = need  # Lua counts from 1
        args += [str(len(need.args)), *need.args]
    try:
        refused: Any = await redis.eval(_SCRIPT, 0, *args)
    except redis_errors.NoPermissionError as exc:
        if "eval" not in str(exc).lower():
            raise
        missing = [Need(("eval", "return 0", "0"), "")]
        raise MissingPermissions(user_of(redis), process, missing, ns) from None
    if refused == -1:
        if isinstance(redis, aioredis.RedisCluster):
            # Every queue's notifications are sharded pub/sub there (SPUBLISH, SSUBSCRIBE).
            raise UnsupportedServer(
                "Redis Cluster mode needs Redis 7.0 or later (sharded pub/sub: SPUBLISH, "
                "SSUBSCRIBE), and this cluster's servers are older (no redis.acl_check_cmd)"
            )
        log.debug("Redis has no redis.acl_check_cmd (before 7.0): permissions not checked")
        return
    if refused:
        missing = [starts[int(i)] for i in refused]
        raise MissingPermissions(user_of(redis), process, missing, ns)
