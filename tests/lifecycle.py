"""A handler module with a startup and a shutdown, for worker processes under test
(HANDLER=tests.lifecycle:handle).

Each call is recorded in Redis (``calls_key``) as JSON: ``["startup", token]``, ``["job", id,
token]`` (the token the job found in ``job.context``) and ``["shutdown", token]``.
STARTUP_FAIL and SHUTDOWN_FAIL in the environment make that hook raise, saying their value.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

import redis

from tests.handlers import _redis
from worker import Job


def calls_key(ns: str) -> str:
    return f"{ns}:test:lifecycle"


def recorded(r: redis.Redis | redis.RedisCluster, ns: str) -> list[list[Any]]:
    return [json.loads(x) for x in r.lrange(calls_key(ns), 0, -1)]


def _record(*call: Any) -> None:
    _redis().rpush(calls_key(os.environ.get("RSMQ_NS", "rsmq")), json.dumps(call))


async def startup(ctx: dict[str, Any]) -> None:
    if why := os.environ.get("STARTUP_FAIL"):
        raise RuntimeError(why)
    ctx["token"] = secrets.token_hex(4)  # stands for a pool: one per process, shared by jobs
    _record("startup", ctx["token"])


def handle(job: Job) -> None:
    _record("job", job.id, job.context["token"])


def shutdown(ctx: dict[str, Any]) -> None:  # sync where startup is async: both kinds run
    _record("shutdown", ctx["token"])
    if why := os.environ.get("SHUTDOWN_FAIL"):
        raise RuntimeError(why)
