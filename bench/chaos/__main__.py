"""``python -m bench.chaos``: the soak, realtime and polling, appendfsync always and everysec.

    .venv/bin/python -m bench.chaos                  # the full soak: 4 runs of 10,000 messages
    .venv/bin/python -m bench.chaos --small          # what CI runs (tests/test_chaos.py)
    .venv/bin/python -m bench.chaos --mode realtime --fsync always --json out.json

Exit status 1 when any run misses an expectation (printed at the end).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from bench.chaos.soak import FULL, SMALL, Result, run
from bench.harness import exit_on_sigterm, table


def describe(res: Result) -> str:
    v, p = res.verdict, res.plan
    causes = ", ".join(f"{k} {n}" for k, n in sorted(v.causes.items())) or "none"
    lines = [
        f"== {res.mode}, appendfsync {res.fsync}: {p.messages:,} messages, {p.workers} workers,"
        f" {res.seconds:.1f} s",
        f"   sent (acknowledged) {v.acknowledged:,}; failed sends (indeterminate)"
        f" {v.indeterminate}; handled {v.handled:,}; lost {len(v.lost)};"
        f" duplicated {len(v.duplicated)} ({v.extra_copies} extra copies; in flight at: {causes});"
        f" unexplained duplicates {len(v.unexplained)}; unexpected {v.unexpected}"
        f" (indeterminate sends that were stored); phantoms {len(v.phantoms)};"
        f" dead-lettered {len(v.dead_lettered)}; left in queue {res.left_in_queue};"
        f" random connection drops {res.random_drops}",
    ]
    if v.lost:
        lines.append(f"   lost seqs: {v.lost[:20]}")
    lines += [f"   ! {u}" for u in v.unexplained[:10]]
    t0 = res.faults[0].t if res.faults else 0.0
    rows = [
        [
            f"{r.t - t0:.2f}",
            r.kind,
            f"{r.down:.2f}",
            _s(r.first),
            _s(r.all_back),
            str(r.workers) if r.all_back is not None else "",
            r.note,
        ]
        for r in res.recoveries
    ]
    if rows:
        lines.append(
            table(
                ["t s", "fault", "down s", "first handler s", "all back s", "workers", "note"], rows
            )
        )
    if res.worker_log:
        lines.append(
            "   worker log: "
            + "; ".join(f"{n}x {kind!r}" for kind, n in res.worker_log.most_common(8))
        )
    return "\n".join(lines)


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def summary(results: Sequence[Result]) -> str:
    rows = []
    for res in results:
        v = res.verdict
        redis_back = [r.all_back for r in res.recoveries if r.kind == "redis kill"]
        rows.append(
            [
                f"{res.mode}, {res.fsync}",
                f"{v.acknowledged:,}",
                f"{v.handled:,}",
                str(len(v.lost)),
                f"{len(v.duplicated)} / {len(v.unexplained)}",
                str(v.unexpected),
                str(res.left_in_queue),
                ", ".join(_s(x) for x in redis_back),
            ]
        )
    return table(
        [
            "run",
            "sent (acked)",
            "handled",
            "lost",
            "duplicated / unexplained",
            "unexpected",
            "left",
            "all workers back after Redis, s",
        ],
        rows,
    )


def as_json(res: Result) -> dict[str, Any]:
    data = asdict(res)
    data["verdict"]["causes"] = dict(res.verdict.causes)
    data["worker_log"] = dict(res.worker_log)
    data["problems"] = res.problems()
    return data


HARD_CAP_MARGIN = 60  # seconds past a run's budget: stopping workers, reading the journals


def over_time(signum: int, frame: object) -> NoReturn:
    raise SystemExit("bench.chaos: a run went past its hard time cap; everything was stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--small", action="store_true", help="the CI configuration")
    parser.add_argument("--mode", choices=["realtime", "polling"], action="append")
    parser.add_argument("--fsync", choices=["always", "everysec"], action="append")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (journals)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the figures as JSON")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    signal.signal(signal.SIGALRM, over_time)
    plan = SMALL if args.small else FULL
    results = []
    for mode in args.mode or ["realtime", "polling"]:
        for fsync in args.fsync or ["always", "everysec"]:
            # A hard cap over the run's own budget: SystemExit unwinds it, stopping its processes.
            signal.alarm(int(plan.budget) + HARD_CAP_MARGIN)
            res = run(plan, mode, fsync, keep=args.keep)
            signal.alarm(0)
            print(describe(res), flush=True)
            if args.keep:
                print(f"   files: {res.folder}")
            results.append(res)
    print()
    print(summary(results))
    problems = [f"{r.mode}/{r.fsync}: {p}" for r in results for p in r.problems()]
    print(
        "\n" + ("\n".join(f"MISS {p}" for p in problems) if problems else "every expectation met")
    )
    if args.json is not None:
        args.json.write_text(json.dumps([as_json(r) for r in results], indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
