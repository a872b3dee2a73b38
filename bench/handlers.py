"""Handlers for the worker processes of ``bench/workers/`` (HANDLER=bench.handlers:...).

``record`` notes when the handler started, by this machine's clock (the same clock Redis's
TIME reads, as the benchmark's redis-server runs on this machine): one RPUSH of
"<message id> <epoch ms> <pid>" on ``{ns}:bench:started``, and nothing else. ``noop`` does
nothing at all, for throughput. ``journal`` is the fault-injection soak's (``bench.chaos``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

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


_journal_fd: int | None = None


def _journal() -> int:
    global _journal_fd
    if _journal_fd is None:
        path = Path(os.environ["CHAOS_JOURNAL"]) / f"{_PID}.log"
        _journal_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return _journal_fd


async def journal(job: Job) -> None:
    """Sleep as the body says (``{"n": seq, "ms": m}``), then note the message as handled.

    One line per handled message, "<seq> <id> <rc> <pid> <start> <end>" (epoch seconds), in
    a file of this process's own (``$CHAOS_JOURNAL/<pid>.log``), with one unbuffered write
    before the handler returns, so before the worker deletes the message: once written it
    is in the kernel's hands and survives a kill -9 of this process. A body that is not the
    soak's is noted with seq -1 (the soak counts it as unexpected).
    """
    started = time.time()
    try:
        spec = json.loads(job.body)
        seq, ms = int(spec["n"]), float(spec.get("ms", 0))
    except (ValueError, TypeError, KeyError):
        seq, ms = -1, 0.0
    if ms > 0:
        await asyncio.sleep(ms / 1000)
    line = f"{seq} {job.id} {job.rc} {_PID} {started:.6f} {time.time():.6f}\n"
    os.write(_journal(), line.encode())
