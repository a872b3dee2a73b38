"""Realtime and polling workers side by side: latency, idle cost, wasted receives, throughput.

Run from the repository root::

    .venv/bin/python -m bench.workers              # full run, about three minutes
    .venv/bin/python -m bench.workers --quick      # a smaller run, about a minute
    .venv/bin/python -m bench.workers --json out.json

Every configuration (realtime; polling every 1.0 s; polling every 0.1 s) gets a redis-server
of its own (``rsmq_core.embedded.EmbeddedRedis``, a free loopback port), so Redis's
``INFO commandstats`` counts that configuration's calls and nothing else. Its workers are real
``python -m worker`` processes (``support/workers.py``'s WorkerProcess) with default settings
(CONCURRENCY 8, VT 30, LOG_LEVEL INFO) except HEARTBEAT=0.5, so that each worker's counters in
the registry are at most half a second old. The handler, ``bench.handlers:record``, pushes the
time it started onto a Redis list.

For each configuration:

1. *Load*, with 1, then 4, then 8 workers: a sender paced by a monotonic clock sends 200
   messages a second for 10 seconds, one ``send_message`` per message (a realtime RSMQ client,
   so each send PUBLISHes on ``{ns}:rt:{qname}`` as RSMQ does). A message's send time is in
   its id (Redis's clock, microseconds); latency is the handler's start time minus that. A
   short warm-up at the same rate comes first and is not counted.
2. *Receive calls per handled message*: each worker counts its calls of the receive script
   (``receives``; ``empty_receives`` found nothing) and publishes the counters with each
   heartbeat in its registry entry ``{ns}:@workers:{id}``. The benchmark reads every entry
   just before the load (after a heartbeat later than the warm-up) and just after (after a
   heartbeat later than the last delete) and divides the increase by the messages handled.
   Redis's commandstats cannot tell the receive script apart: every script is an EVALSHA
   (send, receive, next_visible, delete, status events); EVALSHA minus the sends is printed
   as "worker scripts/msg" for comparison. The CPU time the workers and the redis-server used
   (``/proc``) is printed per message too, and how busy the (shared) machine was.
3. *Idle*, with the 8 workers and an empty queue: CONFIG RESETSTAT, 5 seconds of nothing,
   INFO commandstats. Commands per second per worker are all calls (INFO and CONFIG aside,
   and Redis counts the commands a script runs as calls too) divided by seconds and workers;
   "of which heartbeat" are the heartbeat's writes; EVALSHA per second are the script calls.

Then *throughput*, on a redis-server of its own: one realtime worker with a handler that does
nothing, for CONCURRENCY 1, 8 and 32. 10,000 messages are put on the queue without a
notification (the idle worker does not look), then one PUBLISH on the queue's channel wakes it;
the time runs from that PUBLISH until the queue is empty (every message handled and deleted).

Everything runs on loopback; every wait has a deadline and the whole run a budget; every
process started here is stopped (SIGTERM, then SIGKILL) before the script ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from bench.handlers import started_key
from bench.harness import (
    BenchError,
    Deadline,
    cpu_seconds,
    exit_on_sigterm,
    machine,
    machine_cpu_seconds,
    pacing,
    percentile,
    table,
    timed,
)
from rsmq_core import RSMQ
from rsmq_core.embedded import EmbeddedRedis
from support.workers import WorkerProcess

NS = "bench"
QUEUE = "jobs"
BODY = "{}"
HEARTBEAT = 0.5
RATE = 200.0  # messages per second during a load phase
T = TypeVar("T")

# Commands a worker's heartbeat sends (one MULTI/EXEC pipeline: SET, ZADD, ZREMRANGEBYSCORE).
HEARTBEAT_COMMANDS = ("multi", "exec", "set", "zadd", "zremrangebyscore")
# Commands of the benchmark itself while it measures an idle window.
OWN_COMMANDS = ("info", "config")

TARGET_P50_MS = 2.0
TARGET_P99_MS = 15.0
TARGET_IDLE_RECEIVES = 0.0
TARGET_RECEIVES_PER_MSG = 1.2
# CPUs used by processes not started here, during a load, above which the report says so.
OTHERS_BUSY_WARNING = 0.25


@dataclass(frozen=True)
class Config:
    name: str
    realtime: bool
    poll_interval: float = 1.0

    def settings(self) -> dict[str, Any]:
        return {
            "realtime": str(self.realtime).lower(),
            "poll_interval": self.poll_interval,
            "heartbeat": HEARTBEAT,
            "log_level": "INFO",
            "handler": "bench.handlers:record",
        }


CONFIGS = (
    Config("realtime", realtime=True),
    Config("polling 1.0 s", realtime=False, poll_interval=1.0),
    Config("polling 0.1 s", realtime=False, poll_interval=0.1),
)


@dataclass(frozen=True)
class Plan:
    load_seconds: float
    warmup_seconds: float
    idle_seconds: float
    worker_counts: tuple[int, ...]
    throughput_messages: int
    concurrencies: tuple[int, ...]
    budget_seconds: float

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(2.0, 0.25, 2.0, (1, 4, 8), 2_000, (1, 8, 32), 150.0)
        return cls(10.0, 0.5, 5.0, (1, 4, 8), 10_000, (1, 8, 32), 330.0)


# Redis helpers ---------------------------------------------------------------------------------


def server_ms(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return seconds * 1000 + micros / 1000


def sent_ms(message_id: str) -> float:
    """A message's send time (epoch ms, Redis's clock): RSMQ ids start with it in base-36 µs."""
    return int(message_id[:-22], 36) / 1000


def commandstats(r: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (or the server's start)."""
    stats: dict[str, Any] = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    names = set(before) | set(after)
    delta = {n: after.get(n, 0) - before.get(n, 0) for n in names}
    return {n: d for n, d in sorted(delta.items()) if d}


