"""Operations data that travels through Redis: workers' job counters, histograms and pickup
samples, written at each heartbeat beside the registry entry and read by any web process.

Worker dynos cannot be scraped, so each worker adds what it counted since its last heartbeat
(deltas, never absolute values) to one hash per namespace, ``{ns}:@workers-metrics``, in the same
transaction as its registry entry. The totals therefore live in Redis, not in a worker: a
worker that dies takes nothing with it but the counts of its last unflushed heartbeat, and a
Prometheus counter never goes backwards. Fields (queue names cannot contain ``:``):

- ``jobs:{queue}:{status}`` -- jobs done, failed, retrying, dead;
- ``duration:{queue}:{i}`` / ``:sum`` / ``:count`` -- handler time, bucket ``i`` of
  :data:`DURATION_BUCKETS` (per bucket, not cumulative; the last index is +Inf);
- ``pickup:{queue}:{mode}:{i}`` / ``:sum`` / ``:count`` -- send -> first receive.

The last pickups of each mode also go to a capped list ``{ns}:@workers-pickups-{mode}``
(``"<epoch ms> <latency ms>"``), from which the dashboard takes exact percentiles over the
last minutes; the last jobs done go to ``{ns}:@workers-done-{mode}`` alike (send -> done), the
dashboard's latency chart, so that chart and its counts come from the same heartbeats.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from rsmq_core.client import AsyncRedis

DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
PICKUP_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
JOB_STATUSES = ("done", "failed", "retrying", "dead")
MODES = ("realtime", "polling")
PICKUP_SAMPLES = 1000  # kept per mode, in Redis and per heartbeat in a worker


Samples = list[tuple[int, float]]  # (epoch ms, latency ms)
Taken = tuple[Counter[str], dict[str, float], Samples, Samples]  # counts, sums, pickups, done


# "-", not ":", after the registry's index: ``{index}:*`` are the workers' entries, which
# readers list by that pattern; these stay in the index's hash slot all the same.
def metrics_key(index: str) -> str:
    return f"{index}-metrics"


def pickups_key(index: str, mode: str) -> str:
    return f"{index}-pickups-{mode}"


def done_key(index: str, mode: str) -> str:
    return f"{index}-done-{mode}"


def bucket_index(bounds: tuple[float, ...], value: float) -> int:
    """The bucket ``value`` falls in: the first bound at least ``value``, else +Inf."""
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


@dataclass(slots=True)
class Recorder:
    """What one worker counted: totals since it started (for its own METRICS_PORT) and the
    deltas not yet added to Redis (taken at each heartbeat, given back if it failed)."""

    mode: str
    totals: Counter[str] = field(default_factory=Counter)
    sums: dict[str, float] = field(default_factory=dict)
    pending: Counter[str] = field(default_factory=Counter)
    pending_sums: dict[str, float] = field(default_factory=dict)
    samples: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=PICKUP_SAMPLES))
    finished: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=PICKUP_SAMPLES))

    def _add(self, name: str, n: int = 1) -> None:
        self.totals[name] += n
        self.pending[name] += n

    def _add_sum(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value
        self.pending_sums[name] = self.pending_sums.get(name, 0.0) + value

    def job(self, queue: str, status: str) -> None:
        self._add(f"jobs:{queue}:{status}")

    def duration(self, queue: str, seconds: float) -> None:
        self._add(f"duration:{queue}:{bucket_index(DURATION_BUCKETS, seconds)}")
        self._add(f"duration:{queue}:count")
        self._add_sum(f"duration:{queue}:sum", seconds)

    def pickup(self, queue: str, sent_ms: float, received_ms: float) -> None:
        """Send -> first receive, both on Redis's clock (the id's time and the receive's)."""
        seconds = max(0.0, (received_ms - sent_ms) / 1000)
        prefix = f"pickup:{queue}:{self.mode}"
        self._add(f"{prefix}:{bucket_index(PICKUP_BUCKETS, seconds)}")
        self._add(f"{prefix}:count")
        self._add_sum(f"{prefix}:sum", seconds)
        self.samples.append((int(received_ms), seconds * 1000))

    def done(self, sent_ms: float, done_ms: float) -> None:
        """Send (Redis's clock, from the id) -> done (this worker's clock: no call to ask)."""
        self.finished.append((int(done_ms), max(0.0, done_ms - sent_ms)))

    def take(self) -> Taken:
        taken = (self.pending, self.pending_sums, list(self.samples), list(self.finished))
        self.pending, self.pending_sums = Counter(), {}
        self.samples.clear()
        self.finished.clear()
        return taken

    def give_back(self, taken: Taken) -> None:
        """A heartbeat that failed: its deltas go with the next one."""
        counts, sums, samples, finished = taken
        self.pending.update(counts)
        for name, value in sums.items():
            self.pending_sums[name] = self.pending_sums.get(name, 0.0) + value
        # Older than those taken since: when the two are more than kept, these go first.
        self.samples = deque([*samples, *self.samples], maxlen=PICKUP_SAMPLES)
        self.finished = deque([*finished, *self.finished], maxlen=PICKUP_SAMPLES)

    def write(self, pipe: Any, index: str, taken: Taken) -> None:
        """Queue ``taken`` on ``pipe`` (the heartbeat's transaction)."""
        counts, sums, samples, finished = taken
        key = metrics_key(index)
        for name, n in counts.items():
            pipe.hincrby(key, name, n)
        for name, value in sums.items():
            pipe.hincrbyfloat(key, name, value)
        for rows, plist in (
            (samples, pickups_key(index, self.mode)),
            (finished, done_key(index, self.mode)),
        ):
            if rows:
                pipe.lpush(plist, *(f"{at} {ms:.3f}" for at, ms in rows))
                pipe.ltrim(plist, 0, PICKUP_SAMPLES - 1)


