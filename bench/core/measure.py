"""How a row is measured: a warm-up queue and a fresh queue for each operation (filled
beforehand when the operation consumes), the runner's timings, then a check of every queue
(all sent, or all consumed) before it is deleted."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bench.core.runner import BODY, NS, REDIS_TIMEOUT, Job, Runner
from rsmq_core import RSMQ


@dataclass
class Row:
    key: str
    client: str
    mode: str
    n: int
    runner: Runner
    seconds: dict[str, list[float]] = field(default_factory=dict)  # per op, one per round

    def rate(self, op: str) -> float | None:
        """Messages per second for ``op`` in the best round, or None if this row does not do it."""
        if op not in self.seconds:
            return None
        return self.n / min(self.seconds[op])


class Bench:
    """Makes the queues, runs each row's measurements, checks and removes the queues."""

    def __init__(self, url: str) -> None:
        self.admin = RSMQ.from_url(url, ns=NS, socket_timeout=REDIS_TIMEOUT)
        self.names = itertools.count()

    def close(self) -> None:
        self.admin.close()

    def new_queue(self, fill: int = 0) -> str:
        qname = f"q{next(self.names)}"
        self.admin.create_queue(qname)
        for start in range(0, fill, 1000):
            self.admin.send_messages(qname, [BODY] * min(1000, fill - start))
        return qname

    def measure(self, row: Row) -> None:
        warmup = Job("warmup", self.new_queue(), max(1000, row.n // 10))
        jobs = [
            Job(op, self.new_queue(0 if op == "send" else row.n), row.n) for op in row.runner.ops
        ]
        try:
            seconds = row.runner.measure(warmup, jobs)
            for job in jobs:
                self.check(job)
                row.seconds.setdefault(job.op, []).append(seconds[job.op])
        finally:
            for qname in [warmup.qname, *(job.qname for job in jobs)]:
                self.admin.delete_queue(qname)

    def check(self, job: Job) -> None:
        attrs = self.admin.get_queue_attributes(job.qname)
        expected = job.n if job.op == "send" else 0
        if attrs.msgs != expected or (job.op != "send" and attrs.totalrecv != job.n):
            raise RuntimeError(
                f"{job.op} on {job.qname}: {attrs.msgs} messages left, {attrs.totalrecv} received"
                f" (expected {expected} left, {0 if job.op == 'send' else job.n} received)"
            )
