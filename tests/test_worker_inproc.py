"""The worker's bookkeeping and timings, in-process against the suite's real Redis.

Each test runs a Worker in the test's own event loop, with a handler the test drives, and a
HEARTBEAT of a minute unless the heartbeat's look is what the test is about: no wake-up the
test expects can come from a heartbeat instead. Timings are asserted with a tolerance.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio import connection as redis_connection

from rsmq_core import AsyncRSMQ
from rsmq_core import _protocol as p
from worker import Job
from worker.settings import Settings
from worker.worker import Hook, Worker

SLOW_HEARTBEAT = 60.0  # longer than any test: a missing wake-up cannot hide behind it


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.005)


async def server_ms(ar: aioredis.Redis) -> float:
    seconds, micros = await ar.time()
    return seconds * 1000 + micros / 1000


@pytest.fixture
async def ar(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def q(redis_url: str, ns: str) -> AsyncIterator[AsyncRSMQ]:
    async with AsyncRSMQ.from_url(redis_url, ns=ns, realtime=True) as client:
        await client.create_queue("jobs")
        yield client


Run = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def run(redis_url: str, ns: str, ar: aioredis.Redis) -> AsyncIterator[Run]:
    """Start a Worker on ``handler`` with the settings given; stopped after the test."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(
        handler: Callable[[Job], Awaitable[Any]],
        *,
        startup: Hook | None = None,
        shutdown: Hook | None = None,
        **settings: Any,
    ) -> Worker:
        settings = {"redis_url": redis_url, "ns": ns, "heartbeat": SLOW_HEARTBEAT, **settings}
        worker = Worker(Settings(**settings), handler, startup=startup, shutdown=shutdown)
        task = asyncio.create_task(worker.run())
        running.append((worker, task))
        await until(lambda: worker.counters["receives"] >= 1, what="the first look")
        if worker.settings.realtime:
            channel = worker.rsmq.keys("jobs").channel
            await until(
                lambda: worker._subscriber is not None and worker._subscriber._heard(channel),
                what="subscribed",
            )
        return worker

    yield start
    for worker, task in running:
        worker.stop()
        async with asyncio.timeout(10):
            await task


async def test_a_fractional_retry_backoff_rounds_up_to_a_whole_second(run, q, ar, ns):
    failed = asyncio.Event()

    async def fail(job: Job) -> None:
        failed.set()
        raise RuntimeError("no")

    w = await run(fail, retry_backoff=0.5, max_receives=5)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["retried"] == 1, what="the retry")
    now = await server_ms(ar)
    # Hidden about 1 s (0.5 rounded up), never 0 s: the retry is not at once.
    assert 800 < await ar.zscore(f"{ns}:jobs", mid) - now <= 1000
    await w.events.flush()
    events = [json.loads(f[b"e"]) for _, f in await ar.xrange(f"{ns}:jobs:events")]
    assert [e.get("retry_in") for e in events if e["status"] == "retrying"] == [1]


async def test_a_retry_is_received_again_when_due(run, q, ar, ns):
    """Nothing announces a message coming back from a retry: the worker looks again itself."""
    starts: list[tuple[int, float]] = []

    async def fail_first(job: Job) -> None:
        starts.append((job.rc, await server_ms(ar)))
        if job.rc == 1:
            raise RuntimeError("once")

    w = await run(fail_first, retry_backoff=1)
    await q.send_message("jobs", "x")
    await until(lambda: w.counters["done"] == 1, timeout=5, what="the retry handled")
    (rc1, t1), (rc2, t2) = starts
    assert (rc1, rc2) == (1, 2)
    assert 950 <= t2 - t1 < 1200, f"retried {t2 - t1:.0f} ms after the failure"


