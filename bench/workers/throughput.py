"""Throughput, on a redis-server of its own: one realtime worker with a handler that does
nothing, for CONCURRENCY 1, 8 and 32.

10,000 messages are put on the queue without a notification (the idle worker does not look),
then one PUBLISH on the queue's channel wakes it; the time runs from that PUBLISH until the
queue is empty (every message handled and deleted).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis

from bench.harness import BenchError, CpuWindow, Deadline
from bench.workers.plan import BODY, HEARTBEAT, NS, Plan
from bench.workers.testbed import queue_size
from rsmq_core import RSMQ
from rsmq_core.embedded import EmbeddedRedis
from support.workers import WorkerProcess


def throughput(plan: Plan, deadline: Deadline) -> list[dict[str, Any]]:
    print("\n== throughput (realtime, one worker, a handler that does nothing)", flush=True)
    results = []
    with contextlib.ExitStack() as stack:
        server = EmbeddedRedis()
        server.start()
        stack.callback(server.cleanup)
        r = redis.Redis.from_url(server.url, socket_timeout=10)
        stack.callback(r.close)
        q = RSMQ.from_url(server.url, ns=NS, socket_timeout=10)  # no notifications
        stack.callback(q.close)
        for concurrency in plan.concurrencies:
            result = drain(server, r, q, concurrency, plan.throughput_messages, deadline)
            results.append(result)
            print(
                f"   CONCURRENCY {concurrency}: {result['msgs_per_s']:,.0f} msgs/s, worker"
                f" {result['worker_cpus']:.0%} of a CPU, redis-server {result['redis_cpus']:.0%}",
                flush=True,
            )
    return results


def drain(
    server: EmbeddedRedis, r: redis.Redis, q: RSMQ, concurrency: int, n: int, deadline: Deadline
) -> dict[str, Any]:
    """One worker empties a queue of ``n`` messages it is woken to: how fast, at what CPU."""
    qname = f"tp{concurrency}"
    q.create_queue(qname)
    with contextlib.ExitStack() as stack:
        w = WorkerProcess(
            server.url,
            NS,
            queues=qname,
            realtime="true",
            concurrency=concurrency,
            handler="bench.handlers:noop",
            heartbeat=HEARTBEAT,
            log_level="INFO",
        )
        stack.callback(w.cleanup)
        w.start(ready=False)
        w.wait_ready(timeout=min(20.0, max(1.0, deadline.left())))
        for i in range(0, n, 1000):
            q.send_messages(qname, [BODY] * min(1000, n - i))
        if queue_size(r, qname) != n or q.get_queue_attributes(qname).totalrecv != 0:
            raise BenchError("the worker took messages before it was woken")

        cpu = CpuWindow([w.pid], [server.proc.pid if server.proc is not None else -1])
        start = time.perf_counter()
        r.publish(f"{NS}:rt:{qname}", n)
        deadline.until(lambda: queue_size(r, qname) == 0, 120, f"{n} messages handled", 0.002)
        seconds = time.perf_counter() - start
        worker_cpu, redis_cpu, machine_cpu = (used / seconds for used in cpu.used())
        w.stop(timeout=10)
    return {
        "concurrency": concurrency,
        "messages": n,
        "seconds": seconds,
        "msgs_per_s": n / seconds,
        "worker_cpus": worker_cpu,
        "redis_cpus": redis_cpu,
        "machine_cpus_busy": machine_cpu,
    }
