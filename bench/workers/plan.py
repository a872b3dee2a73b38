"""What a run measures and how much of it: the configurations compared, and the sizes of a
full and a quick run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NS = "bench"
QUEUE = "jobs"
BODY = "{}"
# Each worker's counters in the registry are at most this old (seconds).
HEARTBEAT = 0.5
RATE = 200.0  # messages per second during a load phase


@dataclass(frozen=True)
class Config:
    name: str
    realtime: bool
    poll_interval: float = 1.0

    def settings(self) -> dict[str, Any]:
        return {
            "realtime": str(self.realtime).lower(),
            "poll_interval": self.poll_interval,
            "heartbeat": HEARTBEAT,
            "log_level": "INFO",
            "handler": "bench.handlers:record",
        }


CONFIGS = (
    Config("realtime", realtime=True),
    Config("polling 1.0 s", realtime=False, poll_interval=1.0),
    Config("polling 0.1 s", realtime=False, poll_interval=0.1),
)


@dataclass(frozen=True)
class Plan:
    load_seconds: float
    warmup_seconds: float
    idle_seconds: float
    worker_counts: tuple[int, ...]
    throughput_messages: int
    concurrencies: tuple[int, ...]
    budget_seconds: float

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(2.0, 0.25, 2.0, (1, 4, 8), 2_000, (1, 8, 32), 150.0)
        return cls(10.0, 0.5, 5.0, (1, 4, 8), 10_000, (1, 8, 32), 330.0)