async def test_the_lease_keeper_extends_only_its_own_receive(run, q, ar, ns, redis_url):
    release = asyncio.Event()
    began = asyncio.Event()

    async def hold(job: Job) -> None:
        began.set()
        await release.wait()

    w = await run(hold, vt=1)
    mid = await q.send_message("jobs", "x")
    await asyncio.wait_for(began.wait(), 5)
    # As if its visibility timeout ran out: another worker receives it (rc 2), for a minute.
    # Through a client that announces nothing: the worker, woken, could take it back first.
    async with AsyncRSMQ.from_url(redis_url, ns=ns) as quiet:
        assert await quiet.change_message_visibility("jobs", mid, 0)
        taken = await quiet.receive_message("jobs", vt=60)
    assert taken is not None and taken.rc == 2
    score = await ar.zscore(f"{ns}:jobs", mid)
    # The keeper tries at 0.6 VT: fenced by rc 1, it must not shorten the new holder's lease.
    await until(lambda: w.counters["lost_leases"] == 1, timeout=3, what="the keeper to give up")
    assert await ar.zscore(f"{ns}:jobs", mid) == score
    release.set()
    await until(lambda: w.counters["lost_leases"] == 2, what="the fenced delete to fail")
    assert w.counters["done"] == 0
    assert await ar.hexists(f"{ns}:jobs:Q", mid)  # still the new holder's


async def test_the_lease_keeper_extends_its_own_message(run, q, ar, ns):
    release = asyncio.Event()

    async def hold(job: Job) -> None:
        await release.wait()

    w = await run(hold, vt=1)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w._inflight, what="the handler to start")
    first = await ar.zscore(f"{ns}:jobs", mid)
    await until(lambda: w.counters["receives"] >= 1, what="started")
    deadline = time.monotonic() + 3
    while await ar.zscore(f"{ns}:jobs", mid) == first:
        assert time.monotonic() < deadline, "the lease was never extended"
        await asyncio.sleep(0.01)
    release.set()
    await until(lambda: w.counters["done"] == 1, what="done")
    # The keeper ends with its handler: one still extending would find the message gone
    # at its next turn (0.6 s) and count a lease lost.
    await asyncio.sleep(0.8)
    assert w.counters["lost_leases"] == 0


async def test_a_delete_found_already_gone_counts_as_done(run, q, ar, ns):
    """As when a delete's reply was lost with its connection and the resend finds the message
    gone: the handler finished, so it is done, not a lost lease."""

    async def delete_itself(job: Job) -> None:
        # What the lost first try of the worker's own delete did.
        await ar.hdel(f"{ns}:jobs:Q", job.id, f"{job.id}:rc", f"{job.id}:fr")
        await ar.zrem(f"{ns}:jobs", job.id)

    w = await run(delete_itself)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["done"] == 1, what="done")
    assert w.counters["lost_leases"] == 0
    await w.events.flush()
    last = json.loads(await ar.get(f"{ns}:jobs:status:{mid}"))
    assert last["status"] == "done"


async def test_an_earlier_unannounced_message_wakes_a_sleeping_worker_on_time(
    run, q, ar, ns, redis_url
):
    """A worker asleep until a message due in 30 s; a sender not in realtime mode sends one
    due in 1 s, announcing nothing. The heartbeat's look sees it is earlier and the worker
    handles it when due, not 29 s late."""
    handled: dict[str, float] = {}

    async def record(job: Job) -> None:
        handled[job.id] = await server_ms(ar)

    w = await run(record, heartbeat=0.2)
    await q.send_message("jobs", "late", delay=30)
    await until(lambda: w._states["jobs"].due_at is not None, what="the worker to know of it")
    async with AsyncRSMQ.from_url(redis_url, ns=ns, realtime=False) as quiet:
        mid = await quiet.send_message("jobs", "early", delay=1)
    due = int(mid[:10], 36) / 1000 + 1000
    await until(lambda: mid in handled, timeout=3, what="the early message")
    assert 0 <= handled[mid] - due < 150, f"handled {handled[mid] - due:.0f} ms after due"


