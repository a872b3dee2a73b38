"""One configuration on a redis-server of its own: its workers, a sender, and what the
workers say of themselves in the registry.

Each configuration gets a redis-server of its own (``rsmq_core.embedded.EmbeddedRedis``, a
free loopback port), so Redis's ``INFO commandstats`` counts that configuration's calls and
nothing else. Its workers are real ``python -m worker`` processes (``support/workers.py``'s
WorkerProcess) with default settings (CONCURRENCY 8, VT 30, LOG_LEVEL INFO) except
HEARTBEAT=0.5, so that each worker's counters in the registry are at most half a second old.
The handler, ``bench.handlers:record``, pushes the time it started onto a Redis list.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from typing import Any

import redis

from bench.harness import CpuWindow, Deadline
from bench.workers.plan import HEARTBEAT, NS, QUEUE, Config
from rsmq_core import RSMQ
from rsmq_core.embedded import EmbeddedRedis
from support.workers import WorkerProcess

Registry = dict[str, dict[str, Any]]


def server_ms(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return seconds * 1000 + micros / 1000


def registry(r: redis.Redis) -> Registry:
    """Every registered worker's entry (JSON), by worker id."""
    keys = r.keys(f"{NS}:@workers:*")
    rows = r.mget(keys) if keys else []
    entries = (json.loads(row) for row in rows if row)
    return {e["id"]: e for e in entries}


def counter_deltas(before: Registry, after: Registry) -> dict[str, dict[str, int]]:
    """How much each worker's counters grew between two readings of the registry."""
    deltas = {}
    for wid, entry in after.items():
        old = before.get(wid, {}).get("counters", {})
        deltas[wid] = {k: v - old.get(k, 0) for k, v in entry["counters"].items()}
    return deltas


def queue_size(r: redis.Redis, qname: str = QUEUE) -> int:
    return int(r.zcard(f"{NS}:{qname}"))


class Testbed:
    """One configuration: its redis-server, its workers, and a sender."""

    def __init__(self, config: Config, deadline: Deadline, stack: contextlib.ExitStack) -> None:
        self.config = config
        self.deadline = deadline
        self.stack = stack
        self.server = EmbeddedRedis()
        self.server.start()
        stack.callback(self.server.cleanup)
        self.r = redis.Redis.from_url(self.server.url, socket_timeout=10)
        stack.callback(self.r.close)
        # A realtime client: each send PUBLISHes on {ns}:rt:{qname}, as RSMQ does.
        self.q = RSMQ.from_url(self.server.url, ns=NS, realtime=True, socket_timeout=10)
        stack.callback(self.q.close)
        self.q.create_queue(QUEUE)
        self.workers: list[WorkerProcess] = []

    def add_workers(self, n: int) -> None:
        """Start n more workers; wait until each is registered and (realtime) subscribed."""
        new = [WorkerProcess(self.server.url, NS, **self.config.settings()) for _ in range(n)]
        for w in new:
            self.stack.callback(w.cleanup)
            self.workers.append(w)
            w.start(ready=False)
        for w in new:
            w.wait_ready(timeout=min(20.0, max(1.0, self.deadline.left())))
        total = len(self.workers)
        self.deadline.until(lambda: len(registry(self.r)) == total, 10, f"{total} registrations")
        if self.config.realtime:
            channel = f"{NS}:rt:{QUEUE}"
            self.deadline.until(
                lambda: self.r.pubsub_numsub(channel)[0][1] == total, 10, "every subscription"
            )

    def cpu(self) -> CpuWindow:
        """CPU seconds used from now by the workers, the redis-server, this process, and every
        process on the machine (it is shared: others' load shows in the difference)."""
        server = self.server.proc.pid if self.server.proc is not None else -1
        return CpuWindow([w.pid for w in self.workers], [server], [os.getpid()])

    def fresh_registry(self) -> Registry:
        """Every worker's entry, once each has heartbeated after now (Redis's clock)."""
        since_ms = server_ms(self.r)
        n = len(self.workers)

        def fresh() -> Registry | None:
            entries = registry(self.r)
            if len(entries) == n and all(e["last_seen"] > since_ms for e in entries.values()):
                return entries
            return None

        return self.deadline.until(fresh, 5 * HEARTBEAT + 5, "fresh heartbeats")

    def stop_workers(self) -> list[dict[str, Any]]:
        """SIGTERM every worker, wait, and say how each ended (exit code, log warnings)."""
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.signal(signal.SIGTERM)
        ends = []
        for w in self.workers:
            assert w.proc is not None
            try:
                code: int | None = w.proc.wait(10)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                code = None
            lines = w.output().splitlines()
            problems = [line for line in lines if " WARNING " in line or " ERROR " in line]
            ends.append({"pid": w.pid, "exit": code, "problems": problems[:5]})
        return ends
