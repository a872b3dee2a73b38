"""The web process under load: browser-path latency, HTTP sends/s, websocket clients held at once.

Run from the repository root::

    .venv/bin/python -m bench.web              # full run, under four minutes
    .venv/bin/python -m bench.web --quick      # a smaller run, about a minute
    .venv/bin/python -m bench.web --json out.json

Everything runs on a redis-server of its own (``rsmq_core.embedded.EmbeddedRedis``, a free
loopback port), with real processes: one ``python -m web`` (as the Procfile runs it, with the
app's default settings and LOG_LEVEL=WARNING) and one realtime ``python -m worker``
(tests' ``WorkerProcess``, CONCURRENCY 8) whose handler, ``bench.handlers:noop``, does nothing,
so a message's events are queued, received, processing, done. The clients live in this process,
on one asyncio loop: raw HTTP/1.1 keep-alive connections and a minimal websocket client (RFC 6455,
offering permessage-deflate as browsers do). Both cost a few microseconds a request or frame, far
less than a client library's, so that the server, not the client, is what gets measured.

1. *Browser path*: one websocket subscribed to the worker's queue; POSTs to
   ``/api/queues/jobs/messages`` paced by a monotonic clock (50 a second for 10 seconds, over a
   few keep-alive connections; a short warm-up first, not counted). For each message: POST
   written → 202 read, → "queued" event read, → "done" event read (one clock, this process's).
2. *HTTP sends/s*: 50 keep-alive connections POST one message each after the other for 10
   seconds, to a queue that no worker reads, so every 202's id must still be in Redis
   afterwards (checked one by one). Requests/s and response times; then the same against
   ``bench/bare.py`` (a bare Starlette endpoint doing only the send), the baseline.
3. *Websocket fan-out*: for each row, a fresh web process; N "tabs" (websockets) connect, 50 at
   a time, and subscribe to the worker's queue; then M messages are POSTed at a steady rate
   (4 events each): 50 at 5 a second to 200, 500 and 1000 tabs, then 200 at 50 a second to 20,
   200 and 500 tabs. A tab the server closes reconnects as web/static/app.js does (after 0.5 s,
   doubling) and subscribes with the last event id it saw, so the server replays what it
   missed. Counted: the tabs that got every "queued" and every "done" event (in stream order,
   none twice) within 40 seconds of the last POST (15 for the last row); closes, and those with
   code 1013 (the server's "too slow": more than WS_BUFFER events behind); every delivery's
   latency (receive time minus the event's ``ts``, Redis's clock in whole milliseconds, so up to
   1 ms high); the time from an event's first to its last delivery across the tabs; the web
   process's CPU; its VmRSS from ``/proc`` once started, once the tabs are subscribed and after
   the events, and its peak (VmHWM); what it logged, and how long it took to stop after SIGTERM.
   Within one rate, a size is skipped when a smaller one already lost events.
4. *Subscribe burst*: 300 websockets open on a fresh web process, then send their subscribe
   frames in the same instant (as when frames queue up behind a busy event loop). A second
   later one message is POSTed, and the open tabs that hear of it within 3 s are counted. Then
   the same with 300 new connections subscribing with the newest event id (an empty replay).

Loopback only; every wait has a deadline and the run a time budget; every process started here is
stopped (SIGTERM, then SIGKILL) before the script ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from bench.clients import Http, OnFrame, Pool, Ws
from bench.harness import (
    BenchError,
    Deadline,
    cpu_seconds,
    exit_on_sigterm,
    machine,
    machine_cpu_seconds,
    ms,
    pacing,
    table,
    timed,
    vm_kb,
)
from rsmq_core import RSMQ
from rsmq_core.embedded import EmbeddedRedis, free_port
from support.web import ROOT, WebProcess
from support.workers import WorkerProcess, wait_for

NS = "bench"
QUEUE = "jobs"  # the worker's queue: its messages go queued, received, processing, done
LOAD_QUEUE = "load"  # no worker reads it: every message sent stays in Redis, to be counted
EVENTS_PER_MESSAGE = 4
BODY = json.dumps({"message": "hello"}).encode()
# Seconds a web process gets to stop after SIGTERM before SIGKILL: more than WS_KEEPALIVE (20 s),
# the longest a websocket handler whose cancellation was lost may take to notice its end.
STOP_GRACE = 25.0
KILLED = "KILLED"  # the line WebServer.cleanup adds to the log of a web process it killed
HTTP_POOL = 8  # keep-alive connections a paced sender uses
CONNECT_BATCH = 50  # websockets opened at once (see fanout)
EXCEPTION_RE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception): ")  # a traceback's last line


@dataclass(frozen=True)
class Level:
    """A fan-out run: ``clients`` tabs, ``messages`` sent at ``rate`` a second."""

    clients: int
    messages: int
    rate: float
    settle: float | None = None  # seconds the events may take after the last POST (else Plan's)


@dataclass(frozen=True)
class Plan:
    latency_rate: float
    latency_seconds: float
    http_clients: int
    http_seconds: float
    ws_levels: tuple[Level, ...]
    ws_settle_seconds: float  # the longest one level's events may take to arrive
    burst_tabs: int
    budget_seconds: float

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            levels: tuple[Level, ...] = (
                Level(100, 20, 5.0),
                Level(300, 20, 5.0),
                Level(20, 60, 50.0),
            )
            return cls(50.0, 3.0, 50, 3.0, levels, 15.0, 200, 100.0)
        levels = (
            Level(200, 50, 5.0),
            Level(500, 50, 5.0),
            Level(1000, 50, 5.0),
            Level(20, 200, 50.0),
            Level(200, 200, 50.0, settle=15.0),
            # 100,000 copies a second due: more than one process delivers, so its capacity shows
            Level(500, 200, 50.0, settle=20.0),
        )
        return cls(50.0, 10.0, 50, 10.0, levels, 40.0, 300, 240.0)


class CpuMeter:
    """CPU seconds used by the web process, by this one (the clients), by the other processes
    started here (worker, redis-server), and by the whole machine, which is shared: the rest
    is other people's."""

    def __init__(self, web_pid: int, helpers: Sequence[int]) -> None:
        self.web_pid, self.helpers = web_pid, list(helpers)
        self.start = self.snap()
        self.started = time.monotonic()

    def snap(self) -> tuple[float, float, float, float]:
        own = sum(os.times()[:2])
        return cpu_seconds([self.web_pid]), own, cpu_seconds(self.helpers), machine_cpu_seconds()

    def read(self) -> dict[str, float]:
        """Average CPUs busy since this meter was made."""
        seconds = time.monotonic() - self.started
        web, own, helpers, machine = (
            (b - a) / seconds for a, b in zip(self.start, self.snap(), strict=True)
        )
        return {
            "web_cpus": web,
            "bench_cpus": own,
            "worker_redis_cpus": helpers,
            "machine_cpus_busy": machine,
            "others_cpus": max(0.0, machine - web - own - helpers),
        }


