"""realtime/ in-process: the subscriber's fan-out, bounds, reconnects; the event log."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from realtime import RESYNC, EventLog, Listener, StatusEvent, Subscriber, Wakeup, live_workers
from realtime.events import events_channel, parse_published
from realtime.registry import WorkerInfo, heartbeat, unregister
from realtime.subscriber import TooManyChannels
from rsmq_core import Keys


@pytest.fixture
async def ar(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_wakeup_coalesces_notifications():
    wake = Wakeup()
    for _ in range(5):
        wake.set()
    assert await wake.wait(0) is True
    wake.clear()
    assert await wake.wait(0.01) is False
    assert wake.notifications == 5


async def test_listener_is_bounded_and_marks_the_gap():
    listener = Listener(maxsize=3)
    for i in range(10):
        listener._put(("ch", str(i).encode()))
    assert len(listener) == 3
    assert listener.dropped == 7
    assert [await listener.get() for _ in range(3)] == [RESYNC, ("ch", b"8"), ("ch", b"9")]


async def test_one_listener_hears_several_channels_in_order(ar, ns):
    async with Subscriber(ar) as sub:
        listener = sub.listen(f"{ns}:a", f"{ns}:b")
        await until_subscribed(ar, [f"{ns}:a", f"{ns}:b"])
        assert await listener.get() is RESYNC
        for channel, data in [("a", "1"), ("b", "2"), ("a", "3")]:
            await ar.publish(f"{ns}:{channel}", data)
        got = [await listener.get() for _ in range(3)]
    assert got == [(f"{ns}:a", b"1"), (f"{ns}:b", b"2"), (f"{ns}:a", b"3")]


async def test_one_connection_fans_out_to_every_listener(ar, ns):
    async with Subscriber(ar) as sub:
        wakes = [sub.wakeup(f"{ns}:a"), sub.wakeup(f"{ns}:a")]
        listeners = [sub.listen(f"{ns}:a"), sub.listen(f"{ns}:b")]
        await until(lambda: sub.connected.is_set())
        await until_subscribed(ar, [f"{ns}:a", f"{ns}:b"])
        for w in wakes:
            w.clear()
        assert await listeners[0].get() is RESYNC  # the catch-up after subscribing
        assert await listeners[1].get() is RESYNC
        await ar.publish(f"{ns}:a", "1")
        await ar.publish(f"{ns}:b", "2")
        assert await listeners[0].get() == (f"{ns}:a", b"1")
        assert await listeners[1].get() == (f"{ns}:b", b"2")
        assert all(await asyncio.gather(*(w.wait(5) for w in wakes)))
        clients = await ar.client_list(_type="pubsub")
        assert len(clients) == 1  # one pub/sub connection for the whole process


async def until_subscribed(ar, channels) -> None:
    async def all_there() -> bool:
        return all(n >= 1 for _, n in await ar.pubsub_numsub(*channels))

    async with asyncio.timeout(5):
        while not await all_there():
            await asyncio.sleep(0.005)


async def test_reconnects_and_wakes_everyone_after_a_kill(ar, ns):
    async with Subscriber(ar, backoff=(0.01, 0.1)) as sub:
        wake = sub.wakeup(f"{ns}:a")
        listener = sub.listen(f"{ns}:a")
        await until_subscribed(ar, [f"{ns}:a"])
        assert await listener.get() is RESYNC
        wake.clear()
        killed = await ar.client_kill_filter(_type="pubsub")
        assert killed >= 1
        # Whatever was published while it was down is gone; the catch-up wake says so.
        assert await wake.wait(5)
        assert await asyncio.wait_for(listener.get(), 5) is RESYNC
        await until_subscribed(ar, [f"{ns}:a"])
        await ar.publish(f"{ns}:a", "after")
        assert await asyncio.wait_for(listener.get(), 5) == (f"{ns}:a", b"after")
        assert sub.reconnects >= 1


async def test_subscriber_survives_redis_being_down(ns):
    from support.redis_server import RedisServer

    server = RedisServer()
    server.start()
    client = aioredis.Redis.from_url(server.url)
    try:
        async with Subscriber(client, backoff=(0.01, 0.05)) as sub:
            wake = sub.wakeup("ch")
            await until_subscribed(client, ["ch"])
            server.stop()
            await until(lambda: not sub.connected.is_set())
            wake.clear()
            server.start()
            assert await wake.wait(10)
            async with aioredis.Redis.from_url(server.url) as fresh:
                await until_subscribed(fresh, ["ch"])
    finally:
        await client.aclose()
        server.cleanup()


async def test_unlisten_unsubscribes_when_nobody_listens(ar, ns):
    async with Subscriber(ar) as sub:
        listener = sub.listen(f"{ns}:x")
        await until_subscribed(ar, [f"{ns}:x"])
        sub.unlisten(listener)

        async def gone() -> bool:
            return bool((await ar.pubsub_numsub(f"{ns}:x"))[0][1] == 0)

        async with asyncio.timeout(5):
            while not await gone():
                await asyncio.sleep(0.005)


async def test_event_log_records_streams_and_publishes(ar, ns):
    log = EventLog(ar, ns, ttl=60)
    async with Subscriber(ar) as sub:
        listener = sub.listen(events_channel(Keys.of(ns, "q")))
        await until_subscribed(ar, [events_channel(Keys.of(ns, "q"))])
        assert await listener.get() is RESYNC
        received = StatusEvent("received", "q", "a" * 32, rc=1, worker="w")
        finished = StatusEvent("done", "q", "a" * 32, rc=1, worker="w")
        ids = list(await asyncio.gather(log.record(received), log.record(finished)))
        published = [parse_published((await listener.get() or ("", b""))[1]) for _ in range(2)]
    assert [eid for eid, _ in published] == ids
    assert [e.status for _, e in published] == ["received", "done"]
    history = await log.history("q")
    assert [eid for eid, _ in history] == ids
    assert await log.history("q", after=ids[0]) == [history[1]]
    last = await log.last_status("q", "a" * 32)
    assert last is not None and last.status == "done" and last.ts
    assert await log.last_status("q", "b" * 32) is None


async def test_event_log_emit_never_raises_and_counts_failures(ns):
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    log = EventLog(dead, ns)
    log.emit(StatusEvent("done", "q", "a" * 32))
    await log.flush()
    assert log.failures == 1
    await dead.aclose()


async def test_registry_lists_and_forgets(ar, ns):
    info = WorkerInfo(
        id="w1", host="h", pid=1, mode="realtime", queues=["q"], concurrency=2, started=1
    )
    await heartbeat(ar, ns, info, ttl=5)
    assert 4900 < await ar.pttl(f"{ns}:@workers:w1") <= 5000  # lapses ttl seconds after
    (listed,) = await live_workers(ar, ns)
    assert listed.id == "w1" and listed.last_seen > 0
    await unregister(ar, ns, "w1")
    assert await live_workers(ar, ns) == []


async def test_a_listener_added_later_catches_up_once_redis_hears_its_channel(ar, ns):
    # What is published between a listener's start and Redis confirming its SUBSCRIBE is not
    # heard: the RESYNC that follows the confirmation is what tells the reader to replay.
    async with Subscriber(ar) as sub:
        first = sub.listen(f"{ns}:a")
        assert await asyncio.wait_for(first.get(), 5) is RESYNC
        wake = sub.wakeup(f"{ns}:b")
        wake.clear()  # its own "look once" at birth
        later = sub.listen(f"{ns}:b", f"{ns}:c")
        assert await asyncio.wait_for(later.get(), 5) is RESYNC
        # Only now: both channels are heard, and the wakeup of b was set by the confirmation.
        assert [n for _, n in await ar.pubsub_numsub(f"{ns}:b", f"{ns}:c")] == [1, 1]
        assert wake.is_set()
        assert len(later) == 0  # one RESYNC for the pair, not one per channel
        again = sub.listen(f"{ns}:a")  # already heard: nothing to catch up on
        await ar.publish(f"{ns}:a", "x")
        assert await asyncio.wait_for(again.get(), 5) == (f"{ns}:a", b"x")


def test_backoff_is_exponential_capped_and_jittered():
    from realtime.backoff import backoff

    for failures, top in [(1, 0.05), (2, 0.1), (3, 0.2), (6, 1.6), (7, 2.0), (40, 2.0)]:
        waits = [backoff(failures, 0.05, 2.0) for _ in range(300)]
        assert all(0 <= w <= top for w in waits), (failures, max(waits))
        # Full jitter: spread over the whole range (all 300 in one half: 2**-300).
        assert max(waits) > top / 2 and min(waits) < top / 2, failures
        assert len(set(waits)) > 250
    assert backoff(0, 0.05, 2.0) <= 0.05  # never a negative exponent


@pytest.fixture
def backoffs(monkeypatch):
    """The failure counts the subscriber asks its backoff for (the real backoff answers)."""
    from realtime.backoff import backoff

    seen: list[int] = []

    def spy(failures: int, base: float, cap: float) -> float:
        seen.append(failures)
        return backoff(failures, base, cap)

    monkeypatch.setattr("realtime.subscriber.backoff", spy)
    return seen


async def test_first_reconnect_is_fast_and_the_backoff_resets_after_a_recovery(
    ar, ns, backoffs, caplog
):
    caplog.set_level(logging.INFO, logger="realtime.subscriber")
    cap = 0.3
    async with Subscriber(ar, backoff=(0.02, cap)) as sub:
        wake = sub.wakeup(f"{ns}:a")
        await until_subscribed(ar, [f"{ns}:a"])
        await until(lambda: wake.is_set())

        async def kill() -> float:
            """Seconds until the subscriber is back and has caught up."""
            wake.clear()
            began = asyncio.get_running_loop().time()
            reconnects = sub.reconnects
            assert await ar.client_kill_filter(_type="pubsub") >= 1
            await until(lambda: sub.reconnects == reconnects + 1 and wake.is_set())
            return asyncio.get_running_loop().time() - began

        assert await kill() < 0.2  # the first wait is at most 20 ms
        assert await kill() < 0.2
        assert backoffs == [1, 2]  # lost again at once: the same outage, a longer wait
        await asyncio.sleep(cap)  # a connection that lasts the cap is a recovery
        await kill()
        assert backoffs == [1, 2, 1]
    # Each outage is told once when it ends (a refused subscribe would not be: see _run).
    assert caplog.text.count("pub/sub reconnected after 1 failed attempt(s)") == 2


async def test_the_default_first_reconnect_takes_tens_of_milliseconds(ar, ns, backoffs):
    async with Subscriber(ar) as sub:
        wake = sub.wakeup(f"{ns}:a")
        await until_subscribed(ar, [f"{ns}:a"])
        await until(lambda: wake.is_set())
        wake.clear()
        began = asyncio.get_running_loop().time()
        assert await ar.client_kill_filter(_type="pubsub") >= 1
        await until(lambda: sub.reconnects == 1 and wake.is_set())
        assert asyncio.get_running_loop().time() - began < 0.2
    assert backoffs == [1]


async def test_event_log_snapshot_and_history(ar, ns):
    log = EventLog(ar, ns)
    assert await log.snapshot("q", ["a" * 32]) == ("0-0", {})
    first = await log.record(StatusEvent(status="received", queue="q", id="a" * 32, rc=1))
    last = await log.record(StatusEvent(status="done", queue="q", id="a" * 32, rc=1))
    newest, statuses = await log.snapshot("q", ["a" * 32, "b" * 32])
    assert newest == last == await log.last_id("q")
    assert {i: e.status for i, e in statuses.items()} == {"a" * 32: "done"}
    assert [e.status for _, e in await log.history("q")] == ["received", "done"]
    assert [eid for eid, _ in await log.history("q", after=first)] == [last]
    assert await log.history("q", after=last) == []


async def test_aclose_stops_the_reader_at_once(ar, ns, caplog):
    sub = Subscriber(ar)
    sub.start()
    sub.wakeup(f"{ns}:a")
    await until_subscribed(ar, [f"{ns}:a"])
    began = asyncio.get_running_loop().time()
    await sub.aclose()
    # Cancelled, not left to the fallback that closes the connection after 0.5 s.
    assert asyncio.get_running_loop().time() - began < 0.4
    assert "did not stop" not in caplog.text
    assert not sub.connected.is_set()


async def test_listeners_hold_1000_by_default_and_channels_are_capped(ar, ns):
    sub = Subscriber(ar, max_channels=2)
    listener = sub.listen("a")
    for i in range(1001):
        listener._put(("a", b"%d" % i))
    assert (len(listener), listener.dropped) == (1000, 1)
    sub.listen("a", "b")  # one new channel: two in all
    with pytest.raises(TooManyChannels) as refused:
        sub.listen("b", "c")
    assert str(refused.value) == "this process follows 2 channels and may follow at most 2"
    assert refused.value.limit == 2
    assert sub._channels() == {"a", "b"}  # the refused listener follows nothing
