"""Throughput of rsmq_core next to Node RSMQ 0.12 and PyRSMQ, all on one redis-server.

Run from the repository root::

    .venv/bin/python -m bench.core              # full run, about two minutes
    .venv/bin/python -m bench.core --quick      # a smaller run, a few seconds
    .venv/bin/python -m bench.core --json out.json

The script starts its own redis-server on a free loopback port (``support.redis_server``) and
stops it at the end. Every client and mode warms up on a queue of its own first; then each
operation is timed on a fresh queue with a fixed number of messages. Queues that are received
from or popped are filled beforehand, outside the timing, and every queue is checked afterwards
(all sent, or all consumed).

Operations: ``send`` (one message per call), ``receive+delete`` (receive a message, then delete
it) and ``pop``. Modes: one caller awaiting each call (sequential), 50 callers at once (threads
for the sync client, coroutines for AsyncRSMQ, promises for Node), and rsmq_core's batch calls
(``send_messages``, ``receive_messages`` + ``delete_messages``, ``pop_messages``, 100 messages a
call). Node RSMQ needs ``node`` and the rsmq package in ``.node/node_modules`` (or the folder
named by RSMQ_NODE_MODULES); PyRSMQ comes with ``pip install -e '.[bench]'``. A client that is
missing is left out with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from bench.harness import exit_on_sigterm
from rsmq_core import RSMQ, AsyncRSMQ
from support.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
NODE_SCRIPT = REPO / "bench" / "node_rsmq.js"
NODE_MODULES = Path(os.environ.get("RSMQ_NODE_MODULES", REPO / ".node" / "node_modules"))

NS = "bench"
BODY = "x" * 100
CONCURRENCY = 50
BATCH = 100
OPS = ("send", "recv_del", "pop")
OP_TITLES = {"send": "send", "recv_del": "receive+delete", "pop": "pop"}
REFERENCE = "node-conc"  # the row every ratio is taken against
REDIS_TIMEOUT = 10.0  # seconds one Redis call may take before the bench gives up
NODE_TIMEOUT = 300.0  # seconds one Node run may take

# (row, op, factor): the row's figure must be at least factor x Node RSMQ's 50-concurrent one.
TARGETS = [
    ("async-conc", "send", 1.0),
    ("async-conc", "recv_del", 1.0),
    ("async-batch", "send", 3.0),
    ("async-batch", "recv_del", 3.0),
    ("async-batch", "pop", 3.0),
]


class QueueRanDry(RuntimeError):
    """A receive or pop found no message although the queue was filled for the job."""


@dataclass(frozen=True)
class Job:
    op: str
    qname: str
    n: int


class Runner:
    """One client in one mode: warms up on one queue, then times each job."""

    ops: tuple[str, ...] = OPS

    def measure(self, warmup: Job, jobs: Sequence[Job]) -> dict[str, float]:
        """Seconds taken by each job, by op."""
        raise NotImplementedError


# Python clients --------------------------------------------------------------------------------


class PyRunner(Runner):
    """A Python client: ``open``, warm up and time with ``run``, then ``close``."""

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, op: str, qname: str, n: int) -> None:
        raise NotImplementedError

    def measure(self, warmup: Job, jobs: Sequence[Job]) -> dict[str, float]:
        self.open()
        try:
            # Send the warm-up messages, then share them out among the consuming ops.
            self.run("send", warmup.qname, warmup.n)
            consumers = [op for op in self.ops if op != "send"]
            for op in consumers:
                self.run(op, warmup.qname, warmup.n // len(consumers))
            seconds = {}
            for job in jobs:
                start = time.perf_counter()
                self.run(job.op, job.qname, job.n)
                seconds[job.op] = time.perf_counter() - start
            return seconds
        finally:
            self.close()


def sync_step(client: RSMQ, op: str, qname: str) -> Callable[[], None]:
    """One message's worth of ``op`` with rsmq_core's RSMQ."""

    def send() -> None:
        client.send_message(qname, BODY)

    def recv_del() -> None:
        msg = client.receive_message(qname)
        if msg is None:
            raise QueueRanDry(qname)
        client.delete_message(qname, msg.id)

    def pop() -> None:
        if client.pop_message(qname) is None:
            raise QueueRanDry(qname)

    return {"send": send, "recv_del": recv_del, "pop": pop}[op]


def sync_batch_step(client: RSMQ, op: str, qname: str) -> Callable[[int], None]:
    """``count`` messages' worth of ``op`` in batch calls with rsmq_core's RSMQ."""

    def send(count: int) -> None:
        client.send_messages(qname, [BODY] * count)

    def recv_del(count: int) -> None:
        msgs = client.receive_messages(qname, count)
        if len(msgs) < count:
            raise QueueRanDry(qname)
        client.delete_messages(qname, [m.id for m in msgs])

    def pop(count: int) -> None:
        if len(client.pop_messages(qname, count)) < count:
            raise QueueRanDry(qname)

    return {"send": send, "recv_del": recv_del, "pop": pop}[op]


def run_batches(n: int, step: Callable[[int], None]) -> None:
    for start in range(0, n, BATCH):
        step(min(BATCH, n - start))


def run_threads(n: int, threads: int, step: Callable[[], None]) -> None:
    """``threads`` threads share a budget of ``n`` calls of ``step``."""
    lock = threading.Lock()
    left = n
    errors: list[BaseException] = []
    stop = threading.Event()  # set on the first error, or when the main thread is interrupted

    def worker() -> None:
        nonlocal left
        try:
            while not stop.is_set():
                with lock:
                    if left == 0:
                        return
                    left -= 1
                step()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(min(threads, n))]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        stop.set()
    if errors:
        raise errors[0]


class SyncRunner(PyRunner):
    """rsmq_core's RSMQ: ``seq`` (one caller), ``threads`` (50 sharing a client) or ``batch``."""

    def __init__(self, url: str, mode: str) -> None:
        self.url = url
        self.mode = mode

    def open(self) -> None:
        self.client = RSMQ.from_url(self.url, ns=NS, socket_timeout=REDIS_TIMEOUT)

    def close(self) -> None:
        self.client.close()

    def run(self, op: str, qname: str, n: int) -> None:
        if self.mode == "batch":
            run_batches(n, sync_batch_step(self.client, op, qname))
            return
        step = sync_step(self.client, op, qname)
        if self.mode == "threads":
            run_threads(n, CONCURRENCY, step)
        else:
            for _ in range(n):
                step()


