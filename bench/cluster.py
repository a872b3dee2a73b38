"""Handled messages per second with the queues on one Redis Cluster master or spread over three.

Run from the repository root (needs redis-server 7+ and redis-cli on PATH)::

    .venv/bin/python -m bench.cluster            # full run, about 90 seconds
    .venv/bin/python -m bench.cluster --quick    # a smaller run, well under a minute
    .venv/bin/python -m bench.cluster --json out.json
    .venv/bin/python -m bench.cluster --rounds 5    # more alternating rounds

Both clusters run side by side for the whole run (``support/redis_cluster.py``, free loopback
ports, no replicas, no persistence): one of a single master that owns every slot, one of three
masters. Each gets the same queues (names chosen so the three-master cluster holds the same
number on each master), the same number of real ``python -m worker`` processes with
``REDIS_CLUSTER=1`` (handler ``bench.handlers:noop``, so the figure is the queue's and the
worker's cost, not a handler's), and the same messages.

One measurement:

1. Fill every queue with a client that does not publish, in batches of 1000
   (``send_messages``), before any worker runs. The fill's rate is reported as "sent msgs/s"
   (one client, one thread).
2. Start the workers. Each looks at its queues once at start, so no notification is needed.
   The clock runs from the first receive any of them makes (a queue's ``totalrecv`` grows,
   polled every 2 ms) until every queue is empty (every message received, handled and
   deleted); handled msgs/s is the messages over that time. The workers start together, but
   one may still be starting (importing, connecting) when the other takes the first
   message: that slightly lowers both layouts' figures alike.
3. Stop the workers (SIGTERM; each must exit 0).

Measurements alternate between the two clusters, ``--rounds`` times each, so drift in what
else the machine does falls on both. CPU time of the workers, of the redis-servers and of the
whole machine during step 2 is printed: on a small machine the workers' Python, not Redis, is
the limit, and then spreading the queues over more masters cannot raise the figure.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.harness import (
    BenchError,
    CpuWindow,
    Deadline,
    arguments,
    exit_on_sigterm,
    machine,
    save_json,
    table,
)
from rsmq_core import RSMQ
from support.redis_cluster import RedisCluster, unavailable
from support.workers import WorkerProcess

BODY = "{}"
BATCH = 1000


@dataclass(frozen=True)
class Plan:
    queues_per_master: int  # on the three-master cluster; the same total on the other
    messages_per_queue: int
    workers: int
    concurrency: int
    rounds: int
    budget_seconds: float

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(2, 1000, 2, 32, 1, 120.0)
        return cls(2, 4000, 2, 32, 3, 600.0)


class Layout:
    """One cluster, its queue names and a client on it."""

    def __init__(self, masters: int, plan: Plan, stack: contextlib.ExitStack) -> None:
        self.masters = masters
        self.cluster = RedisCluster(masters, persistent=False)
        stack.callback(self.cluster.cleanup)
        self.cluster.create()
        self.quiet = RSMQ.from_url(self.cluster.url, ns="bench", cluster=True)
        stack.callback(self.quiet.close)

    @property
    def name(self) -> str:
        return f"{self.masters} master{'s' if self.masters > 1 else ''}"

    def server_pids(self) -> list[int]:
        return [node.proc.pid for node in self.cluster.nodes if node.proc is not None]


def measure(layout: Layout, names: list[str], plan: Plan, deadline: Deadline) -> dict[str, Any]:
    ns = layout.quiet.ns
    n = plan.messages_per_queue
    fill_start = time.perf_counter()
    for name in names:
        for i in range(0, n, BATCH):
            layout.quiet.send_messages(name, [BODY] * min(BATCH, n - i))
    fill_seconds = time.perf_counter() - fill_start
    if any(layout.quiet.get_queue_attributes(q).msgs != n for q in names):
        raise BenchError("the queues did not hold exactly the messages sent")
    workers = [
        WorkerProcess(
            layout.cluster.url,
            ns,
            cluster=True,
            queues=",".join(names),
            handler="bench.handlers:noop",
            concurrency=plan.concurrency,
            heartbeat=3600,
            log_level="WARNING",
        )
        for _ in range(plan.workers)
    ]

    def received() -> bool:
        return any(layout.quiet.get_queue_attributes(q).totalrecv > before[q] for q in names)

    def emptied() -> bool:
        return all(layout.quiet.get_queue_attributes(q).msgs == 0 for q in names)

    try:
        before = {q: layout.quiet.get_queue_attributes(q).totalrecv for q in names}
        for w in workers:
            w.start(ready=False)
        deadline.until(received, 60, "the workers' first receive", interval=0.002)
        cpu = CpuWindow([w.pid for w in workers], layout.server_pids())
        start = time.perf_counter()
        deadline.until(emptied, 300, f"{len(names) * n} messages handled", interval=0.01)
        seconds = time.perf_counter() - start
        worker_cpu, redis_cpu, machine_cpu = (used / seconds for used in cpu.used())
        for w in workers:
            if w.stop(timeout=15) != 0:
                raise BenchError(f"a worker exited badly:\n{w.output()}")
    finally:
        for w in workers:
            w.cleanup()
    handled = len(names) * n
    return {
        "layout": layout.name,
        "queues": len(names),
        "handled": handled,
        "seconds": seconds,
        "handled_per_s": handled / seconds,
        "sent_per_s": handled / fill_seconds,
        # Less sensitive than handled_per_s to what else the machine runs meanwhile.
        "handled_per_worker_cpu_s": handled / seconds / worker_cpu if worker_cpu else 0.0,
        "worker_cpus": worker_cpu,
        "redis_cpus": redis_cpu,
        "machine_cpus_busy": machine_cpu,
    }


def run(plan: Plan, deadline: Deadline) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        layouts = [Layout(1, plan, stack), Layout(3, plan, stack)]
        # The same names on both: on three masters they spread evenly, on one they all share.
        names = layouts[1].cluster.queue_names("bench", plan.queues_per_master)
        for layout in layouts:
            for name in names:
                layout.quiet.create_queue(name)
        for round_ in range(plan.rounds):
            for layout in layouts if round_ % 2 == 0 else reversed(layouts):
                result = measure(layout, names, plan, deadline)
                result["round"] = round_ + 1
                results.append(result)
                print(
                    f"   round {round_ + 1}, {layout.name}: {result['handled_per_s']:,.0f}"
                    f" handled msgs/s ({result['handled_per_worker_cpu_s']:,.0f} per worker"
                    f" CPU-second, {result['sent_per_s']:,.0f} sent/s); workers"
                    f" {result['worker_cpus']:.2f} CPUs, redis-servers"
                    f" {result['redis_cpus']:.2f}, machine {result['machine_cpus_busy']:.2f}",
                    flush=True,
                )
    return results


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_layout: dict[str, dict[str, float]] = {}
    for name in ("1 master", "3 masters"):
        runs = [r for r in results if r["layout"] == name]
        by_layout[name] = {
            key: statistics.median(r[key] for r in runs)
            for key in (
                "handled_per_s",
                "handled_per_worker_cpu_s",
                "sent_per_s",
                "worker_cpus",
                "redis_cpus",
                "machine_cpus_busy",
            )
        }
    return by_layout


def report(info: dict[str, Any], plan: Plan, results: list[dict[str, Any]]) -> str:
    med = summary(results)
    rows = [
        [
            name,
            f"{m['handled_per_s']:,.0f}",
            f"{m['handled_per_worker_cpu_s']:,.0f}",
            f"{m['sent_per_s']:,.0f}",
            f"{m['worker_cpus']:.2f}",
            f"{m['redis_cpus']:.2f}",
            f"{m['machine_cpus_busy']:.2f}",
            f"{m['machine_cpus_busy'] - m['worker_cpus'] - m['redis_cpus']:.2f}",
        ]
        for name, m in med.items()
    ]
    ratio = med["3 masters"]["handled_per_s"] / med["1 master"]["handled_per_s"]
    send_ratio = med["3 masters"]["sent_per_s"] / med["1 master"]["sent_per_s"]
    key = "handled_per_worker_cpu_s"
    cpu_ratio = med["3 masters"][key] / med["1 master"][key]
    queues = plan.queues_per_master * 3
    lines = [
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Redis {info['redis']}, Python"
        f" {info['python']}, redis-py {info['redis_py']}, load average before"
        f" {info['loadavg'][0]:.2f}.",
        f"{queues} queues x {plan.messages_per_queue:,} messages, {plan.workers} worker"
        f" processes x CONCURRENCY {plan.concurrency}, handler that does nothing; median of"
        f" {plan.rounds} round(s) each, alternating.",
        "",
        table(
            [
                "layout",
                "handled msgs/s",
                "per worker CPU-second",
                "sent msgs/s (batches)",
                "worker CPUs",
                "redis-server CPUs",
                "machine CPUs busy",
                "of which others",
            ],
            rows,
        ),
        "",
        f"3 masters / 1 master: handled {ratio:.2f}x, per worker CPU-second {cpu_ratio:.2f}x,"
        f" sent {send_ratio:.2f}x.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments("python -m bench.cluster", __doc__, "a smaller run")
    parser.add_argument("--rounds", type=int, help="measurements per layout (default 3)")
    args = parser.parse_args(argv)
    if args.rounds is not None and not 1 <= args.rounds <= 20:
        parser.error(f"--rounds must be between 1 and 20, not {args.rounds}")
    reason = unavailable()
    if reason is not None:
        print(f"bench.cluster: cannot run a Redis Cluster here: {reason}", file=sys.stderr)
        return 2
    exit_on_sigterm()
    plan = Plan.make(args.quick)
    if args.rounds is not None:
        budget = plan.budget_seconds * args.rounds / plan.rounds
        plan = replace(plan, rounds=args.rounds, budget_seconds=budget)
    deadline = Deadline(plan.budget_seconds)
    info = machine()
    print(f"== handled msgs/s, queues on 1 vs 3 masters ({asdict(plan)})", flush=True)
    try:
        results = run(plan, deadline)
    except BenchError as e:
        print(f"bench.cluster: {e}", file=sys.stderr)
        return 1
    if args.json:
        data = {"machine": info, "plan": asdict(plan), "runs": results}
        save_json(args.json, data)
    print()
    print(report(info, plan, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
