"""rsmq_core's RSMQ: one caller, 50 threads sharing a client, or batch calls."""

from __future__ import annotations

import threading
from collections.abc import Callable

from bench.core.runner import BATCH, BODY, CONCURRENCY, NS, REDIS_TIMEOUT, PyRunner, QueueRanDry
from rsmq_core import RSMQ


def sync_step(client: RSMQ, op: str, qname: str) -> Callable[[], None]:
    """One message's worth of ``op`` with rsmq_core's RSMQ."""

    def send() -> None:
        client.send_message(qname, BODY)

    def recv_del() -> None:
        msg = client.receive_message(qname)
        if msg is None:
            raise QueueRanDry(qname)
        client.delete_message(qname, msg.id)

    def pop() -> None:
        if client.pop_message(qname) is None:
            raise QueueRanDry(qname)

    return {"send": send, "recv_del": recv_del, "pop": pop}[op]


def sync_batch_step(client: RSMQ, op: str, qname: str) -> Callable[[int], None]:
    """``count`` messages' worth of ``op`` in batch calls with rsmq_core's RSMQ."""

    def send(count: int) -> None:
        client.send_messages(qname, [BODY] * count)

    def recv_del(count: int) -> None:
        msgs = client.receive_messages(qname, count)
        if len(msgs) < count:
            raise QueueRanDry(qname)
        client.delete_messages(qname, [m.id for m in msgs])

    def pop(count: int) -> None:
        if len(client.pop_messages(qname, count)) < count:
            raise QueueRanDry(qname)

    return {"send": send, "recv_del": recv_del, "pop": pop}[op]


def run_batches(n: int, step: Callable[[int], None]) -> None:
    for start in range(0, n, BATCH):
        step(min(BATCH, n - start))


def run_threads(n: int, threads: int, step: Callable[[], None]) -> None:
    """``threads`` threads share a budget of ``n`` calls of ``step``."""
    lock = threading.Lock()
    left = n
    errors: list[BaseException] = []
    stop = threading.Event()  # set on the first error, or when the main thread is interrupted

    def worker() -> None:
        nonlocal left
        try:
            while not stop.is_set():
                with lock:
                    if left == 0:
                        return
                    left -= 1
                step()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(min(threads, n))]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        stop.set()
    if errors:
        raise errors[0]


class SyncRunner(PyRunner):
    """rsmq_core's RSMQ: ``seq`` (one caller), ``threads`` (50 sharing a client) or ``batch``."""

    def __init__(self, url: str, mode: str) -> None:
        self.url = url
        self.mode = mode

    def open(self) -> None:
        self.client = RSMQ.from_url(self.url, ns=NS, socket_timeout=REDIS_TIMEOUT)

    def close(self) -> None:
        self.client.close()

    def run(self, op: str, qname: str, n: int) -> None:
        if self.mode == "batch":
            run_batches(n, sync_batch_step(self.client, op, qname))
            return
        step = sync_step(self.client, op, qname)
        if self.mode == "threads":
            run_threads(n, CONCURRENCY, step)
        else:
            for _ in range(n):
                step()
