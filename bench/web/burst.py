"""4. Subscribe burst (``--only burst``): many subscribe frames arriving in the same instant.

300 websockets open on a fresh web process, then send their subscribe frames in the same instant
(as when frames queue up behind a busy event loop). A second later one message is POSTed, and the
open tabs that hear of it within 3 s are counted. Then the same with 300 new connections
subscribing with the newest event id (an empty replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import redis

from bench.clients import Http
from bench.harness import BenchError, Deadline, table, timed
from bench.web.common import BODY, CONNECT_BATCH, NS, QUEUE, Run, Tab, WebServer, log_problems
from rsmq_core.embedded import EmbeddedRedis


async def run(ctx: Run) -> dict[str, Any]:
    print("\n== 4. subscribe burst", flush=True)
    if ctx.deadline.left() < 45:
        print("   skipped, the time budget is nearly spent", flush=True)
        return {}
    with timed("subscribe burst"):
        u = await measure(ctx.server, ctx.r, ctx.plan.burst_tabs, ctx.deadline)
    for x in u["rounds"]:
        print(
            f"   {x['tabs']} at once ({x['subscribe']}): {x['subscribed']} subscribed, "
            f"{x['still_open']} open 1 s later, {x['live']} of them get events",
            flush=True,
        )
    return {"burst": u}


async def measure(
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


def report(u: dict[str, Any]) -> list[str]:
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