def registry(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every registered worker's entry (JSON), by worker id."""
    keys = r.keys(f"{NS}:@workers:*")
    rows = r.mget(keys) if keys else []
    entries = (json.loads(row) for row in rows if row)
    return {e["id"]: e for e in entries}


def queue_size(r: redis.Redis, qname: str = QUEUE) -> int:
    return int(r.zcard(f"{NS}:{qname}"))


# Worker processes ------------------------------------------------------------------------------


class Cluster:
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

    def cpu(self) -> tuple[float, float, float, float]:
        """CPU seconds used so far by the workers, the redis-server, this process, and every
        process on the machine (it is shared: others' load shows in the difference)."""
        server = self.server.proc.pid if self.server.proc is not None else -1
        workers = cpu_seconds([w.pid for w in self.workers])
        own = sum(os.times()[:2])
        return workers, cpu_seconds([server]), own, machine_cpu_seconds()

    def fresh_registry(self, since_ms: float) -> dict[str, dict[str, Any]]:
        """Every worker's entry, once each has heartbeated after ``since_ms``."""
        n = len(self.workers)

        def fresh() -> dict[str, dict[str, Any]] | None:
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


def send_paced(q: RSMQ, rate: float, count: int, deadline: Deadline) -> tuple[list[str], float]:
    """Send ``count`` messages at ``rate`` (see pacing)."""
    ids: list[str] = []
    start = time.monotonic()
    for wait in pacing(rate, count, deadline):
        time.sleep(wait)
        ids.append(q.send_message(QUEUE, BODY))
    return ids, time.monotonic() - start


def counter_deltas(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, int]]:
    deltas = {}
    for wid, entry in after.items():
        old = before.get(wid, {}).get("counters", {})
        deltas[wid] = {k: v - old.get(k, 0) for k, v in entry["counters"].items()}
    return deltas


def drain_timeout(config: Config) -> float:
    return 10 + 3 * (0 if config.realtime else config.poll_interval)