async def test_a_peers_due_now_announcement_is_acted_on(run, q, ar, ns, redis_url):
    """A peer's receive announced "0 0": it left a message due now (one it could not take).
    The worker, idle with nothing due, receives it without waiting for a notification."""
    handled: list[str] = []

    async def record(job: Job) -> None:
        handled.append(job.id)

    w = await run(record)
    assert w._states["jobs"].due_at is None  # idle: nothing due, asleep until told
    async with AsyncRSMQ.from_url(redis_url, ns=ns, realtime=False) as quiet:
        mid = await quiet.send_message("jobs", "x")
    await ar.publish(f"{ns}:rt:jobs:receives", "0 0")
    await until(lambda: handled == [mid], timeout=2, what="the message due now")


async def test_a_peers_announcement_of_an_earlier_message_wakes_the_worker_when_due(
    run, q, ar, ns, redis_url
):
    handled: dict[str, float] = {}

    async def record(job: Job) -> None:
        handled[job.id] = await server_ms(ar)

    w = await run(record)
    await q.send_message("jobs", "late", delay=30)  # announced: the worker looks, learns of it
    await until(lambda: w._states["jobs"].due_at is not None, what="the worker to know of it")
    async with AsyncRSMQ.from_url(redis_url, ns=ns, realtime=False) as quiet:
        mid = await quiet.send_message("jobs", "x", delay=1)
    await ar.publish(f"{ns}:rt:jobs:receives", "0 1000")  # as the peer that saw it would
    due = int(mid[:10], 36) / 1000 + 1000
    await until(lambda: mid in handled, timeout=3, what="the message when due")
    assert 0 <= handled[mid] - due < 150


async def test_released_messages_are_announced_at_shutdown(redis_url, ns, q, ar):
    began = asyncio.Event()

    async def hang(job: Job) -> None:
        began.set()
        await asyncio.sleep(3600)

    w = Worker(
        Settings(redis_url=redis_url, ns=ns, heartbeat=SLOW_HEARTBEAT, shutdown_grace=0.1, vt=60),
        hang,
    )
    task = asyncio.create_task(w.run())
    async with ar.pubsub() as pubsub:
        await pubsub.subscribe(f"{ns}:rt:jobs")
        assert (await pubsub.get_message(timeout=1))["type"] == "subscribe"
        mid = await q.send_message("jobs", "x")
        assert (await pubsub.get_message(timeout=1))["data"] == b"1"  # the send's
        await asyncio.wait_for(began.wait(), 5)
        w.stop()
        async with asyncio.timeout(10):
            await task
        # Others are asleep until they hear: the release says so, as a send would.
        message = await pubsub.get_message(timeout=1)
    assert message is not None and message["data"] == b"1"
    assert w.counters["released"] == 1
    assert await ar.zscore(f"{ns}:jobs", mid) <= await server_ms(ar)


async def test_polling_receives_again_at_once_after_a_full_batch(run, q, ar, ns):
    handled: list[float] = []

    async def record(job: Job) -> None:
        handled.append(time.monotonic())

    await q.send_messages("jobs", ["x"] * 6)
    began = time.monotonic()
    w = await run(record, realtime=False, concurrency=2, poll_interval=5)
    await until(lambda: len(handled) == 6, timeout=3, what="six messages, three batches")
    assert max(handled) - began < 1.0  # not a poll interval (5 s) between batches
    assert w.counters["receives"] >= 3


def test_the_receive_rank_rotates_over_the_sorted_peers(redis_url: str) -> None:
    """As README ("No thundering herd") says: for each notification (its payload, the queue
    size) one worker has rank 0, the next in sorted id order rank 1, ...; as the payload
    grows by one, rank 0 passes to the next worker."""
    ids = ("a-1", "b-2", "c-3")
    workers = []
    for wid in reversed(ids):
        w = Worker(Settings(redis_url=redis_url), lambda job: None)
        w.id = wid
        w._peers = {"jobs": ids}
        workers.append(w)
    for turn in range(7):
        ranks = {w.id: w._rank("jobs", str(turn).encode()) for w in workers}
        first = ids[turn % 3]
        assert ranks[first] == 0, (turn, ranks)
        assert sorted(ranks.values()) == [0, 1, 2]
        assert ranks[ids[(turn + 1) % 3]] == 1
    assert workers[0]._rank("jobs", b"x") == workers[0]._rank("jobs", b"0")  # not a count
    lone = workers[0]
    lone._peers = {}
    assert lone._rank("jobs", b"5") == 0  # alone, always first
    lone._peers = {"jobs": ("a-1", "b-2")}  # not yet in the registry: counted in its place
    assert lone._rank("jobs", b"0") == 2


