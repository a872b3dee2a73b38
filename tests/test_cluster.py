"""rsmq-realtime on a 3-master Redis Cluster: where the keys land, a worker, a master restart,
the web app. (Every queue behaviour runs on the cluster too: tests/test_queue.py.)"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import websockets

from realtime import Listener, Subscriber
from rsmq_core import RSMQ, Keys
from rsmq_core.cli import main
from rsmq_core.client import connect
from support.redis_cluster import RedisCluster
from support.web import WebProcess
from support.workers import WorkerProcess, wait_for
from tests.handlers import done, started
from tests.test_web_server import QUEUED_TO_DONE, statuses


def keys_by_master(cluster: RedisCluster, pattern: str) -> dict[int, set[str]]:
    """The keys matching pattern that each master itself holds (a plain connection per node)."""
    held: dict[int, set[str]] = {}
    for i, port in enumerate(cluster.ports):
        with redis.Redis(port=port, decode_responses=True) as node:
            held[i] = set(node.scan_iter(match=pattern, count=1000))
    return held


def test_one_queue_one_slot_and_queues_spread_over_masters(redis_cluster, ns):
    names = [f"spread{n}" for n in range(12)]
    with RSMQ.from_url(redis_cluster.url, ns=ns, cluster=True) as q:
        for name in names:
            q.create_queue(name)
            q.send_message(name, "x")
        held = keys_by_master(redis_cluster, f"{ns}:*")
        masters_of: dict[str, set[int]] = defaultdict(set)
        for i, keys in held.items():
            for key in keys:
                for name in set(re.split(r"[:{}]", key)) & set(names):
                    masters_of[name].add(i)
        for name in names:
            k = q.keys(name)
            # Both of the queue's keys exist, on the one master that owns their shared slot.
            assert masters_of[name] == {redis_cluster.owner(k.zset)}, name
            assert {k.zset, k.hash} <= held[redis_cluster.owner(k.zset)]
        assert {i for m in masters_of.values() for i in m} == {0, 1, 2}
        assert sorted(q.list_queues()) == sorted(names)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.cleanup()


def start(workers: list[WorkerProcess], w: WorkerProcess) -> WorkerProcess:
    """Start w listed for cleanup first: one that never gets ready is killed all the same
    (it was left running when its wait failed)."""
    workers.append(w)
    return w.start()


def done_ids(r: redis.RedisCluster, ns: str) -> set[str]:
    return {d["id"] for d in done(r, ns)}


def all_empty(q: RSMQ, names: list[str]) -> bool:
    return all(q.get_queue_attributes(name).msgs == 0 for name in names)


def test_a_realtime_worker_handles_queues_on_every_master(redis_cluster, ns, workers):
    names = redis_cluster.queue_names(ns, per_master=2)
    # A heartbeat of 5 s: a pickup well within that came from a notification, not a look.
    w = WorkerProcess(redis_cluster.url, ns, cluster=True, queues=",".join(names), heartbeat=5)
    start(workers, w)
    with (
        RSMQ.from_url(redis_cluster.url, ns=ns, realtime=True, cluster=True) as q,
        redis.RedisCluster.from_url(redis_cluster.url) as r,
    ):
        sent = {mid for name in names for mid in q.send_messages(name, ["{}"] * 10)}
        wait_for(lambda: done_ids(r, ns) == sent, timeout=20, what="every message done")
        lags = [e["t"] - int(e["id"][:10], 36) / 1000 for e in started(r, ns)]
        assert max(lags) < 2000, f"slowest pickup {max(lags):.0f} ms after its send"
        wait_for(lambda: all_empty(q, names), what="every queue empty")


def test_a_master_restarted_mid_run_loses_nothing(redis_cluster, ns, workers):
    names = redis_cluster.queue_names(ns, per_master=2)
    # Handlers whose own Redis calls hit the stopped master fail and are retried; enough
    # receives that none is dead-lettered meanwhile.
    w = WorkerProcess(
        redis_cluster.url, ns, cluster=True, queues=",".join(names), vt=5, max_receives=10
    )
    start(workers, w)
    body = json.dumps({"sleep": 0.05})
    with (
        RSMQ.from_url(redis_cluster.url, ns=ns, realtime=True, cluster=True) as q,
        redis.RedisCluster.from_url(redis_cluster.url) as r,
    ):
        sent = {mid for name in names for mid in q.send_messages(name, [body] * 40)}
        wait_for(lambda: len(done(r, ns)) >= 20, timeout=20, what="the run to be under way")
        victim = redis_cluster.owner(q.keys(names[0]).zset)
        assert len(done_ids(r, ns)) < len(sent), "the run ended before the master went down"
        redis_cluster.restart(victim)
        # Sends after the restart reach the same master again, through the same clients.
        sent |= {mid for name in names for mid in q.send_messages(name, [body] * 5)}
        wait_for(lambda: done_ids(r, ns) >= sent, timeout=60, what="every message done")
        assert w.proc.poll() is None, w.output()
        wait_for(lambda: all_empty(q, names), what="every queue empty")


def test_the_web_app_streams_status_events_from_the_cluster(redis_cluster, ns, workers):
    web = WebProcess(redis_cluster.url, ns, REDIS_CLUSTER="1")
    try:
        start(workers, WorkerProcess(redis_cluster.url, ns, cluster=True))
        sent: list[str] = []

        def send() -> None:
            body = {"message": json.dumps({"sleep": 0.05})}
            sent.append(web.post("/api/queues/jobs/messages", body)["id"])

        events = asyncio.run(statuses(web.port, send, want=5))
    finally:
        web.stop()
    assert [e["status"] for e in events] == QUEUED_TO_DONE
    assert {e["id"] for e in events} == set(sent)


def test_a_worker_told_cluster_on_a_standalone_redis_stops_saying_so(redis_url, ns):
    w = WorkerProcess(redis_url, ns, cluster=True)
    try:
        w.start(ready=False)
        assert w.proc.wait(15) != 0
        assert "cluster" in w.output().lower(), w.output()
    finally:
        w.cleanup()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_on_the_cluster(redis_cluster, ns, capsys, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)
    base = ["--url", redis_cluster.url, "--ns", ns, "--cluster"]
    assert cli(capsys, *base, "create", "jobs")[0] == 0
    code, out, _ = cli(capsys, *base, "send", "jobs", "hello")
    mid = json.loads(out)
    assert code == 0
    # $REDIS_CLUSTER stands for --cluster; the message is where a cluster client finds it.
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    code, out, _ = cli(capsys, "--url", redis_cluster.url, "--ns", ns, "receive", "jobs")
    assert code == 0 and (json.loads(out)["id"], json.loads(out)["message"]) == (mid, "hello")
    with RSMQ.from_url(redis_cluster.url, ns=ns, cluster=True) as q:
        assert q.get_queue_attributes("jobs").totalrecv == 1
        assert q.list_queues() == ["jobs"]


def test_the_cli_without_cluster_on_a_cluster_node_says_to_add_it(
    redis_cluster, ns, capsys, monkeypatch
):
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)
    base = ["--url", redis_cluster.url, "--ns", ns]
    names = redis_cluster.queue_names(ns, 1)  # one per master: some live elsewhere
    codes = [cli(capsys, *base, "create", name) for name in names]
    refused = [(code, err) for code, _, err in codes if code != 0]
    assert refused, "every queue on the node the URL names: the test proves nothing"
    for code, err in refused:
        assert code == 2 and "add --cluster" in err, err


def test_the_cli_told_cluster_on_a_standalone_redis_says_so(redis_url, ns, capsys):
    code, out, err = cli(capsys, "--url", redis_url, "--ns", ns, "--cluster", "list")
    assert (code, out) == (3, "")  # 3: cannot connect
    assert "cannot connect" in err and "cluster mode is not enabled" in err.lower(), err


def test_the_websocket_keeps_its_events_across_a_master_restart(redis_cluster, ns, workers):
    web = WebProcess(redis_cluster.url, ns, REDIS_CLUSTER="1")
    try:
        start(workers, WorkerProcess(redis_cluster.url, ns, cluster=True))
        victim = redis_cluster.owner(Keys.of(ns, "jobs", cluster=True).zset)
        body = {"message": json.dumps({"sleep": 0.05})}

        async def flow() -> tuple[str, list[dict[str, Any]], str, list[dict[str, Any]]]:
            async with websockets.connect(f"ws://127.0.0.1:{web.port}/ws") as ws:
                await ws.send(json.dumps({"type": "subscribe", "queue": "jobs"}))

                async def events(want: int) -> list[dict[str, Any]]:
                    got: list[dict[str, Any]] = []
                    async with asyncio.timeout(30):
                        while len(got) < want:
                            frame = json.loads(await ws.recv())
                            if frame["type"] == "event":
                                got.append(frame["event"])
                    return got

                while json.loads(await ws.recv())["type"] != "subscribed":
                    pass
                post = web.post
                first = (await asyncio.to_thread(post, "/api/queues/jobs/messages", body))["id"]
                before = await events(5)
                # The queue's master (its events' stream and channels) goes down and comes back.
                await asyncio.to_thread(redis_cluster.restart, victim)
                second = (await asyncio.to_thread(post, "/api/queues/jobs/messages", body))["id"]
                after = await events(5)
                return first, before, second, after

        first, before, second, after = asyncio.run(flow())
    finally:
        web.stop()
    for mid, events in ((first, before), (second, after)):
        assert {e["id"] for e in events} == {mid}
        # As a set: "queued" (written by the web after the send) may land after "received".
        assert sorted(e["status"] for e in events) == sorted(QUEUED_TO_DONE)


async def next_message(listener: Listener, timeout: float = 10) -> tuple[str, bytes]:
    """The next delivery that is not a RESYNC."""
    async with asyncio.timeout(timeout):
        while True:
            item = await listener.get()
            if item is not None:
                return item


def test_the_subscriber_outlives_a_whole_cluster_outage(redis_cluster, ns):
    # Found in review: with no master answering, rebuilding the sharded connections raised
    # RedisClusterException (not a ConnectionError) and the subscriber's task ended for good.
    channel = Keys.of(ns, "q", cluster=True).channel

    async def go() -> None:
        client = connect(redis_cluster.url, cluster=True)
        try:
            async with Subscriber(client, backoff=(0.05, 0.5)) as sub:
                listener = sub.listen(channel)
                await asyncio.wait_for(sub.connected.wait(), 10)
                await client.spublish(channel, "before")
                assert await next_message(listener) == (channel, b"before")
                try:
                    for i in range(len(redis_cluster.nodes)):
                        redis_cluster.kill(i)
                    async with asyncio.timeout(10):
                        while sub.connected.is_set():
                            await asyncio.sleep(0.01)
                    await asyncio.sleep(1.5)  # several failed rebuilds with no master at all
                finally:
                    for node in redis_cluster.nodes:
                        await asyncio.to_thread(node.start)
                    await asyncio.to_thread(redis_cluster.wait_ok)
                async with asyncio.timeout(20):
                    while True:  # published until heard: the subscribe lands when it lands
                        await client.spublish(channel, "after")
                        try:
                            item = await next_message(listener, timeout=0.2)
                        except TimeoutError:
                            continue
                        assert item == (channel, b"after")
                        break
                assert sub.reconnects >= 1
        finally:
            await client.aclose()

    asyncio.run(go())


def test_unfollowing_and_following_again_is_no_reconnect(redis_cluster, ns):
    # Found in review: the answer to an SUNSUBSCRIBE followed at once by a new subscribe
    # looked unasked for ("the cluster moved the channel") and rebuilt every connection.
    first, other = (Keys.of(ns, q, cluster=True).channel for q in ("a", "b"))

    async def go() -> None:
        client = connect(redis_cluster.url, cluster=True)
        try:
            async with Subscriber(client) as sub:
                keeper = sub.listen(other)
                await asyncio.wait_for(sub.connected.wait(), 10)
                for _ in range(5):
                    sub.unlisten(sub.listen(first))
                again = sub.listen(first)
                async with asyncio.timeout(10):
                    while True:
                        await client.spublish(first, "x")
                        try:
                            if await next_message(again, timeout=0.2) == (first, b"x"):
                                break
                        except TimeoutError:
                            continue
                await client.spublish(other, "y")
                assert await next_message(keeper) == (other, b"y")
                assert sub.reconnects == 0
        finally:
            await client.aclose()

    asyncio.run(go())
