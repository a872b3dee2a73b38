"""Redis Sentinel (redis+sentinel:// URLs, failover) and sends confirmed by replicas
(min_replicas), on a real master, replica and three sentinels (support/redis_sentinel.py)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from realtime.subscriber import Subscriber
from rsmq_core import RSMQ, AsyncRSMQ, NotReplicated
from rsmq_core.cli import main as rsmq_cli
from rsmq_core.connection import SentinelURL, check_url
from support.redis_sentinel import SentinelGroup, wait_for
from support.web import WebProcess
from support.workers import WorkerProcess
from tests.handlers import done
from web.settings import SettingError
from web.settings import Settings as WebSettings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    """A group the tests of this module share and never fail over."""
    g = SentinelGroup()
    try:
        g.start()
        yield g
    finally:
        g.cleanup()


@pytest.fixture
def fresh() -> Iterator[SentinelGroup]:
    """A group of the test's own, to kill the master of."""
    g = SentinelGroup()
    try:
        g.start()
        yield g
    finally:
        g.cleanup()


# URLs ----------------------------------------------------------------------------------------


def test_sentinel_url_is_taken_apart():
    where = SentinelURL.parse("redis+sentinel://app:s%40cret@10.0.0.1,[::1]:26380/main/3")
    assert where.sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert (where.service, where.db, where.username, where.password) == ("main", 3, "app", "s@cret")
    check_url("redis+sentinel://h:1/svc")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "redis+sentinel://h:1",
            "names no service: redis+sentinel://host:26379/<the master's name in sentinel.conf>",
        ),
        (
            "redis+sentinel://h:1/svc/x",
            "has the database 'x': give a number (redis+sentinel://host:26379/svc/0)",
        ),
        (
            "redis+sentinel://h:1,,h:2/svc",
            "has the sentinel address '': give host:port pairs "
            "separated by commas (redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster)",
        ),
        (
            "redis+sentinel://h:99999/svc",
            "has the sentinel address 'h:99999': give host:port "
            "pairs separated by commas (redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster)",
        ),
        (
            "redis+sentinel://h:1/svc?x=1",
            "has query parameters, which a redis+sentinel:// URL does not take",
        ),
    ],
)
def test_bad_sentinel_url_is_named(url, reason):
    with pytest.raises(ValueError) as refused:
        check_url(url)
    assert str(refused.value) == f"REDIS_URL={url!r} {reason}"


def test_bad_sentinel_url_hides_the_password():
    with pytest.raises(ValueError) as refused:
        check_url("redis+sentinel://u:hunter2@h:1/svc/x")
    assert "hunter2" not in str(refused.value) and "u:***@" in str(refused.value)


# The library on a sentinel URL ----------------------------------------------------------------


def test_sync_and_async_clients_work_on_a_sentinel_url(group, ns):
    with RSMQ.from_url(group.url, ns=ns) as q:
        q.create_queue("q")
        sent = q.send_message("q", "one")

    async def take() -> str | None:
        async with AsyncRSMQ.from_url(group.url, ns=ns) as aq:
            got = await aq.receive_message("q")
            return None if got is None else got.id

    assert asyncio.run(take()) == sent
    with group.master().client() as r:
        assert r.hexists(f"{ns}:q:Q", sent)


