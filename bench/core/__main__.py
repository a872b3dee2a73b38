"""``python -m bench.core``: which rows are measured (client, mode, messages), the rounds over
them, and what is printed; see this package's docstring for what is measured and how."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import redis

import bench.core
from bench.core.async_client import AsyncRunner
from bench.core.measure import Bench, Row
from bench.core.node import NODE_MODULES, NodeRunner, node_rsmq_version, node_version
from bench.core.pyrsmq import PyRSMQRunner, pyrsmq_version
from bench.core.report import OP_TITLES, REFERENCE, check_targets, print_targets, raw_figures, table
from bench.core.runner import BATCH, BODY, CONCURRENCY, REDIS_TIMEOUT
from bench.core.sync_client import SyncRunner
from bench.harness import arguments, cpu_model, exit_on_sigterm, save_json
from support.redis_server import RedisServer


def make_rows(server: RedisServer, fast: int, slow: int) -> tuple[list[Row], list[str]]:
    """The rows to run, and notes on clients left out."""
    url = server.url
    rows = [
        Row("sync-seq", "RSMQ (sync)", "sequential", slow, SyncRunner(url, "seq")),
        Row("sync-threads", "RSMQ (sync)", "50 threads", slow, SyncRunner(url, "threads")),
        Row("sync-batch", "RSMQ (sync)", f"batch {BATCH}", fast, SyncRunner(url, "batch")),
        Row("async-seq", "AsyncRSMQ", "sequential", slow, AsyncRunner(url, "seq")),
        Row("async-conc", "AsyncRSMQ", f"{CONCURRENCY} concurrent", fast, AsyncRunner(url, "conc")),
        Row("async-batch", "AsyncRSMQ", f"batch {BATCH}", fast, AsyncRunner(url, "batch")),
    ]
    notes = []
    if node_version() is None:
        notes.append(f"Node RSMQ left out: no node on PATH or no rsmq in {NODE_MODULES}")
    else:
        name = f"Node RSMQ {node_rsmq_version()}"
        rows.append(Row("node-seq", name, "sequential", slow, NodeRunner(server.port, 1)))
        conc = NodeRunner(server.port, CONCURRENCY)
        rows.append(Row(REFERENCE, name, f"{CONCURRENCY} concurrent", fast, conc))
    version = pyrsmq_version()
    if version is None:
        notes.append("PyRSMQ left out: not installed (pip install -e '.[bench]')")
    else:
        rows.append(
            Row("pyrsmq-seq", f"PyRSMQ {version}", "sequential", slow, PyRSMQRunner(server.port))
        )
    return rows, notes


def machine(url: str) -> dict[str, Any]:
    with redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT) as r:
        redis_version = r.info("server")["redis_version"]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model("unknown"),
        "redis": redis_version,
        "python": platform.python_version(),
        "redis-py": metadata.version("redis"),
        "node": node_version(),
        "platform": platform.platform(),
    }


def run_rounds(url: str, rows: list[Row], rounds: int) -> None:
    """Every row, ``rounds`` times; every other round backwards, so no client always goes
    first."""
    bench = Bench(url)
    try:
        for r in range(rounds):
            print(f"round {r + 1} of {rounds}", flush=True)
            for row in rows if r % 2 == 0 else rows[::-1]:
                started = time.perf_counter()
                bench.measure(row)
                rates = ", ".join(
                    f"{OP_TITLES[op]} {row.n / row.seconds[op][-1]:,.0f}" for op in row.seconds
                )
                took = time.perf_counter() - started
                print(f"  {row.client}, {row.mode}: {rates} msgs/s ({took:.1f}s)", flush=True)
    finally:
        bench.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments(
        "python -m bench.core", bench.core.__doc__, "a smaller run (seconds, not minutes)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds over every row; the best round counts (default 3, quick 1)",
    )
    args = parser.parse_args(argv)
    fast, slow = (2_000, 500) if args.quick else (20_000, 4_000)
    rounds = args.rounds or (1 if args.quick else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    exit_on_sigterm()
    server = RedisServer()
    server.start()
    try:
        info = machine(server.url)
        print(f"rsmq_core benchmark on redis-server {info['redis']} at {server.url}")
        print(
            f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}"
            f" (redis-py {info['redis-py']}), node {info['node'] or '-'}"
        )
        print(
            f"messages per measurement: {fast:,} (concurrent and batch), {slow:,} (sequential,"
            f" threads); body {len(BODY)} bytes; {CONCURRENCY} callers; batches of {BATCH};"
            f" best of {rounds} round(s)"
        )
        rows, notes = make_rows(server, fast, slow)
        for note in notes:
            print(f"note: {note}")
        run_rounds(server.url, rows, rounds)
    finally:
        server.cleanup()

    print()
    print(table(rows))
    print()
    targets = check_targets(rows)
    print_targets(targets)

    if args.json:
        config = {
            "quick": args.quick,
            "messages_fast": fast,
            "messages_slow": slow,
            "body_bytes": len(BODY),
            "concurrency": CONCURRENCY,
            "batch": BATCH,
            "rounds": rounds,
        }
        results = raw_figures(rows)
        save_json(
            args.json, {"machine": info, "config": config, "results": results, "targets": targets}
        )
        print(f"\nraw figures saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
