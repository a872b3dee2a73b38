"""AsyncRSMQ's own behaviour: concurrent calls coalesce into few round trips, each caller
still gets its own answer, and cancellation or a dead connection loses nothing silently."""

from __future__ import annotations

import asyncio

import pytest
import redis

from rsmq_core import AsyncRSMQ, MessageTooLong, QueueNotFound
from rsmq_core._protocol import ATTRIBUTE_FIELDS


@pytest.fixture
async def q(redis_url, ns):
    async with AsyncRSMQ.from_url(redis_url, ns=ns) as client:
        await client.create_queue("q", maxsize=1024)
        yield client


def script_calls(r) -> int:
    stats = r.info("commandstats")
    return sum(stats.get(k, {}).get("calls", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_concurrent_sends_coalesce(q, r):
    before = script_calls(r)
    ids = await asyncio.gather(*(q.send_message("q", f"m{i}") for i in range(500)))
    used = script_calls(r) - before
    assert len(set(ids)) == 500
    assert used <= 20, f"500 concurrent sends took {used} script calls"
    stored = r.hmget(f"{q.ns}:q:Q", ids)
    assert stored == [f"m{i}" for i in range(500)]
    assert (await q.get_queue_attributes("q")).totalsent == 500


async def test_concurrent_receives_hand_out_each_message_once(q, r):
    ids = set(await q.send_messages("q", [str(i) for i in range(30)]))
    before = script_calls(r)
    got = await asyncio.gather(*(q.receive_message("q") for _ in range(50)))
    assert script_calls(r) - before <= 5
    received = [m for m in got if m is not None]
    assert {m.id for m in received} == ids
    assert len(received) == 30
    assert all(m.rc == 1 for m in received)


async def test_concurrent_pops_and_deletes(q):
    ids = await q.send_messages("q", [str(i) for i in range(40)])
    got = await asyncio.gather(*(q.pop_message("q") for _ in range(20)))
    assert [m.id for m in got] == ids[:20]
    flags = await asyncio.gather(*(q.delete_message("q", i) for i in ids[15:]))
    assert flags == [False] * 5 + [True] * 20
    assert (await q.get_queue_attributes("q")).msgs == 0


async def test_coalesced_deletes_mixing_fences(q, r):
    ids = await q.send_messages("q", ["a", "b", "c", "d"])
    await q.receive_messages("q", 4)  # every rc is 1 now
    await q.delete_message("q", "x" * 32)  # Redis knows the script: no NOSCRIPT retry below
    before = script_calls(r)
    flags = await asyncio.gather(
        q.delete_message("q", "y" * 32),  # goes out alone; the rest wait and go together
        q.delete_message("q", ids[0], rc=1),
        q.delete_message("q", ids[1], rc=2),  # received once only: not deleted
        q.delete_message("q", ids[2]),
        q.delete_message("q", ids[2]),  # the same message twice in one batch: deleted once
        q.delete_message("q", "z" * 32),
        q.delete_message("q", ids[3], rc=1),
    )
    assert script_calls(r) - before == 2
    assert flags == [False, True, False, True, False, False, True]
    assert r.zrange(f"{q.ns}:q", 0, -1) == [ids[1]]
    assert sorted(r.hkeys(f"{q.ns}:q:Q")) == sorted(
        [*ATTRIBUTE_FIELDS, ids[1], f"{ids[1]}:rc", f"{ids[1]}:fr"]
    )


async def test_receives_with_different_vt_are_kept_apart(q, r):
    await q.send_messages("q", ["a", "b"])
    short, long = await asyncio.gather(q.receive_message("q", vt=1), q.receive_message("q", vt=50))
    assert r.zscore(f"{q.ns}:q", short.id) == short.fr + 1000
    assert r.zscore(f"{q.ns}:q", long.id) == long.fr + 50_000


async def test_one_bad_message_fails_only_its_caller(q):
    results = await asyncio.gather(
        q.send_message("q", "ok 1"),
        q.send_message("q", "x" * 1025),
        q.send_message("q", "ok 2"),
        return_exceptions=True,
    )
    assert isinstance(results[1], MessageTooLong)
    assert isinstance(results[0], str) and isinstance(results[2], str)
    assert [m.message for m in await q.receive_messages("q", 10)] == ["ok 1", "ok 2"]


async def test_missing_queue_fails_every_coalesced_caller(q):
    results = await asyncio.gather(
        *(q.send_message("nope", "x") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(e, QueueNotFound) for e in results)


async def test_cancelled_before_its_batch_left_sends_nothing(q):
    first = asyncio.create_task(q.send_message("q", "sent"))
    await asyncio.sleep(0)  # first is queued and its batch is about to leave
    second = asyncio.create_task(q.send_message("q", "cancelled"))
    await asyncio.sleep(0)  # the first batch is in flight; second waits for the next one
    second.cancel()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    assert [m.message for m in await q.receive_messages("q", 10)] == ["sent"]


async def test_connection_error_reaches_every_caller(redis_url, ns):
    async with AsyncRSMQ.from_url("redis://127.0.0.1:1/0", ns=ns) as dead:
        results = await asyncio.gather(
            *(dead.send_message("q", "x") for _ in range(3)), return_exceptions=True
        )
    assert all(isinstance(e, redis.ConnectionError) for e in results)


async def test_aclose_waits_for_calls_in_flight(redis_url, ns, r):
    client = AsyncRSMQ.from_url(redis_url, ns=ns)
    await client.create_queue("q")
    tasks = [asyncio.create_task(client.send_message("q", str(i))) for i in range(100)]
    await asyncio.sleep(0)
    await client.aclose()
    assert len({t.result() for t in tasks}) == 100
    assert r.zcard(f"{ns}:q") == 100


async def test_wraps_a_client_it_does_not_own(redis_url, ns):
    import redis.asyncio as aioredis

    own = aioredis.Redis.from_url(redis_url)
    async with AsyncRSMQ(own, ns=ns) as q:
        await q.create_queue("q")
    assert await own.ping()  # still open: the caller owns it
    await own.aclose()