def test_cli_on_a_sentinel_url(group, ns, capsys):
    assert rsmq_cli(["--url", group.url, "--ns", ns, "create", "q"]) == 0
    assert rsmq_cli(["--url", group.url, "--ns", ns, "list"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == ["q"]


def test_failover_the_clients_and_the_subscriber_follow(fresh, ns):
    """kill -9 the master: the first call after the promotion succeeds (its retries ask the
    sentinels again, the scripts are loaded on the new master) and the pub/sub connection
    hears the new master."""

    async def run() -> None:
        async with AsyncRSMQ.from_url(fresh.url, ns=ns, realtime=True) as q:
            await q.create_queue("q")
            before = await q.send_message("q", "before")
            async with Subscriber(q.redis, backoff=(0.05, 0.2)) as sub:
                wake = sub.wakeup(q.keys("q").channel)
                await asyncio.wait_for(sub.connected.wait(), 10)
                with fresh.master().client() as r:  # the replica has what was acknowledged
                    wait_for("the replica to catch up", lambda: r.wait(1, 1000) == 1)
                old = fresh.kill_master()
                # Waited for with the event loop held, as in a busy process or with a master
                # whose machine vanished: the pooled connection is found dead only when used,
                # and its retries must ask the sentinels again, not redial the dead master.
                new = fresh.wait_failover(old)
                after = await q.send_message("q", "after")  # the first call: no error
                got = await q.receive_messages("q", 10)
                assert [m.message for m in got] == ["before", "after"]
                assert (await q.get_queue_attributes("q")).msgs == 2
                # The subscriber reconnected to the new master and hears its PUBLISHes.
                async with asyncio.timeout(15):
                    while True:
                        wake.clear()
                        await q.notify("q")
                        if await wake.wait(0.2):
                            break
                assert sub.reconnects >= 1
        with new.client() as r:
            assert r.hexists(f"{ns}:q:Q", before) and r.hexists(f"{ns}:q:Q", after)

    asyncio.run(run())

    with RSMQ.from_url(fresh.url, ns=ns) as q:  # the blocking client, from scratch
        assert q.get_queue_attributes("q").msgs == 2


def test_worker_and_web_resume_on_the_promoted_replica(fresh, ns):
    """The worker and the web app on the sentinel URL; the master is killed mid-run; sends
    through the API after the failover are processed by the same worker."""
    master = fresh.master()
    worker = WorkerProcess(fresh.url, ns, admin=lambda: master.client(), concurrency=2)
    web = None
    try:
        worker.start()
        web = WebProcess(fresh.url, ns)
        first = web.post("/api/queues/jobs/messages", {"message": "first"})["id"]
        with master.client() as r:
            wait_for("the first job", lambda: {d["id"] for d in done(r, ns)} == {first})
            wait_for("the replica to catch up", lambda: r.wait(1, 1000) == 1)
        old = fresh.kill_master()
        new = fresh.wait_failover(old)

        def send_after() -> str | None:
            try:
                return str(web.post("/api/queues/jobs/messages", {"message": "after"})["id"])
            except urllib.error.HTTPError as exc:  # 503 while the client finds the master
                assert exc.code == 503, exc.read()
                return None

        after = wait_for("a send after the failover", send_after)
        with new.client() as r:
            wait_for("the job after the failover", lambda: after in {d["id"] for d in done(r, ns)})
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        if web is not None:
            web.stop()
        worker.stop()
        worker.cleanup()


# min_replicas ---------------------------------------------------------------------------------


def test_min_replicas_confirmed_sends_return_their_ids(group, ns):
    with RSMQ.from_url(group.url, ns=ns, min_replicas=1) as q:
        q.create_queue("q")
        one = q.send_message("q", "one")
        batch = q.send_messages("q", ["a", "b"])
        deduped = q.send_message("q", "d", dedup_id="d1")
        assert q.send_message("q", "d", dedup_id="d1") == deduped

    async def coalesced() -> list[str]:
        async with AsyncRSMQ.from_url(group.url, ns=ns, min_replicas=1) as aq:
            assert await aq.send_message("q", "d", dedup_id="d1") == deduped
            return list(await asyncio.gather(*(aq.send_message("q", str(i)) for i in range(20))))

    ids = asyncio.run(coalesced())
    replica = next(n for n in group.nodes if n is not group.master())
    with replica.client() as r:  # WAIT said so: the replica has every one of them
        assert all(r.hexists(f"{ns}:q:Q", i) for i in [one, *batch, *ids])


def test_unconfirmed_send_raises_not_replicated_and_is_stored(group, ns):
    """Two replicas asked of a group that has one: WAIT times out, the send raises a
    NotReplicated that says the message is stored on the master and not confirmed."""
    with RSMQ.from_url(group.url, ns=ns, min_replicas=2, replica_timeout=0.1) as q:
        q.create_queue("q")
        with pytest.raises(NotReplicated) as refused:
            q.send_message("q", "one")
        (sent,) = refused.value.ids
        assert str(refused.value) == (
            f"Message {sent} is stored on the master but not confirmed by 2 replica(s) within "
            "0.1s (1 confirmed): it may be lost if the master fails before a replica has it; "
            "do not send it again, it would be stored twice"
        )
        error = refused.value
        assert (error.name, error.replicas, error.wanted) == ("notReplicated", 1, 2)
        with pytest.raises(NotReplicated) as batch:
            q.send_messages("q", ["a", "b"])
        assert str(batch.value).startswith("2 messages are stored on the master but not")
        assert [m.id for m in q.receive_messages("q", 10)] == [sent, *batch.value.ids]

    async def coalesced() -> list[Any]:
        async with AsyncRSMQ.from_url(group.url, ns=ns, min_replicas=2, replica_timeout=0.1) as aq:
            return await asyncio.gather(
                *(aq.send_message("q", str(i)) for i in range(5)), return_exceptions=True
            )

    failed = asyncio.run(coalesced())
    assert all(isinstance(x, NotReplicated) and len(x.ids) == 1 for x in failed)
    with group.master().client() as r:
        assert all(r.hexists(f"{ns}:q:Q", x.ids[0]) for x in failed)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": -1}, "min_replicas=-1: give a whole number, 0 or more"),
        (
            {"min_replicas": 1, "replica_timeout": 0},
            "replica_timeout=0: give a number of seconds above 0",
        ),
        (
            {"min_replicas": 1, "socket_timeout": 1},
            "socket_timeout=1 is not above "
            "replica_timeout=1.0: a send waiting for its replicas would time out and be sent "
            "again",
        ),
        (
            {"min_replicas": 1, "cluster": True},
            "min_replicas is not supported on a Redis Cluster: use 0 (the default)",
        ),
    ],
)
def test_bad_min_replicas_is_named(redis_url, kwargs, message):
    for cls in (RSMQ, AsyncRSMQ):
        with pytest.raises(ValueError) as refused:
            cls.from_url(redis_url, **kwargs)
        assert str(refused.value) == message