# Processes -------------------------------------------------------------------------------------


class WebServer(WebProcess):
    """tests' WebProcess (url, health check, stop) with the app's default settings.

    WebProcess's own constructor sets WS_KEEPALIVE=1 for its keep-alive test: a ping a second on
    every idle socket, which would be 1,000 pings a second with 1,000 idle clients. This one
    keeps the default (20 s), logs to a file, and starts without waiting, so that the caller can
    arrange its cleanup first.
    """

    def __init__(self, redis_url: str, ns: str, *, bare: bool = False, **settings: str) -> None:
        """``bare``: bench.bare's endpoint instead of the app (the HTTP sends' baseline)."""
        self.port = free_port()
        self.stop_seconds = 0.0
        env = dict(
            os.environ,
            REDIS_URL=redis_url,
            RSMQ_NS=ns,
            QUEUE=QUEUE,
            PYTHONPATH=str(ROOT),
            HOST="127.0.0.1",
            PORT=str(self.port),
            LOG_LEVEL="WARNING",
            **settings,
        )
        env.pop("WS_KEEPALIVE", None)
        self.log = tempfile.NamedTemporaryFile(prefix="bench-web-", suffix=".log", delete=False)
        # `python -m web`, as the Procfile runs it: its uvicorn settings (websocket
        # implementation, no per-message deflate, limits) are part of what is measured.
        command = [sys.executable, "-m", "web"]
        if bare:
            command[2:] = [
                "uvicorn",
                "--factory",
                "bench.bare:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
        self.proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self) -> WebServer:
        wait_for(self.healthy, timeout=20, what="the web app to answer")
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def cleanup(self) -> list[str]:
        """Stop the server (SIGTERM, then SIGKILL after STOP_GRACE seconds); what it logged,
        with a last line saying so if it had to be killed."""
        killed = False
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                killed = True
        self.stop_seconds = time.monotonic() - start
        lines = self.output().splitlines()
        if killed:
            lines.append(f"{KILLED}: still running {STOP_GRACE:g} s after SIGTERM")
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)
        return lines


# Clients ---------------------------------------------------------------------------------------


async def subscribed(port: int, on_frame: OnFrame) -> Ws:
    async with asyncio.timeout(15):
        ws = await Ws.connect(port, on_frame)
        ws.send_json({"type": "subscribe", "queue": QUEUE})
        await asyncio.shield(ws.subscribed)
    return ws


