"""rsmq_core's AsyncRSMQ: one coroutine, 50 coroutines sharing a client, or batch calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bench.core.runner import BATCH, BODY, CONCURRENCY, NS, REDIS_TIMEOUT, PyRunner, QueueRanDry
from rsmq_core import AsyncRSMQ


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
