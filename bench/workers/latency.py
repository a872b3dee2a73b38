"""Realtime and polling workers under the same load, then idle.

For each configuration (realtime; polling every 1.0 s; polling every 0.1 s), on a testbed of
its own (``testbed.py``):

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
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from typing import Any

import redis

from bench.handlers import started_key
from bench.harness import BenchError, Deadline, commandstats, pacing, percentile, stats_delta
from bench.workers.plan import BODY, NS, QUEUE, RATE, Config, Plan
from bench.workers.testbed import Testbed, counter_deltas, queue_size
from rsmq_core import RSMQ

# Commands a worker's heartbeat sends (one MULTI/EXEC pipeline: SET, ZADD, ZREMRANGEBYSCORE).
HEARTBEAT_COMMANDS = ("multi", "exec", "set", "zadd", "zremrangebyscore")
# Commands of the benchmark itself while it measures an idle window.
OWN_COMMANDS = ("info", "config")


def run_config(config: Config, plan: Plan, deadline: Deadline) -> dict[str, Any]:
    """Load with each number of workers in turn, then idle with all of them."""
    print(f"\n== {config.name}", flush=True)
    with contextlib.ExitStack() as stack:
        testbed = Testbed(config, deadline, stack)
        loads = []
        for n in plan.worker_counts:
            testbed.add_workers(n - len(testbed.workers))
            result = load_phase(testbed, plan)
            loads.append(result)
            print(
                f"   {n} worker(s): p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms,"
                f" {result['receives_per_msg']:.2f} receive calls/msg"
                f" ({result['empty_per_msg']:.2f} empty), sent at {result['send_rate']:.0f}/s,"
                f" {result['machine_cpus_busy']:.2f} CPUs busy"
                f" ({result['others_cpus_busy']:.2f} not ours)",
                flush=True,
            )
        idle = idle_phase(testbed, plan)
        print(
            f"   idle, {idle['workers']} workers: {idle['commands_per_s_per_worker']:.2f}"
            f" commands/s/worker, {idle['evalsha_per_s']:.2f} EVALSHA/s",
            flush=True,
        )
        ends = testbed.stop_workers()
    return {"config": asdict(config), "loads": loads, "idle": idle, "workers": ends}


def sent_ms(message_id: str) -> float:
    """A message's send time (epoch ms, Redis's clock): RSMQ ids start with it in base-36 µs."""
    return int(message_id[:-22], 36) / 1000


def send_paced(q: RSMQ, rate: float, count: int, deadline: Deadline) -> tuple[list[str], float]:
    """Send ``count`` messages at ``rate`` (see pacing)."""
    ids: list[str] = []
    start = time.monotonic()
    for wait in pacing(rate, count, deadline):
        time.sleep(wait)
        ids.append(q.send_message(QUEUE, BODY))
    return ids, time.monotonic() - start


def drain_timeout(config: Config) -> float:
    return 10 + 3 * (0 if config.realtime else config.poll_interval)


def warm_up(testbed: Testbed, plan: Plan) -> None:
    """Each worker's first messages pay for connections and cold code paths: not counted."""
    r, deadline, key = testbed.r, testbed.deadline, started_key(NS)
    warm = max(len(testbed.workers) * 4, int(RATE * plan.warmup_seconds))
    send_paced(testbed.q, RATE, warm, deadline)
    timeout = drain_timeout(testbed.config)
    deadline.until(lambda: r.llen(key) >= warm, timeout, "the warm-up messages")
    deadline.until(lambda: queue_size(r) == 0, timeout, "the warm-up to be deleted")
    time.sleep(0.2)  # the last status events and follow-up receives
    r.delete(key)


def handler_starts(r: redis.Redis, ids: list[str]) -> tuple[list[float], list[int]]:
    """Each message's latency (ms, ascending), and how many messages each worker handled
    (most first), from the handler's list of starts."""
    starts: dict[str, tuple[float, int]] = {}
    for row in r.lrange(started_key(NS), 0, -1):
        mid, t, pid = row.decode().split()
        starts.setdefault(mid, (float(t), int(pid)))
    missing = [mid for mid in ids if mid not in starts]
    if missing:
        raise BenchError(f"{len(missing)} of {len(ids)} messages have no handler start")
    latencies = sorted(starts[mid][0] - sent_ms(mid) for mid in ids)
    per_pid: dict[int, int] = {}
    for mid in ids:
        pid = starts[mid][1]
        per_pid[pid] = per_pid.get(pid, 0) + 1
    return latencies, sorted(per_pid.values(), reverse=True)


def load_phase(testbed: Testbed, plan: Plan) -> dict[str, Any]:
    """200 msgs/s for the plan's seconds: latency, and receive calls per handled message."""
    r, deadline, key = testbed.r, testbed.deadline, started_key(NS)
    warm_up(testbed, plan)
    before = testbed.fresh_registry()
    stats_before = commandstats(r)
    cpu = testbed.cpu()
    start = time.monotonic()

    count = int(RATE * plan.load_seconds)
    ids, send_seconds = send_paced(testbed.q, RATE, count, deadline)
    timeout = drain_timeout(testbed.config)
    deadline.until(lambda: r.llen(key) >= count, timeout, f"{count} handler starts")
    deadline.until(lambda: queue_size(r) == 0, timeout, f"{count} deletes")
    worker_cpu, redis_cpu, own_cpu, machine_cpu = cpu.used()
    elapsed = time.monotonic() - start
    stats = stats_delta(stats_before, commandstats(r))
    after = testbed.fresh_registry()
    latencies, handled_per_pid = handler_starts(r, ids)

    deltas = counter_deltas(before, after)
    done = sum(d["done"] for d in deltas.values())
    receives = sum(d["receives"] for d in deltas.values())
    empty = sum(d["empty_receives"] for d in deltas.values())
    if done != count:
        raise BenchError(f"the workers' counters say {done} done, {count} were sent")
    scripts = stats.get("evalsha", 0) - count  # every send is one EVALSHA
    return {
        "workers": len(testbed.workers),
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
        "worker_cpu_ms_per_msg": worker_cpu * 1000 / done,
        "redis_cpu_ms_per_msg": redis_cpu * 1000 / done,
        # Average CPUs busy over the phase: the whole machine, and processes not ours.
        "machine_cpus_busy": machine_cpu / elapsed,
        "others_cpus_busy": max(0.0, machine_cpu - worker_cpu - redis_cpu - own_cpu) / elapsed,
        # Redis counts the commands a script runs as calls too.
        "commands_per_msg_incl_in_script": sum(stats.values()) / done,
        "commandstats": stats,
        "per_worker": [deltas[w] for w in sorted(deltas)],
        "handled_per_pid": handled_per_pid,
    }


def idle_phase(testbed: Testbed, plan: Plan) -> dict[str, Any]:
    """An empty queue for the plan's seconds: what do the workers ask Redis meanwhile?"""
    r = testbed.r
    n_workers = len(testbed.workers)
    time.sleep(1.0)  # the last load's status events, deletes and follow-up receives
    before = testbed.fresh_registry()
    r.config_resetstat()
    start = time.monotonic()
    time.sleep(plan.idle_seconds)
    stats = {n: c for n, c in commandstats(r).items() if n.split("|")[0] not in OWN_COMMANDS}
    seconds = time.monotonic() - start
    after = testbed.fresh_registry()
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