async def paced(
    pool: Pool, path: str, rate: float, count: int, deadline: Deadline
) -> tuple[list[tuple[float, float, int, bytes]], float]:
    """POST ``count`` messages, message i at start + i/rate by the monotonic clock, each on a
    free connection of the pool (not waiting for the answers before the next is due)."""
    tasks: list[asyncio.Task[tuple[float, float, int, bytes]]] = []
    start = time.monotonic()
    for wait in pacing(rate, count, deadline):
        if wait:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(pool.post(path, BODY)))
    sent_seconds = time.monotonic() - start
    async with asyncio.timeout(max(1.0, min(30.0, deadline.left()))):
        answers = await asyncio.gather(*tasks)
    bad = [a for a in answers if a[2] != 202]
    if bad:
        raise BenchError(
            f"{len(bad)} of {count} POSTs were refused, e.g. {bad[0][2]} {bad[0][3]!r}"
        )
    return answers, sent_seconds


def ids_of(answers: Sequence[tuple[float, float, int, bytes]]) -> list[str]:
    return [json.loads(a[3])["id"] for a in answers]


# 1. Browser path -------------------------------------------------------------------------------


async def browser_path(port: int, plan: Plan, deadline: Deadline) -> dict[str, Any]:
    """POST → 202, → "queued" event, → "done" event, at a steady rate."""
    arrivals: dict[tuple[str, str], float] = {}

    def on_frame(ws: Ws, data: dict[str, Any], now: float) -> None:
        at = time.perf_counter()
        if data["type"] == "event":
            event = data["event"]
            arrivals.setdefault((event["id"], event["status"]), at)

    path = f"/api/queues/{QUEUE}/messages"
    ws = await subscribed(port, on_frame)
    pool = await Pool(port).open(HTTP_POOL)
    try:
        # Warm-up: the first requests pay for connections, scripts and cold code paths.
        warm, _ = await paced(pool, path, plan.latency_rate, 25, deadline)
        await deadline.until_async(
            lambda: all((i, "done") in arrivals for i in ids_of(warm)),
            20,
            "the warm-up's done events",
        )
        count = int(plan.latency_rate * plan.latency_seconds)
        cpu_before = cpu_seconds([os.getpid()])
        answers, seconds = await paced(pool, path, plan.latency_rate, count, deadline)
        ids = ids_of(answers)
        await deadline.until_async(
            lambda: all((i, "done") in arrivals for i in ids), 20, f"{count} done events"
        )
    finally:
        ws.close()
        await pool.close()
    by_status: dict[str, list[float]] = {"queued": [], "received": [], "done": []}
    for mid, (sent, _, _, _) in zip(ids, answers, strict=True):
        for status, values in by_status.items():
            values.append(arrivals[mid, status] - sent)
    return {
        "messages": count,
        "send_rate": count / seconds,
        "post_to_202": ms([answered - sent for sent, answered, _, _ in answers]),
        **{f"post_to_{status}": ms(values) for status, values in by_status.items()},
        # The web process records "queued" in the background after the send; the worker may
        # record "received" (or even "done") first, and the stream keeps the order of writing.
        "queued_after_received": sum(
            1 for mid in ids if arrivals[mid, "queued"] > arrivals[mid, "received"]
        ),
        "queued_after_done": sum(
            1 for mid in ids if arrivals[mid, "queued"] > arrivals[mid, "done"]
        ),
        "extensions": ws.extensions,
        "bench_cpu": cpu_seconds([os.getpid()]) - cpu_before,
    }


# 2. HTTP sends/s -------------------------------------------------------------------------------


