"""3. Websocket fan-out (``--only fanout``): how many tabs one web process serves while events flow.

For each row, a fresh web process; N "tabs" (websockets) connect, 50 at a time, and subscribe to
the worker's queue; then M messages are POSTed at a steady rate (4 events each): 50 at 5 a second
to 200, 500 and 1000 tabs, then 200 at 50 a second to 20, 200 and 500 tabs. A tab the server
closes reconnects as web/static/app.js does (after 0.5 s, doubling) and subscribes with the last
event id it saw, so the server replays what it missed. Counted: the tabs that got every "queued"
and every "done" event (in stream order, none twice) within 40 seconds of the last POST (15 for
the last row); closes, and those with code 1013 (the server's "too slow": more than WS_BUFFER
events behind); every delivery's latency (receive time minus the event's ``ts``, Redis's clock in
whole milliseconds, so up to 1 ms high); the time from an event's first to its last delivery
across the tabs; the web process's CPU; its VmRSS from ``/proc`` once started, once the tabs are
subscribed and after the events, and its peak (VmHWM); what it logged, and how long it took to
stop after SIGTERM. Within one rate, a size is skipped when a smaller one already lost events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.clients import Pool
from bench.harness import BenchError, Deadline, ms, table, timed, vm_kb
from bench.web.common import (
    CONNECT_BATCH,
    EVENTS_PER_MESSAGE,
    HTTP_POOL,
    NS,
    QUEUE,
    CpuMeter,
    Level,
    Run,
    Tab,
    WebServer,
    log_problems,
    paced,
)
from rsmq_core.embedded import EmbeddedRedis


async def run(ctx: Run) -> dict[str, Any]:
    """One row a level of the plan, each on a fresh web process."""
    print("\n== 3. websocket fan-out", flush=True)
    rows: list[dict[str, Any]] = []
    failed: list[Level] = []
    for level in ctx.plan.ws_levels:
        name = f"{level.clients} tabs, {level.messages} messages at {level.rate:g}/s"
        if any(f.rate == level.rate and f.clients < level.clients for f in failed):
            print(f"   {name}: skipped, fewer tabs at this rate already lost events")
            continue
        settle = level.settle or ctx.plan.ws_settle_seconds
        if ctx.deadline.left() < settle + 25:
            print(f"   {name}: skipped, the time budget is nearly spent", flush=True)
            continue
        with timed(name):
            f = await measure(ctx.server, ctx.helpers, level, settle, ctx.deadline)
        rows.append(f)
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
    return {"fanout": rows}


class Deliveries:
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


async def measure(
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
        collector = Deliveries()
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


def report(fans: list[dict[str, Any]]) -> list[str]:
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
