"""``GET /metrics``: the whole deployment in Prometheus's text format, read from Redis at
scrape time, so every web process answers the same and no worker needs to be reachable.

A scrape costs Redis three round trips, whatever the number of queues and workers: TIME; the
queue index, the worker index and the metrics hash; then, in one pipeline, four reads per queue
and a GET of each worker's entry (the README's Monitoring section has the measured
figure). The queue figures are RSMQ's own keys; the job counters and histograms are the totals
workers add to Redis at each heartbeat (realtime.metrics).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from realtime.metrics import MODES, job_families, metrics_key
from realtime.registry import index_key, info_key
from rsmq_core import AsyncRSMQ, RSMQError, _protocol
from rsmq_core._protocol import sent_ms

from .api import endpoint, error_response


@dataclass(slots=True)
class QueueFigures:
    messages: int
    visible: int
    sent: int
    received: int
    oldest_visible_age: float  # seconds; 0 when nothing is visible


@dataclass(slots=True)
class Scrape:
    queues: dict[str, QueueFigures]
    workers: list[dict[str, Any]]  # the live workers' registry entries
    fields: dict[str, float]  # the metrics hash


async def read(rsmq: AsyncRSMQ) -> Scrape:
    redis, ns = rsmq.redis, rsmq.ns
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    index = index_key(redis, ns)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(f"{ns}:QUEUES")
        pipe.zrange(index, 0, -1)
        pipe.hgetall(metrics_key(index))
        names_raw, ids, raw_fields = await pipe.execute()
    names = sorted(n for n in (raw.decode(errors="replace") for raw in names_raw) if usable(n))
    ids = [i.decode() for i in ids]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            keys = rsmq.keys(name)
            pipe.hmget(keys.hash, "vt", "totalsent", "totalrecv")
            pipe.zcard(keys.zset)
            pipe.zcount(keys.zset, "-inf", now_ms)
            pipe.zrangebyscore(keys.zset, "-inf", now_ms, start=0, num=1)
        for worker_id in ids:  # a GET each: a cluster pipeline refuses MGET
            pipe.get(info_key(redis, ns, worker_id))
        replies = await pipe.execute()
    queues = {}
    for i, name in enumerate(names):
        (vt, sent, received), messages, visible, first = replies[4 * i : 4 * i + 4]
        if vt is None:  # in the index without its hash: not a queue (any longer)
            continue
        age = max(0.0, (now_ms - sent_ms(first[0].decode())) / 1000) if first else 0.0
        queues[name] = QueueFigures(messages, visible, int(sent or 0), int(received or 0), age)
    workers = [json.loads(row) for row in replies[4 * len(names) :] if row is not None]
    fields = {k.decode(): float(v) for k, v in raw_fields.items()}
    return Scrape(queues, workers, fields)


def usable(name: str) -> bool:
    """A name no operation takes (put in the index by another RSMQ client, or "QUEUES") is
    left out, as the dashboard leaves it out, rather than failing the whole scrape."""
    try:
        _protocol.check_qname(name)
    except RSMQError:  # InvalidFormat, MissingParameter for an empty name
        return False
    return True


class DeploymentCollector(Collector):
    """Every queue of the namespace and every live worker, from one :func:`read`."""

    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        queues = self.scrape.queues

        def gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for qname, q in queues.items():
                family.add_metric([qname], value(q))
            return family

        def counter(name: str, doc: str, value: Any) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["queue"])
            for qname, q in queues.items():
                family.add_metric([qname], value(q))
            return family

        yield gauge("rsmq_queue_messages", "Messages in the queue", lambda q: q.messages)
        yield gauge(
            "rsmq_queue_visible_messages", "Messages a receive can take now", lambda q: q.visible
        )
        yield gauge(
            "rsmq_queue_hidden_messages",
            "Messages delayed or received and not yet timed out",
            lambda q: q.messages - q.visible,
        )
        yield gauge(
            "rsmq_queue_oldest_visible_age_seconds",
            "Age since its send of the visible message first in line (0 when none is visible)",
            lambda q: q.oldest_visible_age,
        )
        # prometheus_client adds the _total suffix to counters' samples
        yield counter("rsmq_queue_sent", "Messages sent (RSMQ's totalsent)", lambda q: q.sent)
        yield counter("rsmq_queue_received", "Receives (RSMQ's totalrecv)", lambda q: q.received)
        yield from job_families(self.scrape.fields, list(queues), lambda _queue: list(MODES))
        workers = GaugeMetricFamily("rsmq_workers", "Live workers by mode", labels=["mode"])
        for mode in MODES:
            workers.add_metric([mode], sum(1 for w in self.scrape.workers if w["mode"] == mode))
        yield workers


def exposition(scrape: Scrape) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector(scrape))
    return generate_latest(registry)


def allowed(request: Request) -> bool:
    """No API_TOKEN nor METRICS_TOKEN: anyone; else a Bearer token that is either."""
    settings = request.app.state.settings
    tokens = [t for t in (settings.api_token, settings.metrics_token) if t is not None]
    if not tokens:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    token = given.strip(" ").encode()
    return scheme.lower() == "bearer" and any(
        hmac.compare_digest(token, t.encode()) for t in tokens
    )


@endpoint(auth=False)  # its own check: METRICS_TOKEN opens this route only
async def metrics(request: Request) -> Response:
    if not allowed(request):
        refusal = error_response(
            401,
            "unauthorized",
            "a valid token is required: Authorization: Bearer <METRICS_TOKEN or API_TOKEN>",
        )
        refusal.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refusal
    scrape = await read(request.app.state.rsmq)
    # Formatting takes prometheus_client tens of milliseconds for a hundred queues: in a
    # thread, so the websockets' loop is not held meanwhile.
    body = await run_in_threadpool(exposition, scrape)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
