"""Hostile websocket clients against one web process: a crowd that leaves, and an id flood.

1. *Teardown*: C clients each subscribe to Q made-up queues (default 500 x 100), wait for
   their answers, then all close. From the last close: the worst ``/api/health`` latency in
   the first second, its latency and the channels Redis still holds at +1 s, the time until
   none is left and health answers under 100 ms, then the time SIGTERM takes to stop it.
2. *Flood*: F clients (default 50) each repeat, as fast as the server takes them, a subscribe
   naming 1,000 made-up ids, for S seconds. Meanwhile one client GETs ``/api/queues/jobs``
   every 20 ms: its p50, p95, max and failures, against the same GETs with no flood.

Each row runs a fresh ``python -m web`` from a source tree (``--before DIR`` adds rows for
another tree, e.g. main's: ``git archive main | tar -x -C DIR``) on a redis-server of its own
(``EmbeddedRedis``, a free loopback port). The flooders run in a child process, so the GETs'
timings are not the clients' own CPU. Every wait has a deadline; every process started here is
stopped. Prints one table::

    .venv/bin/python -m bench.hostile_ws [--clients 500 --queues 100 --flooders 50 --seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis
import websockets

from bench.harness import exit_on_sigterm, quiet_web, stopped
from rsmq_core.embedded import EmbeddedRedis
from support.web import ROOT


def get(url: str, timeout: float) -> float | None:
    """Milliseconds a GET took to answer 200; None if it failed."""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            answer.read()
            return (time.perf_counter() - t0) * 1000 if answer.status == 200 else None
    except (OSError, urllib.error.URLError):
        return None


def channels(r: redis.Redis) -> int:
    return len(r.pubsub_channels())


async def crowd(port: int, clients: int, queues: int) -> int:
    """Connect, subscribe, wait for every answer; return the refusals (tooManyChannels)."""
    url = f"ws://127.0.0.1:{port}/ws"

    async def one(n: int, ws: websockets.ClientConnection) -> int:
        for i in range(queues):
            await ws.send(json.dumps({"type": "subscribe", "queue": f"x{n}-{i}"}))
        answered = refused = 0
        while answered < queues:
            frame = json.loads(await ws.recv())
            if frame["type"] in ("subscribed", "error"):
                answered += 1
                refused += frame["type"] == "error"
        return refused

    sockets = []
    for start in range(0, clients, 50):  # 50 handshakes at a time, as a crowd arrives
        batch = range(start, min(clients, start + 50))
        sockets += await asyncio.gather(
            *(websockets.connect(url, close_timeout=2, max_queue=None) for _ in batch)
        )
    async with asyncio.timeout(300):
        refused = sum(await asyncio.gather(*(one(n, ws) for n, ws in enumerate(sockets))))
    await asyncio.gather(*(ws.close() for ws in sockets))
    return refused


def teardown(root: Path, url: str, args: argparse.Namespace, **settings: str) -> list[str]:
    r = redis.Redis.from_url(url)
    web = quiet_web(url, f"b{uuid.uuid4().hex[:8]}", root, **settings)
    try:
        t0 = time.monotonic()
        refused = asyncio.run(crowd(web.port, args.clients, args.queues))
        closed = time.monotonic()
        worst = 0.0
        at_1s: tuple[float, int] | None = None  # health ms and channels left, from +1 s
        clear = None
        while time.monotonic() - closed < 60 and (clear is None or at_1s is None):
            started = time.monotonic() - closed
            ms = get(web.url("/api/health"), 5)
            ms = 5000.0 if ms is None else ms
            left = channels(r)
            if started <= 1:
                worst = max(worst, ms)
            elif at_1s is None:
                at_1s = (ms, left)
            if clear is None and ms < 100 and left == 0:
                clear = time.monotonic() - closed
            time.sleep(0.01)
        stop = stopped(web, 10)
    finally:
        if web.proc.poll() is None:
            stopped(web, 1)
    ms_1s, left_1s = at_1s or (5000.0, channels(r))
    return [
        f"{closed - t0:.1f}",
        str(refused),
        f"{worst:.0f}",
        f"{ms_1s:.0f}",
        str(left_1s),
        "> 60" if clear is None else f"{clear:.2f}",
        "killed after 10" if stop is None else f"{stop:.1f}",
    ]


def flooders(port: int, count: int, seconds: float, counts: Any) -> None:
    """``counts``: shared [frames sent, subscribes the server took]."""
    ids = [uuid.uuid4().hex for _ in range(1000)]
    frame = json.dumps({"type": "subscribe", "queue": "jobs", "ids": ids})

    async def one() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:

                    async def drain() -> None:
                        with contextlib.suppress(websockets.ConnectionClosed):
                            async for text in ws:
                                counts[1] += '"subscribed"' in str(text)

                    reader = asyncio.create_task(drain())
                    while time.monotonic() < end:
                        await ws.send(frame)
                        counts[0] += 1
                    reader.cancel()
            except (OSError, websockets.ConnectionClosed):
                await asyncio.sleep(0.1)

    async def all_of_them() -> None:
        await asyncio.gather(*(one() for _ in range(count)))

    asyncio.run(all_of_them())


def probe(url: str, seconds: float) -> tuple[list[float], int]:
    """GETs every 20 ms for ``seconds``: latencies (ms) and failures."""
    times: list[float] = []
    failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ms = get(url, 15)
        if ms is None:
            failed += 1
        else:
            times.append(ms)
        time.sleep(0.02)
    return times, failed


def figures(times: list[float], failed: int) -> list[str]:
    """p50, p95, max (ms), failures."""
    if len(times) < 2:
        return ["-", "-", "-", str(failed)]
    p95 = statistics.quantiles(times, n=20)[18]
    return [f"{statistics.median(times):.1f}", f"{p95:.1f}", f"{max(times):.0f}", str(failed)]


def flood(root: Path, url: str, args: argparse.Namespace) -> list[str]:
    web = quiet_web(url, f"b{uuid.uuid4().hex[:8]}", root)
    try:
        api = web.url("/api/queues/jobs")
        quiet = probe(api, 3)
        counts = multiprocessing.Array("q", 2)
        child = multiprocessing.Process(
            target=flooders, args=(web.port, args.flooders, args.seconds, counts)
        )
        child.start()
        time.sleep(0.5)  # the flooders connect
        loud = probe(api, args.seconds - 1)
        child.join(args.seconds + 30)
        if child.is_alive():
            child.kill()
    finally:
        stopped(web, 10)
    sent, taken = (f"{counts[i] / args.seconds:.0f}" for i in range(2))
    return [figures(*quiet)[1], *figures(*loud), sent, taken]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--flooders", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--before", type=Path, help="another source tree to measure first")
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("after", ROOT)]
    exit_on_sigterm()  # a SIGTERM unwinds, stopping the processes started here
    server = EmbeddedRedis()
    server.start()
    rows: list[list[str]] = []
    cap = str(args.clients * args.queues)
    try:
        for name, root in trees:
            rows.append([name, *teardown(root, server.url, args), *flood(root, server.url, args)])
            if name == "after":  # the whole crowd followed, past the default cap
                rows.append(
                    [
                        f"after, WS_MAX_CHANNELS={cap}",
                        *teardown(root, server.url, args, WS_MAX_CHANNELS=cap),
                    ]
                )
    finally:
        server.cleanup()
    print(
        f"{args.clients} clients x {args.queues} made-up queues, then all close; "
        f"{args.flooders} flooders x 1000 ids for {args.seconds:g} s\n"
    )
    head = [
        "code",
        "subscribing s",
        "refused",
        "health worst ms, 1st s after close",
        "health ms at +1 s",
        "channels at +1 s",
        "all clear after s",
        "SIGTERM s",
        "GET p95 ms quiet",
        "GET p50 ms flood",
        "GET p95 ms flood",
        "GET max ms flood",
        "GET failed",
        "frames/s sent",
        "subscribes/s taken",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row + ["-"] * (len(head) - len(row))) + " |")


if __name__ == "__main__":
    main()
