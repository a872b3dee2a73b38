"""1. Browser path (``--only browser``): what one user sees, from the POST to the "done" event.

One websocket subscribed to the worker's queue; POSTs to ``/api/queues/jobs/messages`` paced by
a monotonic clock (50 a second for 10 seconds, over a few keep-alive connections; a short
warm-up first, not counted). For each message: POST written → 202 read, → "queued" event read,
→ "done" event read (one clock, this process's). Runs on the web process started for the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from bench.clients import Pool, Ws
from bench.harness import Deadline, cpu_seconds, ms, table, timed
from bench.web.common import HTTP_POOL, QUEUE, Plan, Run, paced


async def run(ctx: Run) -> dict[str, Any]:
    print("\n== 1. browser path", flush=True)
    with timed("browser path"):
        b = await measure(ctx.web.port, ctx.plan, ctx.deadline)
    done = b["post_to_done"]
    print(f"   POST -> done p50 {done['p50_ms']:.2f} ms, p99 {done['p99_ms']:.2f} ms", flush=True)
    return {"browser": b}


async def measure(port: int, plan: Plan, deadline: Deadline) -> dict[str, Any]:
    """POST → 202, → "queued" event, → "done" event, at a steady rate."""
    arrivals: dict[tuple[str, str], float] = {}

    def on_frame(ws: Ws, data: dict[str, Any], now: float) -> None:
        at = time.perf_counter()
        if data["type"] == "event":
            event = data["event"]
            arrivals.setdefault((event["id"], event["status"]), at)

    path = f"/api/queues/{QUEUE}/messages"
    async with asyncio.timeout(15):
        ws = await Ws.connect(port, on_frame)
        ws.send_json({"type": "subscribe", "queue": QUEUE})
        await asyncio.shield(ws.subscribed)
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


def ids_of(answers: Sequence[tuple[float, float, int, bytes]]) -> list[str]:
    return [json.loads(a[3])["id"] for a in answers]


def report(b: dict[str, Any]) -> list[str]:
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
