"""The dashboard's figures: the queues (the first LISTED by name, and how many there are) and
every live worker, one snapshot a second.

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

from realtime import live_workers
from rsmq_core import AsyncRSMQ, InvalidFormat, QueueNotFound

log = logging.getLogger(__name__)


LISTED = 100  # queues a snapshot lists (the first by name); total_queues says how many exist


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
    for name in listed:
        if name in queues:
            dead = queues.get(name + dead_suffix)
            queues[name]["dead"] = dead["msgs"] if dead is not None else 0
    shown = {name: queues[name] for name in listed if name in queues}
    workers = [dataclasses.asdict(w) for w in await live_workers(rsmq.redis, rsmq.ns)]
    return {"at": time.time(), "queues": shown, "total_queues": len(names), "workers": workers}


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