async def http_load(
    port: int, web_pid: int, helpers: Sequence[int], r: redis.Redis, plan: Plan, deadline: Deadline
) -> dict[str, Any]:
    """``http_clients`` connections POST back to back for ``http_seconds``."""
    path = f"/api/queues/{LOAD_QUEUE}/messages"
    conns = [await Http.open(port) for _ in range(plan.http_clients)]
    times: list[float] = []
    ids: list[str] = []
    refused: list[tuple[int, bytes]] = []
    stop = time.monotonic() + plan.http_seconds

    async def client(conn: Http) -> None:
        while time.monotonic() < stop:
            sent = time.perf_counter()
            conn.write_post(path, BODY)
            status, data = await conn.read_response()
            times.append(time.perf_counter() - sent)
            if status == 202:
                ids.append(json.loads(data)["id"])
            else:
                refused.append((status, data))

    cpu = CpuMeter(web_pid, helpers)
    start = time.monotonic()
    try:
        async with asyncio.timeout(plan.http_seconds + min(30.0, max(1.0, deadline.left()))):
            await asyncio.gather(*(client(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    seconds = time.monotonic() - start
    cpus = cpu.read()
    # Every 202's id must be a message in the queue (no worker reads it).
    with r.pipeline(transaction=False) as pipe:
        for mid in ids:
            pipe.zscore(f"{NS}:{LOAD_QUEUE}", mid)
        scores = pipe.execute()
    missing = sum(1 for s in scores if s is None)
    zcard = int(r.zcard(f"{NS}:{LOAD_QUEUE}"))
    return {
        "clients": plan.http_clients,
        "seconds": seconds,
        "requests": len(times),
        "accepted": len(ids),
        "refused": len(refused),
        "refused_example": repr(refused[0]) if refused else None,
        "requests_per_s": len(times) / seconds,
        **ms(times),
        "ids_missing_in_redis": missing,
        "zcard": zcard,
        "distinct_ids": len(set(ids)),
        **cpus,
    }


# 3. Websocket fan-out --------------------------------------------------------------------------


# What a tab calls with each event it counts (its id, the event, when it came).
OnDelivery = Callable[[str, dict[str, Any], float], None]


class Tab:
    """One browser tab: a websocket subscribed to the queue that, like web/static/app.js,
    reconnects after 0.5 s (doubling up to 10 s) when it is closed, subscribing with the last
    event id it saw so that the server replays what it missed. ``on_delivery`` hears of each
    event it counts, with the time it came."""

    def __init__(self, port: int, on_delivery: OnDelivery | None = None) -> None:
        self.port = port
        self.on_delivery = on_delivery
        self.ws: Ws | None = None
        self.counts = dict.fromkeys(("queued", "received", "processing", "done"), 0)
        self.last_eid: str | None = None
        self.last_key = (0, 0)
        self.repeated = 0  # events at or before the last one seen: duplicates, or out of order
        self.closes: list[int | None] = []
        self.failed_reconnects: list[str] = []

    async def connect(self) -> None:
        """Open a websocket and subscribe (with ``after`` when an event was seen)."""
        async with asyncio.timeout(15):
            await self.open()
            await self.subscribe()

    async def open(self) -> None:
        self.ws = await Ws.connect(self.port, self.on_frame)

    async def subscribe(self) -> None:
        assert self.ws is not None
        frame: dict[str, Any] = {"type": "subscribe", "queue": QUEUE}
        if self.last_eid is not None:
            frame["after"] = self.last_eid
        self.ws.send_json(frame)
        try:
            await asyncio.shield(self.ws.subscribed)
        except BaseException:
            self.ws.close()
            raise

    async def run(self, stop: asyncio.Event) -> None:
        """Reconnect whenever the server closes the connection, until ``stop``."""
        retry = 0.5
        while True:
            assert self.ws is not None
            code = await self.ws.closed
            if stop.is_set():
                return
            self.closes.append(code)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry)
                if stop.is_set():
                    return
                retry = min(retry * 2, 10.0)
                try:
                    await self.connect()
                except Exception as exc:  # refused, closed, timed out: try again later
                    self.failed_reconnects.append(f"{type(exc).__name__}: {exc}")
                    continue
                retry = 0.5
                break

    def on_frame(self, ws: Ws, frame: dict[str, Any], now: float) -> None:
        if frame["type"] != "event" or frame["eid"] is None:
            return
        event, eid = frame["event"], frame["eid"]
        if self.event(eid, event["status"]) and self.on_delivery is not None:
            self.on_delivery(eid, event, now)

    def event(self, eid: str, status: str) -> bool:
        """Count an event; False for one at or before the last seen."""
        key = eid_key(eid)
        if key <= self.last_key:
            self.repeated += 1
            return False
        self.last_key, self.last_eid = key, eid
        self.counts[status] = self.counts.get(status, 0) + 1
        return True

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


def eid_key(eid: str) -> tuple[int, int]:
    ms_, _, seq = eid.partition("-")
    return int(ms_), int(seq)


class Fanout:
    """Every delivery's latency and, per event, its first and last delivery time."""

    def __init__(self) -> None:
        self.latencies = array("d")  # seconds: receive time minus the event's ts
        self.spread: dict[str, list[float]] = {}  # eid -> [first, last] delivery time

    def delivered(self, eid: str, event: dict[str, Any], now: float) -> None:
        self.latencies.append(now - event["ts"] / 1000)
        span = self.spread.get(eid)
        if span is None:
            self.spread[eid] = [now, now]
        else:
            span[1] = now


def log_problems(lines: Sequence[str]) -> dict[str, Any]:
    """uvicorn's ERROR and WARNING lines in a web log, and the exceptions, by kind."""
    exceptions = Counter(line for line in lines if EXCEPTION_RE.match(line))
    return {
        "errors": sum(1 for line in lines if line.startswith(("ERROR", "WARNING"))),
        "exceptions": dict(exceptions.most_common(5)),
        "killed": any(line.startswith(KILLED) for line in lines),
    }


async def fanout(
    server: EmbeddedRedis, helpers: Sequence[int], level: Level, settle: float, deadline: Deadline
) -> dict[str, Any]:
    """N tabs on a fresh web process; M messages; who got what, how fast, at what cost."""
    n, m = level.clients, level.messages
    log: list[str] = []
    with contextlib.ExitStack() as stack:
        web = WebServer(server.url, NS)
        stack.callback(lambda: log.extend(web.cleanup()))
        await asyncio.to_thread(web.wait_ready)
        await asyncio.sleep(0.5)  # settle after the start
        rss_idle = vm_kb(web.pid)
        collector = Fanout()
        tabs = [Tab(web.port, collector.delivered) for _ in range(n)]
        failures: list[str] = []
        start = time.monotonic()
        for i in range(0, n, CONNECT_BATCH):
            batch = tabs[i : i + CONNECT_BATCH]
            results = await asyncio.gather(*(t.connect() for t in batch), return_exceptions=True)
            failures += [f"{type(r).__name__}: {r}" for r in results if r is not None]
        connect_seconds = time.monotonic() - start
        live = [
            t
            for t in tabs
            if t.ws is not None and t.ws.subscribed.done() and not t.ws.subscribed.exception()
        ]
        stop = asyncio.Event()
        runners = [asyncio.create_task(t.run(stop)) for t in live]
        try:
            await asyncio.sleep(0.5)
            rss_subscribed = vm_kb(web.pid)
            pool = await Pool(web.port).open(HTTP_POOL)
            cpu = CpuMeter(web.pid, helpers)
            start = time.monotonic()
            path = f"/api/queues/{QUEUE}/messages"
            try:
                _, send_seconds = await paced(pool, path, level.rate, m, deadline)
            finally:
                await pool.close()
            sent_at = time.monotonic() - start

            def settled() -> bool:
                return all(t.counts["queued"] >= m and t.counts["done"] >= m for t in live)

            with contextlib.suppress(BenchError):
                await deadline.until_async(settled, settle, "every tab's events")
            seconds = time.monotonic() - start
            cpus = cpu.read()
            # What the web process logged while the events flowed, not at the teardown
            logged = web.output().splitlines()
            rss_after, rss_peak = vm_kb(web.pid), vm_kb(web.pid, "VmHWM")
        finally:
            stop.set()
            for t in tabs:
                t.close()
            for task in runners:
                task.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
    complete = [t for t in live if t.counts["queued"] == m and t.counts["done"] == m]
    closes = [code for t in live for code in t.closes]
    delivered = sum(sum(t.counts.values()) for t in live)
    return {
        **asdict(level),
        "connected": len(live),
        "connect_failures": len(failures),
        "connect_failure_example": failures[0] if failures else None,
        "connect_seconds": connect_seconds,
        "send_rate": m / send_seconds,
        "send_seconds": sent_at,
        "complete": len(complete),
        "cut_too_slow": sum(1 for t in live if 1013 in t.closes),
        "closes": len(closes),
        "close_codes": {str(c): closes.count(c) for c in sorted(set(closes), key=str)},
        "failed_reconnects": sum(len(t.failed_reconnects) for t in live),
        "failed_reconnect_examples": sorted({e for t in live for e in t.failed_reconnects})[:5],
        "repeated": sum(t.repeated for t in live),
        "events_expected": len(live) * m * EVENTS_PER_MESSAGE,
        "events_delivered": delivered,
        "deliveries_needed_per_s": len(live) * level.rate * EVENTS_PER_MESSAGE,
        "seconds": seconds,
        "deliveries_per_s": delivered / seconds,
        "latency": ms(list(collector.latencies)),
        "spread": ms([last - first for first, last in collector.spread.values()]),
        "rss_idle_kb": rss_idle,
        "rss_subscribed_kb": rss_subscribed,
        "rss_after_kb": rss_after,
        "rss_peak_kb": rss_peak,
        **cpus,
        "extensions": live[0].ws.extensions if live and live[0].ws else "",
        "web_log": log_problems(logged),
        "web_log_at_teardown": log_problems(log[len(logged) :]),
        "web_stop_seconds": web.stop_seconds,
    }


# 4. Subscribe burst ----------------------------------------------------------------------------


async def post_one(port: int) -> str:
    conn = await Http.open(port)
    try:
        conn.write_post(f"/api/queues/{QUEUE}/messages", BODY)
        status, data = await conn.read_response()
    finally:
        await conn.close()
    if status != 202:
        raise BenchError(f"POST refused: {status} {data!r}")
    mid: str = json.loads(data)["id"]
    return mid


async def burst(
    server: EmbeddedRedis, r: redis.Redis, n: int, deadline: Deadline
) -> dict[str, Any]:
    """N open websockets subscribe in the same instant, as when their subscribe frames queue up
    behind a busy event loop (a reconnect wave during a fan-out): first new subscriptions, then,
    on new connections, subscriptions with the newest event id (an empty replay each)."""
    log: list[str] = []
    rounds = []
    with contextlib.ExitStack() as stack:
        web = WebServer(server.url, NS)
        stack.callback(lambda: log.extend(web.cleanup()))
        await asyncio.to_thread(web.wait_ready)
        await asyncio.sleep(0.5)
        newest = r.xrevrange(f"{NS}:{QUEUE}:events", count=1)
        seen = 0
        tabs: list[Tab] = []
        try:
            for after in (None, newest[0][0].decode() if newest else "0-0"):
                tabs = [Tab(web.port) for _ in range(n)]
                for i in range(0, n, CONNECT_BATCH):
                    await asyncio.gather(*(t.open() for t in tabs[i : i + CONNECT_BATCH]))
                for t in tabs:
                    t.last_eid = after
                start = time.monotonic()
                async with asyncio.timeout(30):
                    got = await asyncio.gather(
                        *(t.subscribe() for t in tabs), return_exceptions=True
                    )
                seconds = time.monotonic() - start
                await asyncio.sleep(1.0)
                # Does each open tab still get events? One message, and its "queued" event.
                still_open = [t for t in tabs if t.ws and not t.ws.closed.done()]
                await post_one(web.port)

                def heard(tabs: list[Tab] = still_open) -> bool:
                    return all(t.counts["queued"] for t in tabs)

                with contextlib.suppress(BenchError):
                    await deadline.until_async(heard, 3.0, "the tabs to hear of a message")
                logged = web.output().splitlines()
                rounds.append(
                    {
                        "subscribe": "with after" if after else "new",
                        "tabs": n,
                        "subscribed": sum(1 for x in got if x is None),
                        "failures": dict(Counter(type(x).__name__ for x in got if x is not None)),
                        "still_open": len(still_open),
                        "live": sum(1 for t in still_open if t.counts["queued"]),
                        "seconds": seconds,
                        "web_log": log_problems(logged[seen:]),
                    }
                )
                seen = len(logged)
                for t in tabs:
                    t.close()
                await asyncio.sleep(0.5)
        finally:
            for t in tabs:
                t.close()
    return {
        "tabs": n,
        "rounds": rounds,
        "web_log": log_problems(log),
        "web_stop_seconds": web.stop_seconds,
    }


# Report ----------------------------------------------------------------------------------------


def report(info: dict[str, Any], results: dict[str, Any]) -> str:
    out = [
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['platform']}, "
        f"Redis {info['redis']}, Python {info['python']}, uvicorn {info['uvicorn']}, "
        f"starlette {info['starlette']}, websockets {info['websockets']}, "
        f"redis-py {info['redis_py']}"
    ]
    if (b := results.get("browser")) is not None:
        out += _browser_table(b)
    if (h := results.get("http")) is not None:
        out += _http_table(h, results.get("http_bare"))
    if fans := results.get("fanout"):
        out += _fanout_table(fans)
    if (u := results.get("burst")) is not None:
        out += _burst_table(u)
    if (log := results.get("web_log")) and log["errors"]:
        out += [
            "",
            f"Web process of parts 1 and 2: {log['errors']} errors logged: {log['exceptions']}",
        ]
    return "\n".join(out)


def _browser_table(b: dict[str, Any]) -> list[str]:
    rows = [
        [label, f"{b[key]['p50_ms']:.2f}", f"{b[key]['p99_ms']:.2f}", f"{b[key]['max_ms']:.1f}"]
        for label, key in (
            ("POST -> 202 response", "post_to_202"),
            ("POST -> queued event", "post_to_queued"),
            ("POST -> received event", "post_to_received"),
            ("POST -> done event", "post_to_done"),
        )
    ]
    return [
        "",
        f"1. Browser path: {b['messages']} POSTs at {b['send_rate']:.0f}/s, one websocket "
        f"subscribed to {QUEUE!r} ({b['extensions'] or 'no compression'})",
        "",
        table(["from the POST being written", "p50 ms", "p99 ms", "max ms"], rows),
        "",
        f'The "queued" event came after "received" for {b["queued_after_received"]} of '
        f'{b["messages"]} messages, after "done" for {b["queued_after_done"]}.',
    ]


def _http_table(h: dict[str, Any], bare: dict[str, Any] | None) -> list[str]:
    header = [
        "server",
        "clients",
        "requests",
        "202",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "202 ids in Redis",
        "web CPU",
        "bench CPU",
        "others' CPUs",
    ]
    rows = [
        [
            name,
            str(x["clients"]),
            f"{x['requests']:,}",
            f"{x['accepted']:,}",
            f"{x['requests_per_s']:,.0f}",
            f"{x['p50_ms']:.2f}",
            f"{x['p99_ms']:.2f}",
            f"{x['max_ms']:.1f}",
            f"{x['accepted'] - x['ids_missing_in_redis']:,}",
            f"{x['web_cpus']:.0%}",
            f"{x['bench_cpus']:.0%}",
            f"{x['others_cpus']:.2f}",
        ]
        for name, x in (("the app", h), ("bare endpoint", bare))
        if x is not None
    ]
    ratio = []
    if bare is not None:
        ratio = [
            "",
            f"The app's requests/s: {h['of_bare']:.2f}x the bare endpoint's "
            "(bench/bare.py: the same send, nothing else), in the same run.",
        ]
    return [
        "",
        f"2. HTTP sends/s: keep-alive clients POSTing back to back for {h['seconds']:.1f} s to "
        f"queue {LOAD_QUEUE!r} (no worker reads it)",
        "",
        table(header, rows),
        *ratio,
    ]


def _fanout_table(fans: list[dict[str, Any]]) -> list[str]:
    mb = 1024.0
    header = [
        "tabs",
        "messages",
        "deliveries/s due",
        "delivered/s",
        "got all",
        "cut (1013)",
        "closes",
        "events delivered",
        "seconds",
        "latency p50 ms",
        "p99 ms",
        "first->last p99 ms",
        "RSS idle MB",
        "subscribed MB",
        "after MB",
        "peak MB",
        "KB/tab",
        "web CPU",
        "bench CPU",
        "others' CPUs",
        "stop s",
    ]
    rows = [
        [
            str(f["clients"]),
            f"{f['messages']} @ {f['rate']:g}/s",
            f"{f['deliveries_needed_per_s']:,.0f}",
            f"{f['deliveries_per_s']:,.0f}",
            f"{f['complete']}/{f['connected']}",
            str(f["cut_too_slow"]),
            str(f["closes"]),
            f"{f['events_delivered']:,}/{f['events_expected']:,}",
            f"{f['seconds']:.1f}",
            f"{f['latency']['p50_ms']:,.0f}",
            f"{f['latency']['p99_ms']:,.0f}",
            f"{f['spread']['p99_ms']:,.0f}",
            f"{f['rss_idle_kb'] / mb:.0f}",
            f"{f['rss_subscribed_kb'] / mb:.0f}",
            f"{f['rss_after_kb'] / mb:.0f}",
            f"{f['rss_peak_kb'] / mb:.0f}",
            f"{(f['rss_subscribed_kb'] - f['rss_idle_kb']) / max(1, f['connected']):.0f}",
            f"{f['web_cpus']:.0%}",
            f"{f['bench_cpus']:.0%}",
            f"{f['others_cpus']:.2f}",
            f"{f['web_stop_seconds']:.1f}"
            + (" killed" if f["web_log_at_teardown"]["killed"] else ""),
        ]
        for f in fans
    ]
    out = [
        "",
        f"3. Websocket fan-out: N tabs subscribed to {QUEUE!r}, a fresh web process for each "
        f"row ({fans[0]['extensions'] or 'no compression'}), {EVENTS_PER_MESSAGE} events a "
        "message; a tab the server closes reconnects as app.js does, with its last event id",
        "",
        table(header, rows),
    ]
    notes = []
    for f in fans:
        if f["connect_failures"]:
            notes.append(
                f"{f['clients']} tabs: {f['connect_failures']} could not connect, "
                f"e.g. {f['connect_failure_example']}"
            )
        for when, key in (("meanwhile", "web_log"), ("at the teardown", "web_log_at_teardown")):
            if f[key]["errors"]:
                row = f"{f['clients']} tabs, {f['messages']} @ {f['rate']:g}/s"
                notes.append(
                    f"{row}: web log {when}: {f[key]['errors']} errors, {f[key]['exceptions']}"
                )
    return out + (["", *notes] if notes else [])


def _burst_table(u: dict[str, Any]) -> list[str]:
    rows = [
        [
            x["subscribe"],
            str(x["tabs"]),
            str(x["subscribed"]),
            str(x["still_open"]),
            str(x["live"]),
            f"{x['seconds']:.1f}",
            str(x["web_log"]["errors"]),
        ]
        for x in u["rounds"]
    ]
    header = [
        "subscribe",
        "frames at once",
        "subscribed",
        "open 1 s later",
        "of which get events",
        "seconds",
        "web errors meanwhile",
    ]
    return [
        "",
        f"4. Subscribe burst: {u['tabs']} open websockets send their subscribe frames at once "
        "(a fresh web process): new subscriptions, then with the newest event id (a replay)",
        "",
        table(header, rows),
        "",
        f"Web log, all told: {u['web_log']['errors']} errors, {u['web_log']['exceptions']}; "
        f"the web process stopped {u['web_stop_seconds']:.1f} s after SIGTERM"
        + (" (killed)" if u["web_log"]["killed"] else ""),
    ]


def versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("uvicorn", "starlette", "websockets", "h11")}


