"""Handlers for the worker processes of ``bench/workers.py`` (HANDLER=bench.handlers:...).

``record`` notes when the handler started, by this machine's clock (the same clock Redis's
TIME reads, as the benchmark's redis-server runs on this machine): one RPUSH of
"<message id> <epoch ms> <pid>" on ``{ns}:bench:started``, and nothing else. ``noop`` does
nothing at all, for throughput.
"""

from __future__ import annotations

import os
import time

import redis

from worker import Job

_client: redis.Redis | None = None


def started_key(ns: str) -> str:
    return f"{ns}:bench:started"


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _client


_KEY = started_key(os.environ.get("RSMQ_NS", "rsmq"))
_PID = os.getpid()


async def record(job: Job) -> None:
    started = time.time() * 1000
    # A blocking call from the event loop: one loopback round trip (tens of microseconds),
    # cheaper than an asyncio client's, and it only delays this worker's next step.
    _redis().rpush(_KEY, f"{job.id} {started:.3f} {_PID}")


async def noop(job: Job) -> None:
    return None