async def test_the_heartbeats_look_wakes_only_for_an_earlier_message(run, q, ar, ns, redis_url):
    """The look compares each queue's first message with the due time the consumer knows:
    a message due later (or the one it knows) wakes nothing, an earlier one wakes it; each
    queue by its own reply."""
    w = await run(lambda job: asyncio.sleep(0), queues=("other", "jobs"))
    state = w._states["jobs"]
    await q.send_message("jobs", "late", delay=30)
    await until(lambda: state.due_at is not None and not state.wake.is_set(), what="asleep")
    await w._look_for_unannounced()
    assert not state.wake.is_set()  # the message it knows of: no receive
    async with AsyncRSMQ.from_url(redis_url, ns=ns, realtime=False) as quiet:
        await quiet.send_message("jobs", "later still", delay=60)
        await w._look_for_unannounced()
        assert not state.wake.is_set()
        await quiet.send_message("jobs", "early", delay=2)
    await w._look_for_unannounced()
    assert state.wake.is_set()
    assert not w._states["other"].wake.is_set()  # empty: nothing to look at there


async def test_a_running_worker_is_registered_with_its_counters(run, q, ar, ns):
    from realtime import live_workers

    w = await run(lambda job: asyncio.sleep(0), concurrency=3)
    (info,) = await live_workers(ar, ns)
    assert (info.id, info.mode, info.queues, info.concurrency) == (w.id, "realtime", ["jobs"], 3)
    assert {"receives", "done", "lost_leases"} <= set(info.counters)


async def test_a_notification_wakes_rank_0_at_once_and_rank_1_a_stagger_later(
    run, q, ar, ns, redis_url
):
    """Two peers (the other one only in this worker's view): for each notification one
    receives at once, the other after STAGGER, and stands down if a peer's receive announces
    that it emptied the queue."""
    handled: dict[str, float] = {}

    async def record(job: Job) -> None:
        handled[job.id] = time.monotonic()

    w = await run(record, stagger=0.5)
    w._peers = {"jobs": (w.id, w.id + "z")}  # this worker first in sorted order
    rt = f"{ns}:rt:jobs"
    async with AsyncRSMQ.from_url(redis_url, ns=ns, realtime=False) as quiet:
        # Payload 1 (the queue's size): rank (0 - 1) % 2 = 1, a stagger late.
        first = await quiet.send_message("jobs", "a")
        began = time.monotonic()
        await ar.publish(rt, "1")
        await until(lambda: first in handled, timeout=3, what="rank 1's turn")
        assert 0.45 <= handled[first] - began < 0.9, handled[first] - began
        # Rank 1 again, but the rank-0 peer announces it emptied the queue: stand down.
        second = await quiet.send_message("jobs", "b")
        await ar.publish(rt, "1")
        await ar.publish(f"{rt}:receives", "0 -1")
        await asyncio.sleep(0.8)  # past the stagger: the stood-down receive would be done
        assert second not in handled
        # Payload 2: rank 0, at once.
        began = time.monotonic()
        await ar.publish(rt, "2")
        await until(lambda: second in handled, timeout=3, what="rank 0")
        assert handled[second] - began < 0.3


