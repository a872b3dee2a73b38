"""The worker: receive → handler → delete, for one or more queues, realtime or polling.

Realtime mode never polls. Each queue has one consumer loop per process: it receives as many
messages as the process has free slots; when the queue has nothing visible it asks Redis how
long until the earliest message is due (a delayed one, or one whose visibility timeout will
run out because its worker died) and sleeps exactly that long — or until a notification on
RSMQ's channel wakes it, whichever comes first. Notifications coalesce: any number of them
while the loop is busy cause one receive. Polling mode receives every POLL_INTERVAL instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis

from realtime import EventLog, StatusEvent, Subscriber, Wakeup
from realtime.events import Status
from realtime.registry import WorkerInfo, heartbeat, unregister
from realtime.subscriber import CONNECTION_LOST
from rsmq_core import AsyncRSMQ, Message

from .job import Job
from .settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[Any] | Any]
REDIS_DOWN = CONNECTION_LOST


class Worker:
    """Runs ``handler`` on the messages of ``settings.queues`` until :meth:`stop`."""

    def __init__(
        self, settings: Settings, handler: Handler, *, redis: aioredis.Redis | None = None
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.mode = "realtime" if settings.realtime else "polling"
        self._redis = redis or aioredis.Redis.from_url(settings.redis_url)
        self._owns_redis = redis is None
        self.rsmq = AsyncRSMQ(self._redis, ns=settings.ns)
        self.events = EventLog(self._redis, settings.ns, ttl=settings.event_ttl)
        self._subscriber = Subscriber(self._redis) if settings.realtime else None
        self._wakeups: list[Wakeup] = []
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], tuple[str, Message]] = {}
        self._threads = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="handler")
        self.counters = dict.fromkeys(
            ("receives", "empty_receives", "received", "done", "failed", "retried", "dead",
             "lost_leases", "released"),
            0,
        )  # fmt: skip

    def __repr__(self) -> str:
        c = self.counters
        return (
            f"<Worker {self.mode} done={c['done']} failed={c['failed']} dead={c['dead']}"
            f" receives={c['receives']} empty={c['empty_receives']} inflight={len(self._inflight)}>"
        )

    # Running -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop receiving; run() then lets in-flight handlers finish within the grace period."""
        self._stopping.set()
        for wake in self._wakeups:
            wake.set()
        self._slot_freed.set()

    async def run(self) -> None:
        info = WorkerInfo(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), mode=self.mode,
            queues=list(self.settings.queues), concurrency=self.settings.concurrency,
            started=int(time.time() * 1000), counters=self.counters,
        )  # fmt: skip
        log.info(
            "worker %s starting: %s mode, queues %s, concurrency %d",
            self.id, self.mode, ",".join(self.settings.queues), self.settings.concurrency,
        )  # fmt: skip
        if self._subscriber is not None:
            self._subscriber.start()
        beat = asyncio.create_task(self._heartbeat(info))
        consumers = [asyncio.create_task(self._consume(q)) for q in self.settings.queues]
        try:
            await self._stopping.wait()
            await asyncio.gather(*consumers, return_exceptions=True)
            await self._drain()
        finally:
            for task in consumers:
                task.cancel()
            beat.cancel()
            await self.events.flush()
            with contextlib.suppress(*REDIS_DOWN):
                await unregister(self._redis, self.settings.ns, self.id)
            if self._subscriber is not None:
                await self._subscriber.aclose()
            self._threads.shutdown(wait=False, cancel_futures=True)
            if self._owns_redis:
                await self._redis.aclose()
            log.info("worker %s stopped: %r", self.id, self)

    async def _heartbeat(self, info: WorkerInfo) -> None:
        while True:
            try:
                await heartbeat(
                    self._redis, self.settings.ns, info, ttl=3 * self.settings.heartbeat
                )
            except REDIS_DOWN as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.settings.heartbeat)

    async def _drain(self) -> None:
        """Give in-flight handlers the grace period, then make the rest visible at once."""
        if not self._inflight:
            return
        log.info("waiting up to %.1fs for %d handler(s)", self.settings.shutdown_grace,
                 len(self._inflight))  # fmt: skip
        _, late = await asyncio.wait(set(self._inflight), timeout=self.settings.shutdown_grace)
        if not late:
            return
        held = [self._inflight[t] for t in late]
        for task in late:
            task.cancel()
        await asyncio.wait(late, timeout=1.0)
        log.warning("releasing %d message(s) whose handlers did not finish in time", len(held))
        for qname, msg in held:
            with contextlib.suppress(*REDIS_DOWN):
                if await self.rsmq.change_message_visibility(qname, msg.id, 0, rc=msg.rc):
                    self.counters["released"] += 1
                    self._emit("retrying", qname, msg, error="worker shut down", retry_in=0)

    # Receiving ---------------------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self.settings.concurrency - len(self._inflight)

    async def _consume(self, qname: str) -> None:
        wake = None
        if self._subscriber is not None:
            wake = self._subscriber.wakeup(f"{self.settings.ns}:rt:{qname}")
            self._wakeups.append(wake)
        failures = 0
        while not self._stopping.is_set():
            if self._free_slots() <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            if wake is not None:
                wake.clear()  # notifications from here on mean "look again"
            try:
                got = await self.rsmq.receive_messages(
                    qname, min(self._free_slots(), 1000), vt=self.settings.vt
                )
                self.counters["receives"] += 1
                failures = 0
                if got:
                    for msg in got:
                        self._start(qname, msg)
                    continue
                self.counters["empty_receives"] += 1
                if wake is not None:
                    await wake.wait(await self.rsmq.next_visible_in(qname))
                else:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.settings.poll_interval)
            except REDIS_DOWN as exc:
                failures += 1
                delay = min(2.0, 0.05 * 2**failures)
                log.warning("queue %s: Redis unavailable (%s); retrying in %.2fs", qname, exc,
                            delay)  # fmt: skip
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    def _start(self, qname: str, msg: Message) -> None:
        task = asyncio.create_task(self._handle(qname, msg))
        self._inflight[task] = (qname, msg)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("handling failed unexpectedly: %r", exc)

    # Handling ----------------------------------------------------------------------------------

    def _emit(self, status: Status, qname: str, msg: Message, **extra: Any) -> None:
        self.events.emit(
            StatusEvent(status=status, queue=qname, id=msg.id, rc=msg.rc, worker=self.id, **extra)
        )

    async def _handle(self, qname: str, msg: Message) -> None:
        self.counters["received"] += 1
        self._emit("received", qname, msg)
        if msg.rc > self.settings.max_receives:
            # Received more often than allowed without a handler ever failing: its workers
            # died mid-handler. Running it again would likely kill another.
            await self._dead_letter(qname, msg, f"received {msg.rc} times")
            return
        keeper = asyncio.create_task(self._keep_hidden(qname, msg))
        started = time.perf_counter()
        try:
            self._emit("processing", qname, msg, progress=0.0)
            await self._run_handler(qname, msg)
        except Exception as exc:
            await self._failed(qname, msg, exc)
        else:
            if await self.rsmq.delete_message(qname, msg.id, rc=msg.rc):
                self.counters["done"] += 1
                self._emit("done", qname, msg)
                log.info("%6.3fs done %s/%s rc=%d", time.perf_counter() - started, qname, msg.id,
                         msg.rc)  # fmt: skip
            else:
                self.counters["lost_leases"] += 1
                log.warning(
                    "%s/%s was handled, but another worker received it meanwhile (its "
                    "visibility timeout ran out); it stays with them",
                    qname,
                    msg.id,
                )
        finally:
            keeper.cancel()

    async def _run_handler(self, qname: str, msg: Message) -> None:
        loop = asyncio.get_running_loop()

        def report(fraction: float) -> None:
            loop.call_soon_threadsafe(
                lambda: self._emit("processing", qname, msg, progress=fraction)
            )

        job = Job(queue=qname, message=msg, worker=self.id, _report=report)
        if inspect.iscoroutinefunction(self.handler):
            await self.handler(job)
        else:
            result = await loop.run_in_executor(self._threads, self.handler, job)
            if inspect.isawaitable(result):
                await result

    async def _failed(self, qname: str, msg: Message, exc: Exception) -> None:
        self.counters["failed"] += 1
        error = f"{type(exc).__name__}: {exc}"[:500]
        self._emit("failed", qname, msg, error=error)
        if msg.rc >= self.settings.max_receives:
            await self._dead_letter(qname, msg, error)
            return
        backoff = min(self.settings.retry_backoff * 2 ** (msg.rc - 1),
                      self.settings.retry_backoff_max)  # fmt: skip
        delay = round(backoff)
        log.warning("failed %s/%s rc=%d (%s); retry in %ds", qname, msg.id, msg.rc, error, delay)
        if await self.rsmq.change_message_visibility(qname, msg.id, delay, rc=msg.rc):
            self.counters["retried"] += 1
            self._emit("retrying", qname, msg, error=error, retry_in=delay)

    async def _dead_letter(self, qname: str, msg: Message, why: str) -> None:
        dead = self.settings.dead_letter_queue(qname)
        with contextlib.suppress(Exception):
            await self.rsmq.create_queue(dead)
        new_id = await self.rsmq.move_message(qname, msg.id, dead, rc=msg.rc)
        if new_id is not None:
            self.counters["dead"] += 1
            self._emit("dead", qname, msg, error=why, dead_letter_id=new_id)
            log.error("dead-lettered %s/%s rc=%d to %s/%s: %s", qname, msg.id, msg.rc, dead,
                      new_id, why)  # fmt: skip

    async def _keep_hidden(self, qname: str, msg: Message) -> None:
        """Extend a long handler's visibility timeout before it runs out."""
        vt = self.settings.vt
        while True:
            await asyncio.sleep(vt * 0.6)
            try:
                still_ours = await self.rsmq.change_message_visibility(qname, msg.id, vt, rc=msg.rc)
            except REDIS_DOWN as exc:
                log.warning("could not extend %s/%s: %s", qname, msg.id, exc)
                continue
            if not still_ours:
                self.counters["lost_leases"] += 1
                log.warning("%s/%s: lost to another worker while its handler ran", qname, msg.id)
                return