def load_phase(cluster: Cluster, plan: Plan) -> dict[str, Any]:
    """200 msgs/s for the plan's seconds: latency, and receive calls per handled message."""
    r, deadline, key = cluster.r, cluster.deadline, started_key(NS)
    n_workers = len(cluster.workers)
    # Warm-up: each worker's first messages pay for connections and cold code paths.
    warm = max(n_workers * 4, int(RATE * plan.warmup_seconds))
    send_paced(cluster.q, RATE, warm, deadline)
    timeout = drain_timeout(cluster.config)
    deadline.until(lambda: r.llen(key) >= warm, timeout, "the warm-up messages")
    deadline.until(lambda: queue_size(r) == 0, timeout, "the warm-up to be deleted")
    time.sleep(0.2)  # the last status events and follow-up receives
    r.delete(key)
    before = cluster.fresh_registry(server_ms(r))
    stats_before = commandstats(r)
    cpu_before = cluster.cpu()
    start = time.monotonic()

    count = int(RATE * plan.load_seconds)
    ids, send_seconds = send_paced(cluster.q, RATE, count, deadline)
    deadline.until(lambda: r.llen(key) >= count, timeout, f"{count} handler starts")
    deadline.until(lambda: queue_size(r) == 0, timeout, f"{count} deletes")
    cpu_after = cluster.cpu()
    elapsed = time.monotonic() - start
    cpu = [after - before for before, after in zip(cpu_before, cpu_after, strict=True)]
    stats = stats_delta(stats_before, commandstats(r))
    after = cluster.fresh_registry(server_ms(r))

    starts: dict[str, tuple[float, int]] = {}
    for row in r.lrange(key, 0, -1):
        mid, t, pid = row.decode().split()
        starts.setdefault(mid, (float(t), int(pid)))
    missing = [mid for mid in ids if mid not in starts]
    if missing:
        raise BenchError(f"{len(missing)} of {count} messages have no handler start")
    latencies = sorted(starts[mid][0] - sent_ms(mid) for mid in ids)
    per_pid: dict[int, int] = {}
    for mid in ids:
        pid = starts[mid][1]
        per_pid[pid] = per_pid.get(pid, 0) + 1

    deltas = counter_deltas(before, after)
    done = sum(d["done"] for d in deltas.values())
    receives = sum(d["receives"] for d in deltas.values())
    empty = sum(d["empty_receives"] for d in deltas.values())
    if done != count:
        raise BenchError(f"the workers' counters say {done} done, {count} were sent")
    scripts = stats.get("evalsha", 0) - count  # every send is one EVALSHA
    return {
        "workers": n_workers,
        "messages": count,
        "send_rate": count / send_seconds,
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
        "min_ms": latencies[0],
        "receives": receives,
        "empty_receives": empty,
        "receives_per_msg": receives / done,
        "empty_per_msg": empty / done,
        "scripts_per_msg": scripts / done,
        "worker_cpu_ms_per_msg": cpu[0] * 1000 / done,
        "redis_cpu_ms_per_msg": cpu[1] * 1000 / done,
        # Average CPUs busy over the phase: the whole machine, and processes not ours.
        "machine_cpus_busy": cpu[3] / elapsed,
        "others_cpus_busy": max(0.0, cpu[3] - cpu[0] - cpu[1] - cpu[2]) / elapsed,
        # Redis counts the commands a script runs as calls too.
        "commands_per_msg_incl_in_script": sum(stats.values()) / done,
        "commandstats": stats,
        "per_worker": [deltas[w] for w in sorted(deltas)],
        "handled_per_pid": sorted(per_pid.values(), reverse=True),
    }


def idle_phase(cluster: Cluster, plan: Plan) -> dict[str, Any]:
    """An empty queue for the plan's seconds: what do the workers ask Redis meanwhile?"""
    r = cluster.r
    n_workers = len(cluster.workers)
    time.sleep(1.0)  # the last load's status events, deletes and follow-up receives
    before = cluster.fresh_registry(server_ms(r))
    r.config_resetstat()
    start = time.monotonic()
    time.sleep(plan.idle_seconds)
    stats = {n: c for n, c in commandstats(r).items() if n.split("|")[0] not in OWN_COMMANDS}
    seconds = time.monotonic() - start
    after = cluster.fresh_registry(server_ms(r))
    deltas = counter_deltas(before, after)
    beat_seconds = sum(
        (after[w]["last_seen"] - before[w]["last_seen"]) / 1000 for w in after
    ) / len(after)
    total = sum(stats.values())
    heartbeat = sum(stats.get(n, 0) for n in HEARTBEAT_COMMANDS)
    return {
        "workers": n_workers,
        "seconds": seconds,
        "commands_per_s_per_worker": total / seconds / n_workers,
        "heartbeat_per_s_per_worker": heartbeat / seconds / n_workers,
        "evalsha_per_s": stats.get("evalsha", 0) / seconds,
        "evalsha_per_s_per_worker": stats.get("evalsha", 0) / seconds / n_workers,
        # The workers' own count of receive calls, over the heartbeats around the window.
        "counted_receives_per_s": sum(d["receives"] for d in deltas.values()) / beat_seconds,
        "commandstats": stats,
    }


