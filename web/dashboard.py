"""The dashboard's figures: the queues (the first LISTED by name, and how many there are) and
every live worker, one snapshot a second.

Jobs done and failed (per queue and per worker) and the send -> done chart all come from what
workers write to Redis at each heartbeat (see realtime.metrics), read in one snapshot: no two
parts of the page can disagree, whenever it was opened.

One task per web process reads Redis while at least one dashboard watches (never per client)
and pushes the snapshot to every watching websocket; rates are the change between snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from realtime import StatusEvent, live_workers
from realtime.events import stream_key
from realtime.metrics import MODES, done_key, metrics_key, parse_samples, percentiles, pickups_key
from realtime.registry import index_key
from rsmq_core import AsyncRSMQ, InvalidFormat, QueueNotFound
from rsmq_core.client import AsyncRedis

log = logging.getLogger(__name__)


LISTED = 100  # queues a snapshot lists (the first by name); total_queues says how many exist
COMPARE_WINDOW = 300  # seconds of pickups the realtime-vs-polling figures cover
CHARTED = 200  # jobs done the latency chart shows: the last, of every mode
RESULTS = 10  # handlers' results the page shows: the newest, of the listed queues
SCANNED = 50  # newest events of each listed queue looked through for them


async def snapshot(
    rsmq: AsyncRSMQ, dead_suffix: str = "-dead", limit: int = LISTED
) -> dict[str, Any]:
    names = sorted(await rsmq.list_queues())
    listed = names[:limit]
    # A listed queue's dead-letter count needs its dead-letter queue, listed or not.
    wanted = listed + sorted({n + dead_suffix for n in listed} & set(names[limit:]))
    queues: dict[str, dict[str, Any]] = {}
    for name in wanted:
        # Deleted meanwhile, or a name no operation takes (QUEUES, named in the index by an
        # older version or another RSMQ client): the rest of the page still shows.
        with contextlib.suppress(QueueNotFound, InvalidFormat):
            attrs = dataclasses.asdict(await rsmq.get_queue_attributes(name))
            attrs["visible"] = attrs["msgs"] - attrs["hiddenmsgs"]
            queues[name] = attrs
    jobs, done = await finished(rsmq.redis, rsmq.ns)
    for name in listed:
        if name in queues:
            dead = queues.get(name + dead_suffix)
            queues[name]["dead"] = dead["msgs"] if dead is not None else 0
            for status in ("done", "failed"):
                queues[name][status] = int(jobs.get(f"jobs:{name}:{status}", 0))
    shown = {name: queues[name] for name in listed if name in queues}
    workers = [dataclasses.asdict(w) for w in await live_workers(rsmq.redis, rsmq.ns)]
    return {
        "at": time.time(),
        "queues": shown,
        "total_queues": len(names),
        "workers": workers,
        "compare": await compare(rsmq.redis, rsmq.ns, workers),
        "done": done,
        "results": await last_results(rsmq, list(shown)),
    }


async def last_results(rsmq: AsyncRSMQ, names: list[str]) -> list[dict[str, Any]]:
    """The newest jobs done with a result, among the newest events of the queues ``names``
    (their status streams, as the timeline reads them): one round trip."""
    if not names:
        return []
    async with rsmq.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xrevrange(stream_key(rsmq.keys(name)), count=SCANNED)
        streams = await pipe.execute()
    found: list[StatusEvent] = []
    for rows in streams:
        for _, fields in rows:
            if b'"result"' in fields[b"e"]:  # parsed only then: most events have none
                event = StatusEvent.from_json(fields[b"e"])
                if event.status == "done" and event.result is not None:
                    found.append(event)
    found.sort(key=lambda e: e.ts or 0, reverse=True)
    return [{"queue": e.queue, "id": e.id, "result": e.result, "ts": e.ts} for e in found[:RESULTS]]


async def finished(
    redis: AsyncRedis, ns: str
) -> tuple[dict[str, float], list[tuple[int, float, str]]]:
    """The metrics hash (jobs by queue and outcome), and the last CHARTED jobs done as
    ``(epoch ms, send -> done ms, mode)``, oldest first: one round trip."""
    index = index_key(redis, ns)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(metrics_key(index))
        for mode in MODES:
            pipe.lrange(done_key(index, mode), 0, CHARTED - 1)
        fields, *rows = await pipe.execute()
    done = [
        (at, ms, mode)
        for mode, raw in zip(MODES, rows, strict=True)
        for at, ms in parse_samples(raw, 0)
    ]
    jobs = {k.decode(): float(v) for k, v in fields.items() if k.startswith(b"jobs:")}
    return jobs, sorted(done)[-CHARTED:]


async def compare(
    redis: AsyncRedis, ns: str, workers: list[dict[str, Any]], window: float = COMPARE_WINDOW
) -> dict[str, dict[str, Any]]:
    """Realtime vs polling: per mode, pickup latency (send -> first receive, in ms)
    percentiles over the last ``window`` seconds (exact, from the pickups workers add to
    Redis at each heartbeat; at most the last 1000 of a mode), and the Redis commands per
    second of its live workers (each counts its own and says so at each heartbeat). One
    round trip; read by the one Stats task of a web process, whatever the dashboards open."""
    index = index_key(redis, ns)
    async with redis.pipeline(transaction=False) as pipe:
        for mode in MODES:
            pipe.lrange(pickups_key(index, mode), 0, -1)
        rows = await pipe.execute()
    since = int((time.time() - window) * 1000)
    out: dict[str, dict[str, Any]] = {}
    for mode, raw in zip(MODES, rows, strict=True):
        latencies = [ms for _, ms in parse_samples(raw, since)]
        rates = [
            w["commands_per_second"]
            for w in workers
            if w["mode"] == mode and w.get("commands_per_second") is not None
        ]
        p50, p95, p99 = percentiles(latencies) if latencies else (None, None, None)
        out[mode] = {
            "workers": sum(1 for w in workers if w["mode"] == mode),
            "pickups": len(latencies),
            "p50": p50,
            "p95": p95,
            "p99": p99,
            "commands_per_second": round(sum(rates) / len(rates), 2) if rates else None,
        }
    return out


def with_rates(now: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """Sends and receives per second since the snapshot before."""
    for name, attrs in now["queues"].items():
        previous = (before or {}).get("queues", {}).get(name)
        elapsed = now["at"] - before["at"] if before else 0
        for counter, rate in (("totalsent", "send_rate"), ("totalrecv", "receive_rate")):
            if previous is None or elapsed <= 0:
                attrs[rate] = None
            else:
                attrs[rate] = round(max(0, attrs[counter] - previous[counter]) / elapsed, 1)
    return now


class Stats:
    """Pushes a snapshot every ``period`` seconds to whoever watches."""

    def __init__(self, rsmq: AsyncRSMQ, period: float = 1.0) -> None:
        self._rsmq = rsmq
        self._period = period
        self._watchers: set[Callable[[dict[str, Any]], None]] = set()
        self._task: asyncio.Task[None] | None = None

    def watch(self, push: Callable[[dict[str, Any]], None]) -> None:
        self._watchers.add(push)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    def unwatch(self, push: Callable[[dict[str, Any]], None]) -> None:
        self._watchers.discard(push)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        before: dict[str, Any] | None = None
        while self._watchers:
            try:
                now = with_rates(await snapshot(self._rsmq), before)
                before = now
                frame = {"type": "stats", **now}
            except Exception as exc:  # Redis down: say so, keep trying
                frame = {"type": "stats", "error": f"{type(exc).__name__}: {exc}"}
            for push in list(self._watchers):
                push(frame)
            await asyncio.sleep(self._period)
