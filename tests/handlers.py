"""Handlers for worker processes under test (HANDLER=tests.handlers:record).

Each handled message is recorded in Redis, under the worker's namespace, as JSON with the
time the handler started; the message body (JSON) says how the handler behaves:
``{"sleep": s}`` takes s seconds, ``{"fail": true}`` always raises (``{"fail": "why"}``
saying why), ``{"fail_below": n}`` raises while the receive count is below n,
``{"fail_while": key}`` raises while that Redis key exists, ``{"hang_first": true}`` blocks
the first receive for an hour (to be killed mid-handler), ``{"result": x}`` returns x (the
job's result).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

import redis

from rsmq_core.connection import ConnectionOptions, sync_client
from worker import Job

_client: redis.Redis | redis.RedisCluster | None = None


def started_key(ns: str) -> str:
    return f"{ns}:test:started"


def done_key(ns: str) -> str:
    return f"{ns}:test:done"


def _redis() -> redis.Redis | redis.RedisCluster:
    global _client
    if _client is None:
        # As the worker connects: the TLS tests' workers need the CA file too.
        # RECORD_REDIS_URL: record straight to Redis when the worker's own URL is a proxy.
        url = os.environ.get("RECORD_REDIS_URL") or os.environ["REDIS_URL"]
        options = ConnectionOptions.from_env(os.environ)
        cluster = os.environ.get("REDIS_CLUSTER", "").lower() in ("1", "true", "yes", "on")
        _client = sync_client(url, options, cluster=cluster)
    return _client


async def record(job: Job) -> Any:
    ns = os.environ.get("RSMQ_NS", "rsmq")
    started = time.time() * 1000
    r = _redis()
    entry = {
        "id": job.id,
        "rc": job.rc,
        "t": started,
        "pid": os.getpid(),
        "body": job.body,
        "raw": base64.b64encode(job.raw).decode(),
    }
    r.rpush(started_key(ns), json.dumps(entry))
    try:
        spec = json.loads(job.body)
    except ValueError:
        spec = {}
    if not isinstance(spec, dict):
        spec = {}
    if spec.get("hang_first") and job.rc == 1:
        await asyncio.sleep(3600)
    if spec.get("sleep"):
        job.progress(0.5)
        await asyncio.sleep(float(spec["sleep"]))
    failing = spec.get("fail_while") and r.exists(str(spec["fail_while"]))
    if spec.get("fail") or failing or job.rc < int(spec.get("fail_below", 0)):
        reason = spec["fail"] if isinstance(spec.get("fail"), str) else "failing as asked"
        raise RuntimeError(f"{reason} (rc={job.rc})")
    r.rpush(done_key(ns), json.dumps(entry))
    return spec.get("result")


def record_sync(job: Job) -> Any:
    """The same, as a plain function: the worker runs it in a thread."""
    return asyncio.run(record(job))


# What the recording handlers kept, read back by the tests.


def records(r: redis.Redis | redis.RedisCluster, key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.lrange(key, 0, -1)]


def started(r: redis.Redis | redis.RedisCluster, ns: str) -> list[dict[str, Any]]:
    return records(r, started_key(ns))


def done(r: redis.Redis | redis.RedisCluster, ns: str) -> list[dict[str, Any]]:
    return records(r, done_key(ns))