def async_step(client: AsyncRSMQ, op: str, qname: str) -> Callable[[], Awaitable[None]]:
    """One message's worth of ``op`` with AsyncRSMQ."""

    async def send() -> None:
        await client.send_message(qname, BODY)

    async def recv_del() -> None:
        msg = await client.receive_message(qname)
        if msg is None:
            raise QueueRanDry(qname)
        await client.delete_message(qname, msg.id)

    async def pop() -> None:
        if await client.pop_message(qname) is None:
            raise QueueRanDry(qname)

    return {"send": send, "recv_del": recv_del, "pop": pop}[op]


def async_batch_step(client: AsyncRSMQ, op: str, qname: str) -> Callable[[int], Awaitable[None]]:
    """``count`` messages' worth of ``op`` in batch calls with AsyncRSMQ."""

    async def send(count: int) -> None:
        await client.send_messages(qname, [BODY] * count)

    async def recv_del(count: int) -> None:
        msgs = await client.receive_messages(qname, count)
        if len(msgs) < count:
            raise QueueRanDry(qname)
        await client.delete_messages(qname, [m.id for m in msgs])

    async def pop(count: int) -> None:
        if len(await client.pop_messages(qname, count)) < count:
            raise QueueRanDry(qname)

    return {"send": send, "recv_del": recv_del, "pop": pop}[op]


async def run_coroutines(n: int, concurrency: int, step: Callable[[], Awaitable[None]]) -> None:
    """``concurrency`` coroutines share a budget of ``n`` calls; each awaits one at a time."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await step()

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, n)):
            group.create_task(worker())


class AsyncRunner(PyRunner):
    """rsmq_core's AsyncRSMQ: ``seq`` (one coroutine), ``conc`` (50 coroutines) or ``batch``."""

    def __init__(self, url: str, mode: str) -> None:
        self.url = url
        self.mode = mode

    def open(self) -> None:
        self.loop = asyncio.Runner()
        self.client = self.loop.run(self._connect())

    async def _connect(self) -> AsyncRSMQ:
        return AsyncRSMQ.from_url(self.url, ns=NS, socket_timeout=REDIS_TIMEOUT)

    def close(self) -> None:
        try:
            self.loop.run(self.client.aclose())
        finally:
            self.loop.close()

    def run(self, op: str, qname: str, n: int) -> None:
        self.loop.run(self._run(op, qname, n))

    async def _run(self, op: str, qname: str, n: int) -> None:
        if self.mode == "batch":
            step = async_batch_step(self.client, op, qname)
            for start in range(0, n, BATCH):
                await step(min(BATCH, n - start))
            return
        concurrency = CONCURRENCY if self.mode == "conc" else 1
        await run_coroutines(n, concurrency, async_step(self.client, op, qname))


