"""A Redis that forgot our scripts (SCRIPT FLUSH, restart) is served on the next call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from rsmq_core import RSMQ, AsyncRSMQ
from support.redis_server import RedisServer


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_script_flush_between_calls(rsmq, r):
    rsmq.create_queue("q")
    rsmq.send_message("q", "before")
    r.script_flush()
    mid = rsmq.send_message("q", "after")
    r.script_flush()
    assert rsmq.receive_message("q").message == "before"
    r.script_flush()
    assert rsmq.receive_message("q").id == mid
    assert rsmq.get_queue_attributes("q").totalrecv == 2


def test_sync_client_survives_a_redis_restart(own_server, ns):
    with RSMQ.from_url(own_server.url, ns=ns) as q:
        q.create_queue("q")
        q.send_message("q", "lost with the restart")
        own_server.restart()  # no persistence: the queue is gone, and so are the scripts
        with pytest.raises(Exception, match="Queue not found"):
            q.send_message("q", "x")
        q.create_queue("q")
        mid = q.send_message("q", "after")
        assert q.receive_message("q").id == mid


def test_async_client_survives_a_redis_restart(own_server, ns):
    async def scenario() -> None:
        async with AsyncRSMQ.from_url(own_server.url, ns=ns) as q:
            await q.create_queue("q")
            await q.send_message("q", "x")
            own_server.restart()
            await q.create_queue("q")
            ids = await asyncio.gather(*(q.send_message("q", str(i)) for i in range(20)))
            got = await asyncio.gather(*(q.receive_message("q") for _ in range(20)))
            assert sorted(m.id for m in got if m) == sorted(ids)

    asyncio.run(scenario())


def test_calls_fail_clearly_while_redis_is_down_and_work_after(own_server, ns):
    import redis

    with RSMQ.from_url(own_server.url, ns=ns, socket_connect_timeout=1) as q:
        q.create_queue("q")
        own_server.stop()
        with pytest.raises(redis.ConnectionError):
            q.send_message("q", "x")
        own_server.start()
        q.create_queue("q")
        assert q.send_message("q", "y")
