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


async def test_receives_and_deletes_share_calls(q, r):
    # Fifty callers that each receive, then delete, in turn: the deletes ride on the receives.
    await q.send_messages("q", [str(i) for i in range(1000)])
    await q.send_messages("q", [str(i) for i in range(1000, 2000)])
    before = script_calls(r)

    async def consume(n: int) -> list[bool]:
        flags = []
        for _ in range(n):
            m = await q.receive_message("q")
            assert m is not None
            flags.append(await q.delete_message("q", m.id, rc=m.rc))
        return flags

    flags = await asyncio.gather(*(consume(40) for _ in range(50)))
    used = script_calls(r) - before
    assert all(all(f) for f in flags)
    attrs = await q.get_queue_attributes("q")
    assert (attrs.msgs, attrs.totalrecv) == (0, 2000)
    assert sorted(r.hkeys(f"{q.ns}:q:Q")) == sorted(ATTRIBUTE_FIELDS)
    # In separate batches, two in flight each, 2000 receives and 2000 deletes took about 320
    # calls; in one batch, two in flight, about 160; one in flight, the callers go in step,
    # fifty operations a call: about 80.
    assert used <= 120, f"2000 receives and deletes took {used} script calls"


async def test_mixed_call_routes_each_answer_and_honours_fences(q, r):
    ids = await q.send_messages("q", ["a", "b", "c"])
    got = await q.receive_messages("q", 3, vt=0)  # received once, visible again at once
    assert [m.id for m in got] == ids
    ids += await q.send_messages("q", ["d", "e"])  # visible after a, b and c
    assert (await q.receive_message("q", vt=0)).message == "a"  # received twice
    await q.delete_message("q", "x" * 32)  # Redis knows the scripts: no NOSCRIPT retry below
    before = script_calls(r)
    results = await asyncio.gather(
        q.delete_message("q", "y" * 32),  # goes out alone; the rest wait and go together
        q.delete_message("q", ids[0], rc=1),  # received twice since: kept
        q.receive_message("q"),
        q.delete_message("q", ids[1], rc=1),
        q.receive_message("q"),
        q.delete_message("q", ids[2]),
        q.receive_message("q"),
        q.receive_message("q"),
    )
    assert script_calls(r) - before == 2
    first, kept, *rest = results
    assert (first, kept) == (False, False)
    # The deletes went first: b and c were visible, yet no receive of the same step got them.
    m1, flag_b, m2, flag_c, m3, m4 = rest
    assert (flag_b, flag_c) == (True, True)
    # In the order of their scores, which may tie within a millisecond: compared as a set.
    assert sorted((m.message, m.rc) for m in (m1, m2, m3)) == [("a", 3), ("d", 1), ("e", 1)]
    assert m4 is None
    assert sorted(r.zrange(f"{q.ns}:q", 0, -1)) == sorted([ids[0], ids[3], ids[4]])
    assert not r.hexists(f"{q.ns}:q:Q", ids[1]) and not r.hexists(f"{q.ns}:q:Q", f"{ids[2]}:rc")


async def test_deletes_ride_on_the_first_of_several_kinds_of_receive(q, r):
    ids = await q.send_messages("q", ["a", "b", "c"])
    await q.receive_message("q")  # a
    await q.delete_message("q", "x" * 32)
    before = script_calls(r)
    results = await asyncio.gather(
        q.delete_message("q", "y" * 32),  # alone
        q.receive_message("q", vt=50),
        q.delete_message("q", ids[0]),
        q.pop_message("q"),
    )
    assert script_calls(r) - before == 3  # the lone delete, then one call per kind of receive
    assert results[0] is False
    assert results[1].message == "b" and results[2] is True and results[3].message == "c"
    assert r.zscore(f"{q.ns}:q", ids[1]) == results[1].fr + 50_000
    assert r.zrange(f"{q.ns}:q", 0, -1) == [ids[1]]


async def test_a_failed_call_fails_only_the_callers_it_carried(q, monkeypatch):
    ids = await q.send_messages("q", ["a", "b", "c"])
    await q.receive_message("q")  # a
    real_call = q._call

    async def call(c):
        if c.script == "receive" and c.args[0] == 50:
            raise redis.ConnectionError("cut")
        return await real_call(c)

    monkeypatch.setattr(q, "_call", call)
    results = await asyncio.gather(
        q.delete_message("q", "y" * 32),  # alone
        q.receive_message("q"),  # carries the delete of a
        q.delete_message("q", ids[0]),
        q.receive_message("q", vt=50),  # its own call, which fails
        return_exceptions=True,
    )
    assert results[0] is False
    assert results[1].message == "b" and results[2] is True
    assert isinstance(results[3], redis.ConnectionError)
    monkeypatch.undo()
    assert (await q.receive_message("q")).message == "c"


async def test_missing_queue_fails_every_receive_and_delete_of_the_batch(q):
    some_id = (await q.send_messages("q", ["a"]))[0]
    results = await asyncio.gather(
        q.receive_message("nope"),
        q.delete_message("nope", some_id),
        q.receive_message("nope"),
        q.pop_message("nope"),
        q.delete_message("nope", some_id, rc=1),
        return_exceptions=True,
    )
    assert [type(e) for e in results] == [QueueNotFound] * 5


async def test_cancelled_receive_or_delete_before_its_batch_left_does_nothing(q, r):
    ids = await q.send_messages("q", ["a", "b"])
    first = asyncio.create_task(q.receive_message("q"))
    await asyncio.sleep(0)  # first is in flight, alone
    receive = asyncio.create_task(q.receive_message("q"))
    delete = asyncio.create_task(q.delete_message("q", ids[1]))
    await asyncio.sleep(0)  # both wait for the next batch
    receive.cancel()
    delete.cancel()
    assert (await first).message == "a"
    for task in (receive, delete):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert r.hget(f"{q.ns}:q:Q", f"{ids[1]}:rc") is None  # b: never received, not deleted
    assert sorted(r.zrange(f"{q.ns}:q", 0, -1)) == sorted(ids)


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


async def test_a_batch_failing_after_a_caller_was_cancelled_fails_every_other_caller():
    from rsmq_core._batch import Batcher

    alone, batch_out, fail = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def run(key: str, items: list[int]) -> list[int]:
        if len(items) == 1:
            await alone.wait()
            return items
        batch_out.set()
        await fail.wait()
        raise redis.ConnectionError("the batch failed")

    batcher: Batcher[str, int, int] = Batcher(run, 100, in_flight=1)
    first = asyncio.create_task(batcher.submit("k", 0))  # alone: goes out at once
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.submit("k", i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    alone.set()
    assert await first == 0
    await batch_out.wait()  # the three went out together
    waiting[1].cancel()
    await asyncio.sleep(0)
    fail.set()
    async with asyncio.timeout(2):  # none waits forever
        results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[0], redis.ConnectionError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[2], redis.ConnectionError)
    await batcher.wait_idle()