def count_commands(redis: AsyncRedis) -> Callable[[], int] | None:
    """Count every command ``redis`` sends from now on (pipelines' and pub/sub's included):
    its pool's connections are made of a subclass whose ``pack_command`` counts. A function
    reading the count; None for a cluster client (a pool per node, made as nodes are found).
    Call it before the client's first command: connections already made are not counted."""
    if isinstance(redis, aioredis.RedisCluster):
        return None
    pool = redis.connection_pool
    sent = [0]
    base = pool.connection_class

    def pack_command(self: Any, *args: Any) -> Any:
        sent[0] += 1
        return base.pack_command(self, *args)

    pool.connection_class = type(
        f"Counting{base.__name__}", (base,), {"pack_command": pack_command}
    )
    return lambda: sent[0]


class Rate:
    """Per second of a growing count, between the last two readings; None at the first."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read
        self._last: tuple[float, int] | None = None

    def __call__(self) -> float | None:
        now, count = time.monotonic(), self._read()
        last, self._last = self._last, (now, count)
        if last is None or now <= last[0]:
            return None
        return round((count - last[1]) / (now - last[0]), 2)


async def read_metrics(redis: AsyncRedis, index: str) -> dict[str, float]:
    raw: Any = await redis.hgetall(metrics_key(index))
    return {k.decode(): float(v) for k, v in raw.items()}


def percentiles(samples: list[float], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[float]:
    """Nearest-rank percentiles of ``samples`` (exact, no interpolation)."""
    ordered = sorted(samples)
    n = len(ordered)
    return [ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] for q in qs]


def parse_samples(rows: list[bytes], since_ms: int) -> list[tuple[int, float]]:
    out = []
    for row in rows:
        at, _, ms = row.decode().partition(" ")
        if int(at) >= since_ms:
            out.append((int(at), float(ms)))
    return out


def job_families(
    fields: dict[str, float], queues: list[str], mode_of: Callable[[str], list[str]]
) -> list[Metric]:
    """``rsmq_jobs_total``, ``rsmq_job_duration_seconds`` and ``rsmq_pickup_latency_seconds``
    for ``queues`` from ``fields`` (the metrics hash, or a worker's own totals); every queue
    gets every status and, for each mode ``mode_of(queue)`` names, a histogram."""
    jobs = CounterMetricFamily(
        "rsmq_jobs_total",
        "Jobs by outcome: done, failed (a handler "
        "raised), retrying (made visible again later), dead "
        "(dead-lettered)",
        labels=["queue", "status"],
    )
    duration = HistogramMetricFamily(
        "rsmq_job_duration_seconds", "Time a handler ran, done or failed", labels=["queue"]
    )
    pickup = HistogramMetricFamily(
        "rsmq_pickup_latency_seconds",
        "Send to first receive, by the receiving worker's mode",
        labels=["queue", "mode"],
    )
    for queue in queues:
        for status in JOB_STATUSES:
            jobs.add_metric([queue, status], fields.get(f"jobs:{queue}:{status}", 0))
        _histogram(duration, [queue], fields, f"duration:{queue}", DURATION_BUCKETS)
        for mode in mode_of(queue):
            _histogram(pickup, [queue, mode], fields, f"pickup:{queue}:{mode}", PICKUP_BUCKETS)
    return [jobs, duration, pickup]


def _histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    fields: dict[str, float],
    prefix: str,
    bounds: tuple[float, ...],
) -> None:
    cumulative, buckets = 0.0, []
    for i, bound in enumerate((*bounds, math.inf)):
        cumulative += fields.get(f"{prefix}:{i}", 0)
        buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
    family.add_metric(labels, buckets, sum_value=fields.get(f"{prefix}:sum", 0))


def own_fields(recorder: Recorder) -> dict[str, float]:
    """A worker's totals since it started, shaped as the metrics hash."""
    return {**recorder.totals, **recorder.sums}
