"""Coalescing of concurrent calls into one script call (automatic pipelining).

redis-py's asyncio path costs far more per call than Redis spends on a send, so fifty
coroutines each sending one message would spend their time in the client. Instead, calls of
one operation on one queue that arrive while a call is in flight wait for it, then go
together as one batch: the first caller pays one round trip, and under load each round trip
carries as many messages as arrived meanwhile (up to MAX_BATCH).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - the item type, as K is the key type
R = TypeVar("R")

Runner = Callable[[K, list[I]], Awaitable[Sequence[R | BaseException]]]


class Batcher(Generic[K, I, R]):
    """Runs ``run(key, items)`` for items submitted under one key, one batch at a time."""

    def __init__(self, run: Runner[K, I, R], max_batch: int) -> None:
        self._run = run
        self._max = max_batch
        self._pending: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._drains: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((item, future))
        if key not in self._drains:
            self._drains[key] = asyncio.create_task(self._drain(key))
        return await future

    async def wait_idle(self) -> None:
        """Wait until every submitted call has been answered."""
        while self._drains:
            await asyncio.gather(*self._drains.values(), return_exceptions=True)

    async def _drain(self, key: K) -> None:
        try:
            while pending := self._pending.get(key):
                batch, self._pending[key] = pending[: self._max], pending[self._max :]
                # A caller cancelled before its batch left has nothing sent for it.
                live = [(item, fut) for item, fut in batch if not fut.done()]
                if live:
                    await self._send(key, live)
        finally:
            del self._drains[key]
            # Only reached with work left when this task was cancelled: fail it, never hang it.
            for _, fut in self._pending.pop(key, []):
                fut.cancel()

    async def _send(self, key: K, live: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run(key, [item for item, _ in live])
        except asyncio.CancelledError:
            for _, fut in live:
                fut.cancel()
            raise
        except Exception as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(live, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
