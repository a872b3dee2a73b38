"""2. HTTP sends/s (``--only http``): how many sends a second one web process takes.

50 keep-alive connections POST one message each after the other for 10 seconds, to a queue that
no worker reads, so every 202's id must still be in Redis afterwards (checked one by one).
Requests/s and response times, on the web process started for the run; then the same against
``bench/bare.py`` (a bare Starlette endpoint doing only the send), the baseline: the app's
requests/s over the bare endpoint's, in the same run, is its cost over the send.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from bench.clients import Http
from bench.harness import Deadline, ms, table, timed
from bench.web.common import BODY, LOAD_QUEUE, NS, CpuMeter, Plan, Run, WebServer


async def run(ctx: Run) -> dict[str, Any]:
    print("\n== 2. HTTP sends/s", flush=True)
    with timed("HTTP sends/s"):
        h = await measure(ctx.web.port, ctx.web.pid, ctx.helpers, ctx.r, ctx.plan, ctx.deadline)
    print(
        f"   {h['requests_per_s']:,.0f} requests/s, p50 {h['p50_ms']:.2f} ms, "
        f"p99 {h['p99_ms']:.2f} ms, {h['ids_missing_in_redis']} ids missing",
        flush=True,
    )
    bare = WebServer(ctx.server.url, NS, bare=True)
    try:
        await asyncio.to_thread(bare.wait_ready)
        with timed("HTTP sends/s, bare endpoint"):
            b = await measure(bare.port, bare.pid, ctx.helpers, ctx.r, ctx.plan, ctx.deadline)
    finally:
        bare.cleanup()
    h["of_bare"] = h["requests_per_s"] / b["requests_per_s"]
    print(
        f"   bare endpoint: {b['requests_per_s']:,.0f} requests/s, p50 {b['p50_ms']:.2f} "
        f"ms; the app at {h['of_bare']:.2f}x of it",
        flush=True,
    )
    return {"http": h, "http_bare": b}


async def measure(
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


def report(h: dict[str, Any], bare: dict[str, Any] | None) -> list[str]:
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