class PyRSMQRunner(PyRunner):
    """PyRSMQ (the ``rsmq`` module on PyPI as PyRSMQ): blocking, one caller."""

    def __init__(self, port: int) -> None:
        self.port = port

    def open(self) -> None:
        from rsmq import RedisSMQ

        self.queue = RedisSMQ(
            host="127.0.0.1", port=self.port, ns=NS, options={"socket_timeout": REDIS_TIMEOUT}
        )

    def close(self) -> None:
        self.queue.client.close()

    def run(self, op: str, qname: str, n: int) -> None:
        queue = self.queue
        for _ in range(n):
            if op == "send":
                queue.sendMessage(qname=qname, message=BODY).execute()
            elif op == "recv_del":
                msg = queue.receiveMessage(qname=qname).execute()
                queue.deleteMessage(qname=qname, id=msg["id"]).execute()
            else:
                queue.popMessage(qname=qname).execute()


def pyrsmq_version() -> str | None:
    """PyRSMQ's version, or None when it is not installed."""
    try:
        import rsmq

        if not hasattr(rsmq, "RedisSMQ"):
            return None
        return metadata.version("PyRSMQ")
    except (ImportError, metadata.PackageNotFoundError):
        return None


# Node RSMQ -------------------------------------------------------------------------------------


class NodeRunner(Runner):
    """Node RSMQ 0.12 in a child process (bench/node_rsmq.js), one or 50 promises in flight."""

    def __init__(self, port: int, concurrency: int) -> None:
        self.port = port
        self.concurrency = concurrency

    def measure(self, warmup: Job, jobs: Sequence[Job]) -> dict[str, float]:
        spec = {
            "port": self.port,
            "ns": NS,
            "concurrency": self.concurrency,
            "warmup": {"qname": warmup.qname, "n": warmup.n},
            "jobs": [{"op": j.op, "qname": j.qname, "n": j.n} for j in jobs],
        }
        done = subprocess.run(
            ["node", str(NODE_SCRIPT)],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"node_rsmq.js failed ({done.returncode}):\n{done.stderr}")
        seconds: dict[str, float] = json.loads(done.stdout)["seconds"]
        return seconds


def node_version() -> str | None:
    """Node's version when node and the rsmq package are both there, else None."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "rsmq" / "package.json").is_file():
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def node_rsmq_version() -> str:
    package = json.loads((NODE_MODULES / "rsmq" / "package.json").read_text("utf-8"))
    return str(package["version"])


# The run ---------------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    client: str
    mode: str
    n: int
    runner: Runner
    seconds: dict[str, list[float]] = field(default_factory=dict)  # per op, one per round

    def rate(self, op: str) -> float | None:
        """Messages per second for ``op`` in the best round, or None if this row does not do it."""
        if op not in self.seconds:
            return None
        return self.n / min(self.seconds[op])


class Bench:
    """Makes the queues, runs each row's measurements, checks and removes the queues."""

    def __init__(self, url: str) -> None:
        self.admin = RSMQ.from_url(url, ns=NS, socket_timeout=REDIS_TIMEOUT)
        self.names = itertools.count()

    def close(self) -> None:
        self.admin.close()

    def new_queue(self, fill: int = 0) -> str:
        qname = f"q{next(self.names)}"
        self.admin.create_queue(qname)
        for start in range(0, fill, 1000):
            self.admin.send_messages(qname, [BODY] * min(1000, fill - start))
        return qname

    def measure(self, row: Row) -> None:
        warmup = Job("warmup", self.new_queue(), max(1000, row.n // 10))
        jobs = [
            Job(op, self.new_queue(0 if op == "send" else row.n), row.n) for op in row.runner.ops
        ]
        try:
            seconds = row.runner.measure(warmup, jobs)
            for job in jobs:
                self.check(job)
                row.seconds.setdefault(job.op, []).append(seconds[job.op])
        finally:
            for qname in [warmup.qname, *(job.qname for job in jobs)]:
                self.admin.delete_queue(qname)

    def check(self, job: Job) -> None:
        attrs = self.admin.get_queue_attributes(job.qname)
        expected = job.n if job.op == "send" else 0
        if attrs.msgs != expected or (job.op != "send" and attrs.totalrecv != job.n):
            raise RuntimeError(
                f"{job.op} on {job.qname}: {attrs.msgs} messages left, {attrs.totalrecv} received"
                f" (expected {expected} left, {0 if job.op == 'send' else job.n} received)"
            )


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
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT) as r:
        redis_version = r.info("server")["redis_version"]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "redis": redis_version,
        "python": platform.python_version(),
        "redis-py": metadata.version("redis"),
        "node": node_version(),
        "platform": platform.platform(),
    }