async def run(
    server: EmbeddedRedis,
    web: WebServer,
    helpers: list[int],
    r: redis.Redis,
    plan: Plan,
    deadline: Deadline,
    only: str | None,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if only in (None, "browser"):
        print("\n== 1. browser path", flush=True)
        with timed("browser path"):
            b = results["browser"] = await browser_path(web.port, plan, deadline)
        done = b["post_to_done"]
        print(
            f"   POST -> done p50 {done['p50_ms']:.2f} ms, p99 {done['p99_ms']:.2f} ms", flush=True
        )
    if only in (None, "http"):
        print("\n== 2. HTTP sends/s", flush=True)
        with timed("HTTP sends/s"):
            h = await http_load(web.port, web.pid, helpers, r, plan, deadline)
        results["http"] = h
        print(
            f"   {h['requests_per_s']:,.0f} requests/s, p50 {h['p50_ms']:.2f} ms, "
            f"p99 {h['p99_ms']:.2f} ms, {h['ids_missing_in_redis']} ids missing",
            flush=True,
        )
        bare = WebServer(server.url, NS, bare=True)
        try:
            await asyncio.to_thread(bare.wait_ready)
            with timed("HTTP sends/s, bare endpoint"):
                b = await http_load(bare.port, bare.pid, helpers, r, plan, deadline)
        finally:
            bare.cleanup()
        results["http_bare"] = b
        h["of_bare"] = h["requests_per_s"] / b["requests_per_s"]
        print(
            f"   bare endpoint: {b['requests_per_s']:,.0f} requests/s, p50 {b['p50_ms']:.2f} "
            f"ms; the app at {h['of_bare']:.2f}x of it",
            flush=True,
        )
    results["web_log"] = log_problems(web.output().splitlines())
    if only in (None, "fanout"):
        print("\n== 3. websocket fan-out", flush=True)
        results["fanout"] = []
        failed: list[Level] = []
        for level in plan.ws_levels:
            name = f"{level.clients} tabs, {level.messages} messages at {level.rate:g}/s"
            if any(f.rate == level.rate and f.clients < level.clients for f in failed):
                print(f"   {name}: skipped, fewer tabs at this rate already lost events")
                continue
            settle = level.settle or plan.ws_settle_seconds
            if deadline.left() < settle + 25:
                print(f"   {name}: skipped, the time budget is nearly spent", flush=True)
                continue
            with timed(name):
                f = await fanout(server, helpers, level, settle, deadline)
            results["fanout"].append(f)
            print(
                f"   {name}: {f['complete']} of {f['connected']} got every event "
                f"({f['cut_too_slow']} cut as too slow, {f['closes']} closes), latency p50 "
                f"{f['latency']['p50_ms']:.0f} ms p99 {f['latency']['p99_ms']:.0f} ms, RSS "
                f"{f['rss_idle_kb'] / 1024:.0f} -> {f['rss_subscribed_kb'] / 1024:.0f} -> "
                f"{f['rss_after_kb'] / 1024:.0f} MB, web CPU {f['web_cpus']:.0%}",
                flush=True,
            )
            if f["complete"] < level.clients:
                failed.append(level)
    if only in (None, "burst"):
        print("\n== 4. subscribe burst", flush=True)
        if deadline.left() < 45:
            print("   skipped, the time budget is nearly spent", flush=True)
        else:
            with timed("subscribe burst"):
                u = results["burst"] = await burst(server, r, plan.burst_tabs, deadline)
            for x in u["rounds"]:
                print(
                    f"   {x['tabs']} at once ({x['subscribe']}): {x['subscribed']} subscribed, "
                    f"{x['still_open']} open 1 s later, {x['live']} of them get events",
                    flush=True,
                )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.web", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the raw figures as JSON")
    parser.add_argument(
        "--only", choices=["browser", "http", "fanout", "burst"], help="run one part"
    )
    args = parser.parse_args(argv)
    plan = Plan.make(args.quick)
    exit_on_sigterm()
    deadline = Deadline(plan.budget_seconds)
    info = {**machine(), **versions()}
    kind = "quick" if args.quick else "full"
    print(f"web benchmark ({kind} run), time budget {plan.budget_seconds:.0f} s", flush=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        server = EmbeddedRedis()
        stack.callback(server.cleanup)
        server.start()
        r = redis.Redis.from_url(server.url, socket_timeout=10)
        stack.callback(r.close)
        r.execute_command("CONFIG", "SET", "maxclients", "10000")
        web = WebServer(server.url, NS)
        web_log: list[str] = []
        stack.callback(lambda: web_log.extend(web.cleanup()))
        web.wait_ready()
        worker = WorkerProcess(server.url, NS, handler="bench.handlers:noop", log_level="WARNING")
        stack.callback(worker.cleanup)
        worker.start(ready=False)
        worker.wait_ready(timeout=20)
        with RSMQ.from_url(server.url, ns=NS) as q:
            q.create_queue(LOAD_QUEUE)
        helpers = [worker.pid, server.proc.pid if server.proc is not None else -1]
        results = asyncio.run(run(server, web, helpers, r, plan, deadline, args.only))
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = time.monotonic() - started
    print()
    print(report(info, results))
    if args.json is not None:
        data = {"machine": info, "plan": asdict(plan), **results}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nraw figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