def run_config(config: Config, plan: Plan, deadline: Deadline) -> dict[str, Any]:
    print(f"\n== {config.name}", flush=True)
    with contextlib.ExitStack() as stack:
        cluster = Cluster(config, deadline, stack)
        loads = []
        for n in plan.worker_counts:
            cluster.add_workers(n - len(cluster.workers))
            result = load_phase(cluster, plan)
            loads.append(result)
            print(
                f"   {n} worker(s): p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms,"
                f" {result['receives_per_msg']:.2f} receive calls/msg"
                f" ({result['empty_per_msg']:.2f} empty), sent at {result['send_rate']:.0f}/s,"
                f" {result['machine_cpus_busy']:.2f} CPUs busy"
                f" ({result['others_cpus_busy']:.2f} not ours)",
                flush=True,
            )
        idle = idle_phase(cluster, plan)
        print(
            f"   idle, {idle['workers']} workers: {idle['commands_per_s_per_worker']:.2f}"
            f" commands/s/worker, {idle['evalsha_per_s']:.2f} EVALSHA/s",
            flush=True,
        )
        ends = cluster.stop_workers()
    return {"config": asdict(config), "loads": loads, "idle": idle, "workers": ends}


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
        n = plan.throughput_messages
        for concurrency in plan.concurrencies:
            qname = f"tp{concurrency}"
            q.create_queue(qname)
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

            def emptied(qname: str = qname) -> bool:
                return queue_size(r, qname) == 0

            pids = [w.pid], [server.proc.pid if server.proc is not None else -1]
            cpu_before = cpu_seconds(pids[0]), cpu_seconds(pids[1]), machine_cpu_seconds()
            start = time.perf_counter()
            r.publish(f"{NS}:rt:{qname}", n)
            deadline.until(emptied, 120, f"{n} messages handled", interval=0.002)
            seconds = time.perf_counter() - start
            cpu_after = cpu_seconds(pids[0]), cpu_seconds(pids[1]), machine_cpu_seconds()
            pairs = zip(cpu_before, cpu_after, strict=True)
            worker_cpu, redis_cpu, machine_cpu = ((b - a) / seconds for a, b in pairs)
            w.stop(timeout=10)
            results.append(
                {
                    "concurrency": concurrency,
                    "messages": n,
                    "seconds": seconds,
                    "msgs_per_s": n / seconds,
                    "worker_cpus": worker_cpu,
                    "redis_cpus": redis_cpu,
                    "machine_cpus_busy": machine_cpu,
                }
            )
            print(
                f"   CONCURRENCY {concurrency}: {n / seconds:,.0f} msgs/s, worker"
                f" {worker_cpu:.0%} of a CPU, redis-server {redis_cpu:.0%}",
                flush=True,
            )
    return results


# Report ----------------------------------------------------------------------------------------


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rt = next(r for r in results if r["config"]["realtime"])
    one = next(x for x in rt["loads"] if x["workers"] == 1)
    eight = next((x for x in rt["loads"] if x["workers"] == 8), None)
    checks = [
        (
            "realtime latency p50 <= 2 ms (1 worker, 200 msgs/s)",
            f"{one['p50_ms']:.2f} ms",
            one["p50_ms"] <= TARGET_P50_MS,
        ),
        (
            "realtime latency p99 <= 15 ms (1 worker, 200 msgs/s)",
            f"{one['p99_ms']:.2f} ms",
            one["p99_ms"] <= TARGET_P99_MS,
        ),
        (
            "realtime: 0 receive calls per idle second",
            f"{rt['idle']['evalsha_per_s']:.2f}/s",
            rt["idle"]["evalsha_per_s"] <= TARGET_IDLE_RECEIVES
            and rt["idle"]["counted_receives_per_s"] <= TARGET_IDLE_RECEIVES,
        ),
    ]
    if eight is not None:
        checks.append(
            (
                "realtime: <= 1.2 receive calls per handled message, 8 workers",
                f"{eight['receives_per_msg']:.2f}",
                eight["receives_per_msg"] <= TARGET_RECEIVES_PER_MSG,
            )
        )
    return [{"target": t, "measured": m, "pass": ok} for t, m, ok in checks]


