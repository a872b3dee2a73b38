"""What every client's runner shares: the operations, the message, how many callers, and the
interface the measurement calls."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

NS = "bench"
BODY = "x" * 100
CONCURRENCY = 50
BATCH = 100
OPS = ("send", "recv_del", "pop")
REDIS_TIMEOUT = 10.0  # seconds one Redis call may take before the bench gives up


class QueueRanDry(RuntimeError):
    """A receive or pop found no message although the queue was filled for the job."""


@dataclass(frozen=True)
class Job:
    op: str
    qname: str
    n: int


class Runner:
    """One client in one mode: warms up on one queue, then times each job."""

    ops: tuple[str, ...] = OPS

    def measure(self, warmup: Job, jobs: Sequence[Job]) -> dict[str, float]:
        """Seconds taken by each job, by op."""
        raise NotImplementedError


class PyRunner(Runner):
    """A Python client: ``open``, warm up and time with ``run``, then ``close``."""

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, op: str, qname: str, n: int) -> None:
        raise NotImplementedError

    def measure(self, warmup: Job, jobs: Sequence[Job]) -> dict[str, float]:
        self.open()
        try:
            # Send the warm-up messages, then share them out among the consuming ops.
            self.run("send", warmup.qname, warmup.n)
            consumers = [op for op in self.ops if op != "send"]
            for op in consumers:
                self.run(op, warmup.qname, warmup.n // len(consumers))
            seconds = {}
            for job in jobs:
                start = time.perf_counter()
                self.run(job.op, job.qname, job.n)
                seconds[job.op] = time.perf_counter() - start
            return seconds
        finally:
            self.close()