def test_api_answers_an_unconfirmed_send_202_with_a_warning(group, ns):
    web = WebProcess(group.url, ns, SEND_MIN_REPLICAS="2", SEND_REPLICA_TIMEOUT="0.1")
    try:
        answer = web.post("/api/queues/jobs/messages", {"message": "hi"})
        assert answer["warning"]["error"] == "notReplicated"
        assert answer["warning"]["message"].startswith(
            f"Message {answer['id']} is stored on the master but not confirmed by 2 replica(s)"
        )
        request = urllib.request.Request(
            web.url("/api/queues/jobs/messages"),
            method="POST",
            data=json.dumps({"messages": ["a", "b"]}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 202
            body = json.loads(reply.read())
        assert len(body["ids"]) == 2 and body["warning"]["error"] == "notReplicated"
        with group.master().client() as r:
            assert all(r.hexists(f"{ns}:jobs:Q", i) for i in [answer["id"], *body["ids"]])
    finally:
        web.stop()


def test_api_confirmed_send_has_no_warning(group, ns):
    web = WebProcess(group.url, ns, SEND_MIN_REPLICAS="1")
    try:
        answer = web.post("/api/queues/jobs/messages", {"message": "hi"})
        assert set(answer) == {"id"}
    finally:
        web.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SEND_MIN_REPLICAS": "one"},
            "SEND_MIN_REPLICAS='one' must be a whole number: how "
            "many replicas must confirm a send, 0 (the default) for none",
        ),
        (
            {"SEND_MIN_REPLICAS": "1", "REDIS_CLUSTER": "true"},
            "SEND_MIN_REPLICAS is not supported with REDIS_CLUSTER: use 0",
        ),
        (
            {"SEND_REPLICA_TIMEOUT": "0"},
            "SEND_REPLICA_TIMEOUT='0' must be a finite number, at least 0.001",
        ),
    ],
)
def test_bad_send_settings_are_named(env, message):
    with pytest.raises(SettingError) as refused:
        WebSettings.from_env({"HOST": "127.0.0.1", **env})
    assert str(refused.value) == message


def test_send_settings_are_read():
    settings = WebSettings.from_env(
        {"HOST": "127.0.0.1", "SEND_MIN_REPLICAS": "2", "SEND_REPLICA_TIMEOUT": "0.5"}
    )
    assert (settings.send_min_replicas, settings.send_replica_timeout) == (2, 0.5)


def test_redis_error_names_the_sentinels_when_none_answers(ns):
    """No sentinel reachable: redis-py's MasterNotFoundError, a ConnectionError like any
    unreachable Redis (the web app answers 503, the worker backs off)."""
    with RSMQ.from_url("redis+sentinel://127.0.0.1:1/svc", ns=ns) as q:
        with pytest.raises(redis.ConnectionError) as failed:
            q.list_queues()
    assert "No master found for 'svc'" in str(failed.value)
