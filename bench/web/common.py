"""What the four parts share: the names (namespace, queues, message body), how much of each
part a run does (``Plan``), what a part runs against (``Run``), the web process (``WebServer``)
and what its log says, CPU meters, paced POSTs, and a browser tab (``Tab``)."""

from __future__ import annotations

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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.clients import Pool, Ws
from bench.harness import BenchError, CpuWindow, Deadline, pacing
from rsmq_core.embedded import EmbeddedRedis, free_port
from support.web import ROOT, WebProcess
from support.workers import wait_for

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


@dataclass
class Run:
    """What every part runs against: the run's redis-server (and a client of it), the web
    process started for the whole run, the pids of the other processes started here (worker,
    redis-server), the plan and the time budget."""

    server: EmbeddedRedis
    r: redis.Redis
    web: WebServer
    helpers: list[int]
    plan: Plan
    deadline: Deadline


class CpuMeter:
    """CPU seconds used by the web process, by this one (the clients), by the other processes
    started here (worker, redis-server), and by the whole machine, which is shared: the rest
    is other people's."""

    def __init__(self, web_pid: int, helpers: Sequence[int]) -> None:
        self.window = CpuWindow([web_pid], [os.getpid()], helpers)
        self.started = time.monotonic()

    def read(self) -> dict[str, float]:
        """Average CPUs busy since this meter was made."""
        seconds = time.monotonic() - self.started
        web, own, helpers, machine = (used / seconds for used in self.window.used())
        return {
            "web_cpus": web,
            "bench_cpus": own,
            "worker_redis_cpus": helpers,
            "machine_cpus_busy": machine,
            "others_cpus": max(0.0, machine - web - own - helpers),
        }


# The web process ----------------------------------------------------------------------------------


class WebServer(WebProcess):
    """support's WebProcess (url, health check, stop) with the app's default settings.

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


def log_problems(lines: Sequence[str]) -> dict[str, Any]:
    """uvicorn's ERROR and WARNING lines in a web log, and the exceptions, by kind."""
    exceptions = Counter(line for line in lines if EXCEPTION_RE.match(line))
    return {
        "errors": sum(1 for line in lines if line.startswith(("ERROR", "WARNING"))),
        "exceptions": dict(exceptions.most_common(5)),
        "killed": any(line.startswith(KILLED) for line in lines),
    }


# Paced POSTs, browser tabs ------------------------------------------------------------------------


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