async def test_a_resubscribe_makes_the_worker_look_again(run, q, ar, ns, redis_url):
    """What was published while the subscription was down is lost: once it is back, the
    worker receives once, finding what no notification told it of."""
    handled: list[str] = []

    async def record(job: Job) -> None:
        handled.append(job.id)

    w = await run(record)
    async with AsyncRSMQ.from_url(redis_url, ns=ns, realtime=False) as quiet:
        mid = await quiet.send_message("jobs", "x")  # announced to nobody
    assert w._subscriber is not None
    assert await ar.client_kill_filter(_type="pubsub") >= 1
    await until(lambda: handled == [mid], timeout=3, what="the look after resubscribing")


async def test_a_sync_handlers_progress_is_recorded(run, q, ar, ns):
    def report(job: Job) -> None:  # run in a thread: its report goes through the loop
        job.progress(0.5)

    w = await run(report)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["done"] == 1, what="done")
    await w.events.flush()
    events = [json.loads(f[b"e"]) for _, f in await ar.xrange(f"{ns}:jobs:events")]
    assert [(e["status"], e.get("progress")) for e in events if e["id"] == mid] == [
        ("received", None),
        ("processing", 0),
        ("processing", 0.5),
        ("done", None),
    ]


@pytest.fixture
async def acl_url(redis_url: str, ns: str, ar: aioredis.Redis) -> AsyncIterator[tuple[str, str]]:
    """A user of its own and its URL. Ask for it before ``run``: the user is deleted only after
    the worker has stopped, so no reconnect of the worker meets a refused AUTH."""
    user = f"{ns}-user"
    await ar.execute_command("ACL", "SETUSER", user, "on", f">pw-{ns}", "~*", "&*", "+@all")
    yield user, redis_url.replace("redis://", f"redis://{user}:pw-{ns}@", 1)
    await ar.execute_command("ACL", "DELUSER", user)


async def test_a_queue_that_cannot_be_created_again_is_tried_again_later_not_at_once(
    acl_url, run, ar, ns, caplog
):
    """Its queue gone and the ACL user refused the creation: the consumer tries again after
    MISSING_QUEUE_RETRY, not in a loop of receives."""
    user, url = acl_url
    w = await run(lambda job: asyncio.sleep(0), redis_url=url)
    await ar.execute_command("ACL", "SETUSER", user, "-hsetnx")  # create_queue's
    await ar.delete(f"{ns}:jobs", f"{ns}:jobs:Q")
    await ar.srem(f"{ns}:QUEUES", "jobs")
    await ar.publish(f"{ns}:rt:jobs", "1")  # the worker looks, and finds it gone
    await until(lambda: "could not be created again" in caplog.text, what="the failure")
    await asyncio.sleep(0.5)  # a tenth of the 5 s it waits: a loop would try again
    assert caplog.text.count("could not be created again") == 1
    assert w._states["jobs"].due_at is not None  # when it tries again


@pytest.mark.parametrize("realtime", [True, False])
async def test_an_idle_worker_makes_one_round_trip_a_heartbeat(
    run, q, ar, ns, monkeypatch, realtime
):
    """Registering, its metrics, the pause flags and (realtime) the live workers and each
    queue's first message: one transaction a heartbeat, on a worker with nothing to do."""
    trips: list[bytes] = []
    send = redis_connection.AbstractConnection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        trips.append(b"".join(command) if isinstance(command, list) else command)
        await send(self, command, check_health)

    await run(record_nothing, heartbeat=0.1, realtime=realtime, poll_interval=60)
    async with asyncio.timeout(5):
        for _ in range(3):  # past the first heartbeats, which read the live workers afresh
            seen = await ar.zrange(f"{ns}:@workers", 0, -1, withscores=True)
            while await ar.zrange(f"{ns}:@workers", 0, -1, withscores=True) == seen:
                await asyncio.sleep(0.01)
    monkeypatch.setattr(redis_connection.AbstractConnection, "send_packed_command", counted)
    await asyncio.sleep(1.05)  # about ten heartbeats: what they sent is asserted, not when
    monkeypatch.undo()
    assert trips, "no heartbeat at all"
    for trip in trips:
        assert trip.startswith(b"*1\r\n$5\r\nMULTI\r\n"), trip[:200]
        assert trip.count(b"MULTI") == 1 and trip.count(b"EXEC") == 1
    assert 5 <= len(trips) <= 15, len(trips)


