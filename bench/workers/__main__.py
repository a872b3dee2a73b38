"""``python -m bench.workers``: the latency half (each configuration in turn), the throughput
half, then the report; see this package's docstring for what each measures."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import bench.workers
from bench.harness import Deadline, arguments, exit_on_sigterm, machine, save_json, timed
from bench.workers.latency import run_config
from bench.workers.plan import CONFIGS, Plan
from bench.workers.report import report, targets
from bench.workers.throughput import throughput


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments(
        "python -m bench.workers", bench.workers.__doc__, "a smaller run (about a minute)"
    )
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
        save_json(args.json, data)
        print(f"\nraw figures: {args.json}")
    return 0 if results or tp else 1


if __name__ == "__main__":
    sys.exit(main())
