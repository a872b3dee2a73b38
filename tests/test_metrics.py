"""GET /metrics: every metric against the Redis state it describes, read back with
prometheus_client's own parser; workers' counters through Redis; what a scrape costs Redis."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio.connection import Connection

from realtime.metrics import MODES, PICKUP_BUCKETS, PICKUP_SAMPLES, Recorder, percentiles
from realtime.registry import WorkerInfo, heartbeat
from rsmq_core import RSMQ, AsyncRSMQ, logs
from rsmq_core._protocol import sent_ms
from rsmq_core.embedded import free_port
from support.workers import ROOT, WorkerProcess, wait_for
from tests.handlers import done_key
from web.dashboard import CHARTED, compare, snapshot
from web.metrics import read
from web.settings import SettingError
from web.settings import Settings as WebSettings
from worker.settings import SettingError as WorkerSettingError
from worker.settings import Settings as WorkerSettings

TOKEN = "a-metrics-test-token-0123456789"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample, by name and sorted labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def spawn(redis_url: str, ns: str) -> Iterator[Any]:
    procs: list[WorkerProcess] = []

    def make(mode: str = "realtime", **settings: Any) -> WorkerProcess:
        settings.setdefault("poll_interval", 0.1)
        w = WorkerProcess(redis_url, ns, realtime=str(mode == "realtime").lower(), **settings)
        procs.append(w)
        return w.start()

    yield make
    for w in procs:
        w.cleanup()


def server_ms(r: redis.Redis) -> float:
    s, us = r.time()
    return s * 1000 + us / 1000


def test_queue_figures_are_exact_against_redis(make_client, redis_url, ns, r):
    client = make_client()
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("a")
        q.create_queue("b")
        ids = [q.send_message("a", f"m{i}") for i in range(5)]
        q.send_message("a", "later", delay=60)  # hidden: delayed
        got = q.receive_message("a", vt=60)  # hidden: in flight (the oldest, ids[0])
        assert got is not None and got.id == ids[0]
        r.sadd(f"{ns}:QUEUES", "not:a:name", "QUEUES", "")  # no operation takes these: left out
        before = server_ms(r)
        samples = parse(client.get("/metrics").text)
        after = server_ms(r)
        attrs = q.get_queue_attributes("a")
    zset = f"{ns}:a"
    assert value(samples, "rsmq_queue_messages", queue="a") == r.zcard(zset) == attrs.msgs == 6
    # By the millisecond (RSMQ's getQueueAttributes counts every message due within the
    # current second as hidden: here all six)
    assert value(samples, "rsmq_queue_visible_messages", queue="a") == 4
    assert r.zcount(zset, "-inf", before) == r.zcount(zset, "-inf", after) == 4
    assert value(samples, "rsmq_queue_hidden_messages", queue="a") == 2
    assert value(samples, "rsmq_queue_sent_total", queue="a") == attrs.totalsent == 6
    assert value(samples, "rsmq_queue_received_total", queue="a") == attrs.totalrecv == 1
    # The visible message first in line is ids[1]: its age since its send, at the scrape.
    age = value(samples, "rsmq_queue_oldest_visible_age_seconds", queue="a")
    first = sent_ms(ids[1])
    assert (before - first) / 1000 - 0.002 <= age <= (after - first) / 1000 + 0.002
    for name in ("messages", "visible_messages", "hidden_messages", "oldest_visible_age_seconds"):
        assert value(samples, f"rsmq_queue_{name}", queue="b") == 0
    assert value(samples, "rsmq_queue_sent_total", queue="b") == 0
    assert {dict(labels).get("queue") for _, labels in samples} == {"a", "b", "jobs", None}
    for status in ("done", "failed", "retrying", "dead"):
        assert value(samples, "rsmq_jobs_total", queue="a", status=status) == 0
    for mode in MODES:
        assert value(samples, "rsmq_workers", mode=mode) == 0
        count = value(samples, "rsmq_pickup_latency_seconds_count", queue="a", mode=mode)
        assert count == 0


def test_workers_counters_and_histograms_travel_through_redis(spawn, make_client, redis_url, ns, r):
    client = make_client()
    fast = spawn("realtime", queues="fast", max_receives=2, retry_backoff=0, heartbeat=0.2)
    slow = spawn("polling", queues="slow", heartbeat=0.2)
    samples = parse(client.get("/metrics").text)
    assert value(samples, "rsmq_workers", mode="realtime") == 1
    assert value(samples, "rsmq_workers", mode="polling") == 1
    with RSMQ.from_url(redis_url, ns=ns, realtime=True) as q:
        for _ in range(6):
            q.send_message("fast", "{}")
        for _ in range(2):
            q.send_message("fast", json.dumps({"fail": True}))
        for _ in range(3):
            q.send_message("slow", "{}")
        wait_for(lambda: r.llen(done_key(ns)) == 9, what="9 messages done")
        # (the dead-letter queue is created with the first dead letter)
        wait_for(lambda: r.zcard(f"{ns}:fast-dead") == 2, what="2 dead letters")

    def scraped() -> Samples:
        s = parse(client.get("/metrics").text)
        done = value(s, "rsmq_jobs_total", queue="fast", status="done")
        dead = value(s, "rsmq_jobs_total", queue="fast", status="dead")
        slow_done = value(s, "rsmq_jobs_total", queue="slow", status="done")
        return s if (done, dead, slow_done) == (6, 2, 3) else {}

    samples = wait_for(scraped, what="the workers' heartbeats to carry their counters")
    # Each failing message: failed twice (max_receives=2), made visible again once, dead once.
    assert value(samples, "rsmq_jobs_total", queue="fast", status="failed") == 4
    assert value(samples, "rsmq_jobs_total", queue="fast", status="retrying") == 2
    assert value(samples, "rsmq_jobs_total", queue="slow", status="failed") == 0
    # Every handler run is timed, done or failed; every first receive is a pickup, in the
    # mode of the worker that received it.
    assert value(samples, "rsmq_job_duration_seconds_count", queue="fast") == 10
    assert value(samples, "rsmq_job_duration_seconds_count", queue="slow") == 3
    assert value(samples, "rsmq_pickup_latency_seconds_count", queue="fast", mode="realtime") == 8
    assert value(samples, "rsmq_pickup_latency_seconds_count", queue="fast", mode="polling") == 0
    assert value(samples, "rsmq_pickup_latency_seconds_count", queue="slow", mode="polling") == 3
    infinite = value(
        samples, "rsmq_pickup_latency_seconds_bucket", queue="slow", mode="polling", le="+Inf"
    )
    assert infinite == 3
    # The metrics keys are not registry entries: whatever lists those (the test harness's
    # readiness check, here) still finds only entries.
    late = spawn("realtime", queues="late", heartbeat=0.2)
    assert value(parse(client.get("/metrics").text), "rsmq_workers", mode="realtime") == 2
    late.stop()
    # A worker that stops (or dies) leaves its counters: Prometheus counters never go back.
    slow.stop()
    fast.kill()
    samples = parse(client.get("/metrics").text)
    assert value(samples, "rsmq_workers", mode="polling") == 0
    assert value(samples, "rsmq_jobs_total", queue="slow", status="done") == 3
    assert value(samples, "rsmq_jobs_total", queue="fast", status="done") == 6


def test_pickup_samples_give_the_dashboard_exact_percentiles():
    rec = Recorder("polling")
    for ms in (5, 1, 3, 2, 4, 100, 6, 7, 8, 9):
        rec.pickup("q", 1000.0, 1000.0 + ms)
    counts, sums, samples, _ = rec.take()
    assert counts["pickup:q:polling:count"] == 10
    assert sums["pickup:q:polling:sum"] == pytest.approx(0.145)
    assert percentiles([ms for _, ms in samples]) == [5, 100, 100]
    # 2 ms is in the 0.0025 bucket (index 1); 100 ms in 0.1 (index 6)
    assert counts["pickup:q:polling:1"] == 1 and PICKUP_BUCKETS[6] == 0.1
    assert counts["pickup:q:polling:6"] == 1
    assert rec.take() == ({}, {}, [], [])


def test_a_failed_heartbeat_gives_its_counts_back_to_the_next():
    rec = Recorder("realtime")
    rec.job("q", "done")
    for at in range(PICKUP_SAMPLES):
        rec.pickup("q", at, at + 1)
    taken = rec.take()
    rec.job("q", "done")
    rec.pickup("q", 5000, 5001)
    rec.done(1000, 1250)
    rec.give_back(taken)
    counts, sums, samples, finished = rec.take()
    assert finished == [(1250, 250.0)]
    assert counts["jobs:q:done"] == 2
    assert counts["pickup:q:realtime:count"] == PICKUP_SAMPLES + 1
    assert sums["pickup:q:realtime:sum"] == pytest.approx((PICKUP_SAMPLES + 1) / 1000)
    # More samples than kept: the oldest go, the newest stay, in order
    assert len(samples) == PICKUP_SAMPLES
    assert samples[0][0] == 2 and samples[-1][0] == 5001


class CountingConnection(Connection):
    """Counts what this connection sends: round trips and commands."""

    trips = 0
    commands = 0

    def pack_command(self, *args: Any) -> Any:
        CountingConnection.commands += 1
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.trips += 1
        await super().send_packed_command(command, check_health)


async def test_a_scrape_costs_three_round_trips_for_100_queues_and_20_workers(redis_url, ns):
    from redis.asyncio import ConnectionPool
    from redis.asyncio import Redis as AsyncRedis

    setup = AsyncRSMQ.from_url(redis_url, ns=ns)
    for i in range(100):
        await setup.create_queue(f"q{i:03d}")
        await setup.send_message(f"q{i:03d}", "x")
    for i in range(20):
        info = WorkerInfo(
            id=f"w{i:02d}",
            host="h",
            pid=i,
            mode=MODES[i % 2],
            queues=["q000"],
            concurrency=1,
            started=i,
        )
        await heartbeat(setup.redis, ns, info, ttl=60)
    await setup.aclose()
    pool = ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = AsyncRedis.from_pool(pool)
    rsmq = AsyncRSMQ(client, ns=ns)
    await client.ping()
    CountingConnection.trips = CountingConnection.commands = 0
    scrape = await read(rsmq)
    trips, commands = CountingConnection.trips, CountingConnection.commands
    await client.aclose()
    assert len(scrape.queues) == 100 and len(scrape.workers) == 20
    assert trips == 3
    # TIME; SMEMBERS, ZRANGE, HGETALL; four reads a queue and a GET a worker
    assert commands == 1 + 3 + 4 * 100 + 20


def test_metrics_need_api_token_or_metrics_token(make_client):
    api_token = "an-api-token-for-metrics-0123456789"
    client = make_client(api_token=api_token, metrics_token=TOKEN)
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["message"] == (
        "a valid token is required: Authorization: Bearer <METRICS_TOKEN or API_TOKEN>"
    )
    assert refused.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for token in (api_token, TOKEN):
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and "rsmq_workers" in ok.text
    # The metrics token opens /metrics only
    api = client.get("/api/queues", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status_code == 401


def test_a_worker_serves_its_own_metrics_on_metrics_port(spawn, redis_url, ns, r):
    port = free_port()
    spawn("realtime", queues="own", metrics_port=port)
    with RSMQ.from_url(redis_url, ns=ns, realtime=True) as q:
        q.send_message("own", "{}")
    wait_for(lambda: r.llen(done_key(ns)) == 1, what="the message done")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        samples = parse(answer.read().decode())
    assert value(samples, "rsmq_jobs_total", queue="own", status="done") == 1
    assert value(samples, "rsmq_pickup_latency_seconds_count", queue="own", mode="realtime") == 1


def test_log_format_json_writes_one_object_a_line():
    assert logs.config("INFO", "json")["handlers"]["stdout"]["formatter"] == "json"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.config("INFO", "json")["formatters"]["json"]["()"]())
    log = logging.getLogger("tests.metrics.json")
    log.addHandler(handler)
    try:
        try:
            raise ValueError("two\nlines")
        except ValueError:
            log.exception("it failed: %s", "why")
        log.warning("plain")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "it failed: why" and first["level"] == "ERROR"
    assert first["logger"] == "tests.metrics.json"
    assert first["time"].endswith("+00:00")
    assert "ValueError: two\nlines" in first["exception"]
    assert second["message"] == "plain" and "exception" not in second


def test_bad_log_format_is_named():
    message = "LOG_FORMAT='xml': use one of line, json"
    with pytest.raises(SettingError, match=f"^{re.escape(message)}$"):
        WebSettings.from_env({"LOG_FORMAT": "xml"})
    with pytest.raises(WorkerSettingError, match=f"^{re.escape(message)}$"):
        WorkerSettings.from_env({"LOG_FORMAT": "xml", "HANDLER": "a:b"})
    assert WorkerSettings.from_env({"LOG_FORMAT": "JSON", "HANDLER": "a:b"}).log_format == "json"


def test_bad_metrics_port_is_named():
    message = "METRICS_PORT='http' is not a whole number"
    with pytest.raises(WorkerSettingError, match=f"^{re.escape(message)}$"):
        WorkerSettings.from_env({"METRICS_PORT": "http", "HANDLER": "a:b"})


async def test_the_dashboard_compares_modes_from_what_workers_wrote(redis_url, ns):
    rsmq = AsyncRSMQ.from_url(redis_url, ns=ns)
    workers = []
    for mode, latencies in (("realtime", (1, 2, 3, 4)), ("polling", (100, 300, 500, 900))):
        info = WorkerInfo(
            id=f"w-{mode}",
            host="h",
            pid=1,
            mode=mode,
            queues=["q"],
            concurrency=1,
            started=1,
            commands_per_second=4.0,
        )
        rec = Recorder(mode)
        now = time.time() * 1000
        rec.pickup("q", now - 400_000 - 7, now - 400_000)  # older than the window: left out
        for ms in latencies:
            rec.pickup("q", now - ms, now)
        taken = rec.take()
        write = functools.partial(rec.write, taken=taken)
        await heartbeat(rsmq.redis, ns, info, ttl=60, also=write)
        workers.append(dataclasses.asdict(info))
    got = await compare(rsmq.redis, ns, workers)
    await rsmq.aclose()
    assert got["realtime"] == {
        "workers": 1,
        "pickups": 4,
        "p50": 2.0,
        "p95": 4.0,
        "p99": 4.0,
        "commands_per_second": 4.0,
    }
    assert got["polling"]["p50"] == 300.0 and got["polling"]["p99"] == 900.0


async def test_the_dashboards_done_figures_are_what_workers_wrote(redis_url, ns):
    """Jobs done and failed per queue and the latency chart: one snapshot of the heartbeats,
    whenever the page was opened; the chart the last CHARTED of every mode, oldest first."""
    rsmq = AsyncRSMQ.from_url(redis_url, ns=ns)
    await rsmq.create_queue("q")
    for mode, first in (("realtime", 0), ("polling", 1)):
        info = WorkerInfo(
            id=f"w-{mode}", host="h", pid=1, mode=mode, queues=["q"], concurrency=1, started=1
        )
        rec = Recorder(mode)
        for i in range(first, 2 * CHARTED, 2):  # the modes' jobs alternate in time
            rec.job("q", "done")
            rec.done(1000.0 * i, 1000.0 * i + 7)
        rec.job("q", "failed")
        write = functools.partial(rec.write, taken=rec.take())
        await heartbeat(rsmq.redis, ns, info, ttl=60, also=write)
    got = await snapshot(rsmq)
    await rsmq.aclose()
    assert (got["queues"]["q"]["done"], got["queues"]["q"]["failed"]) == (2 * CHARTED, 2)
    assert [at for at, _, _ in got["done"]] == [1000 * i + 7 for i in range(CHARTED, 2 * CHARTED)]
    assert {ms for _, ms, _ in got["done"]} == {7.0}
    assert [mode for _, _, mode in got["done"][:2]] == ["realtime", "polling"]


@pytest.mark.timeout(120)
def test_run_compare_starts_a_worker_of_each_mode_and_a_trickle(redis_url, r, tmp_path):
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_url, PORT=str(port))
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "launch.py"), "--compare", "--once"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Open http://127.0.0.1:{port}/dashboard" in done.stdout
    got = asyncio.run(_compare(redis_url))
    assert got["realtime"]["pickups"] >= 10 and got["polling"]["pickups"] >= 10
    assert got["polling"]["p50"] > got["realtime"]["p50"]


async def _compare(redis_url: str) -> dict[str, Any]:
    rsmq = AsyncRSMQ.from_url(redis_url, ns="rsmq")
    try:
        return await compare(rsmq.redis, "rsmq", [])
    finally:
        await rsmq.aclose()


@pytest.mark.timeout(120)
def test_metrics_on_a_cluster(redis_cluster, ns):
    from support.web import WebProcess

    web = WebProcess(redis_cluster.url, ns, REDIS_CLUSTER="1")
    worker = WorkerProcess(redis_cluster.url, ns, cluster=True, queues="a,b,c")
    try:
        worker.start()
        with RSMQ.from_url(redis_cluster.url, ns=ns, cluster=True, realtime=True) as q:
            for name in ("a", "b", "c"):
                q.send_message(name, "{}")

        def scraped() -> Samples:
            with urllib.request.urlopen(web.url("/metrics"), timeout=5) as answer:
                s = parse(answer.read().decode())
            dones = [value(s, "rsmq_jobs_total", queue=n, status="done") for n in "abc"]
            return s if dones == [1, 1, 1] else {}

        samples = wait_for(scraped, what="three jobs done, counted through the cluster")
    finally:
        worker.cleanup()
        web.stop()
    assert value(samples, "rsmq_workers", mode="realtime") == 1
    for name in "abc":
        assert value(samples, "rsmq_queue_sent_total", queue=name) == 1
        assert value(samples, "rsmq_queue_messages", queue=name) == 0
        pickups = value(samples, "rsmq_pickup_latency_seconds_count", queue=name, mode="realtime")
        assert pickups == 1


def test_a_short_metrics_token_is_refused_at_start():
    message = "METRICS_TOKEN has 5 characters; use at least 16 (e.g. openssl rand -hex 24)"
    with pytest.raises(SettingError, match=f"^{re.escape(message)}$"):
        WebSettings.from_env({"METRICS_TOKEN": "short", "HOST": "127.0.0.1"})


def test_many_open_dashboards_share_one_read_of_redis(make_client):
    from tests.test_web import ORIGIN, next_frame

    client = make_client()
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(client.websocket_connect("/ws", headers=ORIGIN)) for _ in range(3)
        ]
        for ws in sockets:
            ws.send_json({"type": "watch"})
        seen = [[next_frame(ws, "stats") for _ in range(3)] for ws in sockets]
    # Every frame a dashboard gets is a snapshot every other dashboard got too: one read of
    # Redis a tick for all of them (the process's one Stats task), never one per dashboard.
    last_ticks = [{f["at"] for f in frames[1:]} for frames in seen]
    assert set.intersection(*last_ticks)
    assert all(set(f["compare"]) == {"realtime", "polling"} for frames in seen for f in frames)


async def test_a_worker_counts_every_command_its_client_sends(redis_url, ns):
    from realtime.metrics import Rate, count_commands
    from rsmq_core.client import connect

    client = connect(redis_url)
    sent = count_commands(client)
    assert sent is not None
    rate = Rate(sent)
    assert rate() is None  # no interval yet
    await client.ping()
    connected = sent()  # PING, and what the connection's handshake sent (CLIENT SETINFO...)
    assert connected >= 1
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(f"{ns}:k", 1)
        pipe.get(f"{ns}:k")
        await pipe.execute()
    await client.aclose()
    assert sent() - connected == 4  # MULTI, SET, GET, EXEC
    per_second = rate()
    assert per_second is not None and per_second > 0


def test_a_worker_with_log_format_json_writes_only_json_lines(spawn, redis_url, ns, r):
    w = spawn("realtime", queues="logged", log_format="json")
    with RSMQ.from_url(redis_url, ns=ns, realtime=True) as q:
        q.send_message("logged", "{}")
    wait_for(lambda: r.llen(done_key(ns)) == 1, what="the message done")
    w.stop()
    records = [json.loads(line) for line in w.stdout().splitlines()]
    assert any(" done logged/" in rec["message"] for rec in records)
    assert {"time", "level", "logger", "message"} <= set(records[0])