def report(info: dict[str, Any], results: list[dict[str, Any]], tp: list[dict[str, Any]]) -> str:
    out = [
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['platform']}, "
        f"Redis {info['redis']}, Python {info['python']}, redis-py {info['redis_py']}, "
        f"hiredis {info['hiredis']}"
    ]
    if results:
        out += _worker_tables(results)
    if tp:
        out += ["", "Throughput: 1 realtime worker, handler does nothing", ""]
        out.append(
            table(
                [
                    "CONCURRENCY",
                    "messages",
                    "seconds",
                    "msgs/s",
                    "worker CPU",
                    "worker CPU-s per 1,000",
                    "Redis CPU",
                    "CPUs busy",
                ],
                [
                    [
                        str(t["concurrency"]),
                        f"{t['messages']:,}",
                        f"{t['seconds']:.2f}",
                        f"{t['msgs_per_s']:,.0f}",
                        f"{t['worker_cpus']:.0%}",
                        f"{t['worker_cpus'] / t['msgs_per_s'] * 1000:.3f}",
                        f"{t['redis_cpus']:.0%}",
                        f"{t['machine_cpus_busy']:.2f}",
                    ]
                    for t in tp
                ],
            )
        )
    if results:
        out += ["", "Targets", ""]
        out.append(
            table(
                ["target", "measured", "verdict"],
                [
                    [t["target"], t["measured"], "PASS" if t["pass"] else "MISS"]
                    for t in targets(results)
                ],
            )
        )
        busy = [
            f"{res['config']['name']} x{x['workers']}: {x['others_cpus_busy']:.2f}"
            for res in results
            for x in res["loads"]
            if x["others_cpus_busy"] > OTHERS_BUSY_WARNING
        ]
        if busy:
            note = "Note: other processes kept the machine busy during some loads (CPUs not ours)"
            out += ["", f"{note}, so their latencies are less reliable: {', '.join(busy)}"]
    return "\n".join(out)


def _worker_tables(results: list[dict[str, Any]]) -> list[str]:
    out = [
        "",
        f"Latency and idle cost: 1 worker, {RATE:.0f} msgs/s (send -> handler start); idle: "
        f"{results[0]['idle']['workers']} workers, HEARTBEAT={HEARTBEAT}",
        "",
    ]
    rows = []
    for res in results:
        one, idle = res["loads"][0], res["idle"]
        rows.append(
            [
                res["config"]["name"],
                f"{one['p50_ms']:.2f}",
                f"{one['p99_ms']:.2f}",
                f"{one['max_ms']:.1f}",
                f"{idle['commands_per_s_per_worker']:.2f}",
                f"{idle['heartbeat_per_s_per_worker']:.2f}",
                f"{idle['evalsha_per_s_per_worker']:.2f}",
            ]
        )
    out.append(
        table(
            [
                "configuration",
                "p50 ms",
                "p99 ms",
                "max ms",
                "idle cmds/s/worker",
                "of which heartbeat",
                "idle EVALSHA/s/worker",
            ],
            rows,
        )
    )
    out += ["", f"Receive calls per handled message at {RATE:.0f} msgs/s", ""]
    rows = []
    for res in results:
        for x in res["loads"]:
            rows.append(
                [
                    res["config"]["name"],
                    str(x["workers"]),
                    f"{x['send_rate']:.0f}",
                    f"{x['p50_ms']:.2f}",
                    f"{x['p99_ms']:.2f}",
                    f"{x['receives_per_msg']:.2f}",
                    f"{x['empty_per_msg']:.2f}",
                    f"{x['scripts_per_msg']:.2f}",
                    f"{x['worker_cpu_ms_per_msg']:.2f}",
                    f"{x['redis_cpu_ms_per_msg']:.3f}",
                    f"{x['machine_cpus_busy']:.2f}",
                    f"{x['others_cpus_busy']:.2f}",
                ]
            )
    out.append(
        table(
            [
                "configuration",
                "workers",
                "sent/s",
                "p50 ms",
                "p99 ms",
                "receive calls/msg",
                "empty receives/msg",
                "worker scripts/msg",
                "worker CPU ms/msg",
                "Redis CPU ms/msg",
                "CPUs busy",
                "others' CPUs",
            ],
            rows,
        )
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the raw figures as JSON")
    parser.add_argument(
        "--only", choices=["latency", "throughput"], help="run one half of the benchmark"
    )
    args = parser.parse_args(argv)
    plan = Plan.make(args.quick)
    exit_on_sigterm()
    deadline = Deadline(plan.budget_seconds)
    info = machine()
    kind = "quick" if args.quick else "full"
    print(f"worker benchmark ({kind} run), time budget {plan.budget_seconds:.0f} s", flush=True)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    tp: list[dict[str, Any]] = []
    if args.only != "throughput":
        for config in CONFIGS:
            with timed(config.name):
                results.append(run_config(config, plan, deadline))
    if args.only != "latency":
        with timed("throughput"):
            tp = throughput(plan, deadline)
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = time.monotonic() - started
    print()
    print(report(info, results, tp))
    if args.json is not None:
        data = {
            "machine": info,
            "plan": asdict(plan),
            "configs": results,
            "throughput": tp,
            "targets": targets(results) if results else [],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nraw figures: {args.json}")
    return 0 if results or tp else 1


if __name__ == "__main__":
    sys.exit(main())