async def record_nothing(job: Job) -> None:
    raise AssertionError(f"an idle worker got a job: {job.id}")


async def test_a_heartbeat_learns_of_workers_that_come_and_go(run, q):
    """The live workers are read by the ids the last heartbeat found: a newcomer is read
    afresh (a second round trip, that once), and one that left drops out."""
    a = await run(record_nothing, heartbeat=0.1)
    await until(lambda: a._peers.get("jobs") == (a.id,), what="a alone")
    b = await run(record_nothing, heartbeat=0.1)
    both = tuple(sorted((a.id, b.id)))
    await until(lambda: a._peers.get("jobs") == both == b._peers.get("jobs"), what="both")
    b.stop()
    await until(lambda: a._peers.get("jobs") == (a.id,), what="a alone again")


async def expired_events(ar: aioredis.Redis, ns: str, qname: str) -> list[str]:
    rows: Any = await ar.xrange(f"{ns}:{qname}:events")
    return [e["id"] for _, f in rows if (e := json.loads(f[b"e"]))["status"] == "expired"]


async def test_the_sweep_drops_expired_messages_of_queues_nobody_reads_and_announces_them(
    run, q, ar, ns
):
    await q.create_queue("unread", retention=1)
    await q.create_queue("forever")
    ids = await q.send_messages("unread", ["a", "b", "c"])
    kept = await q.send_message("forever", "d")
    await run(lambda job: asyncio.sleep(0), heartbeat=0.1)
    announced: list[str] = []

    async def swept() -> bool:
        announced[:] = await expired_events(ar, ns, "unread")
        return len(announced) == 3

    deadline = time.monotonic() + 10
    while not await swept():
        assert time.monotonic() < deadline, "the sweep never announced the expired messages"
        await asyncio.sleep(0.05)
    assert sorted(announced) == sorted(ids)
    # Never before their retention: each announced at least 1 s after its send.
    for _, f in await ar.xrange(f"{ns}:unread:events"):
        event = json.loads(f[b"e"])
        assert event["ts"] >= int(event["id"][:10], 36) / 1000 + 1000
    attrs = await q.get_queue_attributes("unread")
    assert (attrs.msgs, attrs.totalexpired) == (0, 3)
    assert (await q.get_queue_attributes("forever")).msgs == 1
    assert await ar.hget(f"{ns}:forever:Q", kept) == b"d"


async def test_the_first_sweep_drops_what_expired_before_the_worker_started(run, q, ar, ns):
    """The first heartbeat's sweep looks at every queue it finds (it only listed them, once,
    and swept them a whole sweep later: 30 s at the default heartbeat, 6 s here)."""
    await q.create_queue("unread", retention=1)
    ids = await q.send_messages("unread", ["a", "b"])
    while time.time() * 1000 < p.sent_ms(ids[-1]) + 1100:  # past the retention
        await asyncio.sleep(0.05)
    await run(lambda job: asyncio.sleep(0), heartbeat=1)
    deadline = time.monotonic() + 3
    while sorted(await expired_events(ar, ns, "unread")) != sorted(ids):
        assert time.monotonic() < deadline, "the first sweep left them to the next"
        await asyncio.sleep(0.05)


async def test_a_listed_queue_whose_keys_are_someone_elses_stops_no_sweep(run, q, ar, ns, caplog):
    """A name in {ns}:QUEUES whose hash (or set of expired ids) is not ours answered an error
    in the heartbeat's transaction: every sweeping beat failed, so no queue was swept."""
    await q.create_queue("unread", retention=1)
    await q.create_queue("odd", retention=1)
    await ar.sadd(f"{ns}:QUEUES", "foreign")
    await ar.set(f"{ns}:foreign:Q", "not a hash")
    await ar.set(f"{ns}:odd:expired", "not a set")
    ids = await q.send_messages("unread", ["a", "b"])
    await run(lambda job: asyncio.sleep(0), heartbeat=0.05)
    deadline = time.monotonic() + 10
    while sorted(await expired_events(ar, ns, "unread")) != sorted(ids):
        assert time.monotonic() < deadline, "the sweep never announced the expired messages"
        await asyncio.sleep(0.05)
    assert "heartbeat failed" not in caplog.text