def fmt_rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:,.0f}"


def fmt_ratio(rate: float | None, ref: float | None) -> str:
    return "—" if rate is None or ref is None else f"{rate / ref:.2f}x"


def table(rows: Sequence[Row]) -> str:
    """A Markdown table: msgs/s per op, and the ratio to Node RSMQ's 50-concurrent figure."""
    reference = next((row for row in rows if row.key == REFERENCE), None)
    header = ["client", "mode"]
    for op in OPS:
        header += [f"{OP_TITLES[op]} msgs/s", "vs Node 50"]
    lines = [header]
    for row in rows:
        cells = [row.client, row.mode]
        for op in OPS:
            rate = row.rate(op)
            ref = reference.rate(op) if reference else None
            cells += [fmt_rate(rate), fmt_ratio(rate, ref)]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        padded = [
            cell.ljust(w) if col < 2 else cell.rjust(w)
            for col, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("| " + " | ".join(padded) + " |")
        if i == 0:
            rule = ["-" * w if col < 2 else "-" * (w - 1) + ":" for col, w in enumerate(widths)]
            out.append("| " + " | ".join(rule) + " |")
    return "\n".join(out)


def check_targets(rows: Sequence[Row]) -> list[dict[str, Any]]:
    by_key = {row.key: row for row in rows}
    reference = by_key.get(REFERENCE)
    results = []
    for key, op, factor in TARGETS:
        row = by_key[key]
        rate = row.rate(op)
        ref = reference.rate(op) if reference else None
        verdict = (
            "n/a" if rate is None or ref is None else "PASS" if rate >= factor * ref else "MISS"
        )
        results.append(
            {
                "row": key,
                "op": op,
                "factor": factor,
                "what": f"{row.client} {row.mode} {OP_TITLES[op]} >= {factor:g}x Node",
                "msgs_per_s": rate,
                "node_msgs_per_s": ref,
                "verdict": verdict,
            }
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.core", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds, not minutes)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the raw figures as JSON")
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
        bench = Bench(server.url)
        try:
            for r in range(rounds):
                print(f"round {r + 1} of {rounds}", flush=True)
                # Every other round runs the rows backwards, so no client always goes first.
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
    finally:
        server.cleanup()

    print()
    print(table(rows))
    print()
    targets = check_targets(rows)
    print("targets (against Node RSMQ, 50 concurrent, in this run):")
    for t in targets:
        detail = ""
        if t["verdict"] != "n/a":
            ratio = t["msgs_per_s"] / t["node_msgs_per_s"]
            detail = (
                f": {t['msgs_per_s']:,.0f} vs {t['node_msgs_per_s']:,.0f} msgs/s ({ratio:.2f}x)"
            )
        print(f"  {t['verdict']:4}  {t['what']}{detail}")

    if args.json:
        results = [
            {
                "row": row.key,
                "client": row.client,
                "mode": row.mode,
                "op": op,
                "messages": row.n,
                "seconds_per_round": row.seconds[op],
                "msgs_per_s_per_round": [row.n / s for s in row.seconds[op]],
                "msgs_per_s_best": row.rate(op),
            }
            for row in rows
            for op in row.seconds
        ]
        config = {
            "quick": args.quick,
            "messages_fast": fast,
            "messages_slow": slow,
            "body_bytes": len(BODY),
            "concurrency": CONCURRENCY,
            "batch": BATCH,
            "rounds": rounds,
        }
        report = {"machine": info, "config": config, "results": results, "targets": targets}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nraw figures saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
