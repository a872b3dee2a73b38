"""Coalescing of concurrent calls into few script calls (automatic pipelining).

redis-py's asyncio path costs far more per call than Redis spends on a send, so fifty
coroutines each sending one message would spend their time in the client. Instead, calls
under one key (the client's: sends of one queue; receives and deletes of one queue, which
one script call can carry together) go out together: whatever is waiting when a batch leaves
goes in it. By default two batches per key are in flight at once, so the client builds one
while Redis runs the other (the client keeps one for receives and deletes: see AsyncRSMQ); a
lone caller still pays a single round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - the item type, as K is the key type
R = TypeVar("R")

Runner = Callable[[K, list[I]], Awaitable[Sequence[R | BaseException]]]
Waiting = list[tuple[I, "asyncio.Future[R]"]]


class Batcher(Generic[K, I, R]):
    """Runs ``run(key, items)`` for items submitted under one key, a few batches at a time."""

    def __init__(self, run: Runner[K, I, R], max_batch: int, *, in_flight: int = 2) -> None:
        """``in_flight=1`` keeps the order of calls: a batch leaves after the one before it
        has landed."""
        self._run = run
        self._max = max_batch
        self._in_flight = in_flight
        self._pending: dict[K, Waiting[I, R]] = {}
        self._flying: dict[K, int] = {}
        self._scheduled: set[K] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, item: I) -> R:
        if key not in self._flying and key not in self._pending:
            return await self._alone(key, item)
        return await self.enqueue(key, item)

    def enqueue(self, key: K, item: I) -> asyncio.Future[R]:
        """Submit without waiting (no task of its own, which costs more than the item): the
        result comes in the future. The batch leaves at the end of this loop iteration."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.setdefault(key, []).append((item, future))
        if key not in self._scheduled and self._flying.get(key, 0) < self._in_flight:
            # Launch at the end of this loop iteration: calls made in it go together.
            self._scheduled.add(key)
            loop.call_soon(self._launch, key)
        return future

    async def _alone(self, key: K, item: I) -> R:
        """Nothing else is going on for this key: go straight out, from the caller's own task.
        Calls that come meanwhile wait for a slot and batch up behind."""
        self._flying[key] = 1
        try:
            (result,) = await self._run(key, [item])
        finally:
            self._land(key)
        if isinstance(result, BaseException):
            raise result
        return result

    async def wait_idle(self) -> None:
        """Wait until every submitted call has been answered."""
        while self._tasks or self._scheduled or self._flying:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
                # A gather of tasks already done returns without yielding (Python 3.12+), and
                # their done callbacks, which take them off these sets, run only when we yield:
                # without this the loop spun forever (a worker's shutdown hung on 3.13).
                await asyncio.sleep(0)
            else:  # only calls made from their callers' own tasks are in flight
                await asyncio.sleep(0.001)

    def _launch(self, key: K) -> None:
        self._scheduled.discard(key)
        pending = self._pending.get(key, [])
        # A caller cancelled before its batch left has nothing sent for it.
        pending[:] = [(item, fut) for item, fut in pending if not fut.done()]
        while pending and (flying := self._flying.get(key, 0)) < self._in_flight:
            # Split what waits among the free slots, so both batches leave now.
            size = min(self._max, -(-len(pending) // (self._in_flight - flying)))
            batch, pending[:] = pending[:size], pending[size:]
            self._flying[key] = flying + 1
            task = asyncio.ensure_future(self._send(key, batch))
            self._tasks.add(task)
            task.add_done_callback(partial(self._landed, key))
        if not pending:
            self._pending.pop(key, None)

    def _landed(self, key: K, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._land(key)

    def _land(self, key: K) -> None:
        self._flying[key] -= 1
        if not self._flying[key]:
            del self._flying[key]
        if self._pending.get(key):
            self._launch(key)

    async def _send(self, key: K, batch: Waiting[I, R]) -> None:
        try:
            results = await self._run(key, [item for item, _ in batch])
        except asyncio.CancelledError:
            for _, fut in batch:
                fut.cancel()
            raise
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