async def test_the_worker_never_handles_an_expired_message_and_announces_it(run, q, ar, ns):
    await q.set_queue_attributes("jobs", retention=1)
    handled: list[str] = []

    async def handle(job: Job) -> None:
        handled.append(job.id)

    w = await run(handle, heartbeat=0.1)
    await q.pause_queue("jobs")
    await until(lambda: w._states["jobs"].paused, what="paused")
    mid = await q.send_message("jobs", "late")
    deadline = time.monotonic() + 10
    while await server_ms(ar) < int(mid[:10], 36) / 1000 + 1000:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    fresh = await q.send_message("jobs", "fresh")
    await q.resume_queue("jobs")
    await until(lambda: handled == [fresh], what="the fresh message handled")
    deadline = time.monotonic() + 10
    while await expired_events(ar, ns, "jobs") != [mid]:
        assert time.monotonic() < deadline, "the expired message was never announced"
        await asyncio.sleep(0.05)
    assert handled == [fresh]
    assert (await q.get_queue_attributes("jobs")).totalexpired == 1


async def test_a_sweep_is_bounded_and_goes_on_where_the_last_one_stopped(
    run, q, ar, ns, monkeypatch
):
    import worker.worker

    monkeypatch.setattr(worker.worker, "SWEEP_CALLS", 1)
    w = await run(lambda job: asyncio.sleep(0))
    await q.create_queue("big", retention=1)
    # Visible in a queue no worker reads: no receive meets them, only the sweep
    ids = [mid for _ in range(3) for mid in await q.send_messages("big", ["x"] * 1000)]
    deadline = time.monotonic() + 10
    while await server_ms(ar) < int(ids[-1][:10], 36) / 1000 + 1000:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await w._sweep_expired()
    first = (await q.get_queue_attributes("big")).totalexpired
    assert 0 < first < 3000  # one call of about 1000 of the zset's slots, not the whole queue
    assert w._sweep_cursors["big"] != 0  # the next sweep goes on from there, not from the start
    for _ in range(100):
        if (await q.get_queue_attributes("big")).totalexpired == 3000:
            break
        await w._sweep_expired()
    assert (await q.get_queue_attributes("big")).msgs == 0
    await w.events.flush()
    assert sorted(await expired_events(ar, ns, "big")) == sorted(ids)


async def test_a_heartbeat_whose_read_fails_counts_its_jobs_once(run, q, ar, ns):
    """The transaction ran, so its metrics are in: a read that answered an error (here the
    queue's zset is someone else's string) must not give them back to be written again."""
    handled = asyncio.Event()

    async def handle(job: Job) -> None:
        handled.set()

    w = await run(handle, heartbeat=0.1)
    await q.send_message("jobs", "x")
    await asyncio.wait_for(handled.wait(), 5)
    await until(lambda: w.counters["done"] == 1, what="done")
    await ar.delete(f"{ns}:jobs")
    await ar.set(f"{ns}:jobs", "not a zset")
    try:
        metrics = f"{ns}:@workers-metrics"
        async with asyncio.timeout(5):
            while await ar.hget(metrics, "jobs:jobs:done") is None:  # the first beat wrote it
                await asyncio.sleep(0.02)
            for _ in range(3):  # three more heartbeats (each registers), each failing its read
                seen = await ar.zrange(f"{ns}:@workers", 0, -1, withscores=True)
                while await ar.zrange(f"{ns}:@workers", 0, -1, withscores=True) == seen:
                    await asyncio.sleep(0.01)
        assert await ar.hget(metrics, "jobs:jobs:done") == b"1"
    finally:
        await ar.delete(f"{ns}:jobs")
