"""Queue retention: a message older than its queue's retention (seconds since its send) is
never delivered, by any receive path, and is dropped, counted and handed to the sweep to be
announced. Against RSMQ and AsyncRSMQ (the `rsmq` fixture), standalone and on a cluster."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from rsmq_core import InvalidValue, NoAttributeSupplied, QueueNotFound
from support.redis_cluster import BACKENDS

backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


def server_ms(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return seconds * 1000 + micros / 1000


def wait_until_server_ms(r: redis.Redis, at: float, timeout: float = 10.0) -> None:
    """Wait (on Redis's clock, which decides expiry) until it reads ``at`` or later."""
    deadline = time.monotonic() + timeout
    while server_ms(r) < at:
        assert time.monotonic() < deadline, f"Redis's clock never reached {at}"
        time.sleep(0.01)


def sent(id: str) -> float:
    return int(id[:10], 36) / 1000


def sweep_pass(rsmq: Any, qname: str, count: int = 1000) -> list[str]:
    ids, cursor = [], 0
    while True:
        got = rsmq.sweep_expired(qname, cursor=cursor, count=count)
        ids += got.ids
        cursor = got.cursor
        if cursor == 0:
            return ids


@backends
def test_retention_is_an_attribute_rsmq_ignores(rsmq, r):
    rsmq.create_queue("q")
    attrs = rsmq.get_queue_attributes("q")
    assert (attrs.retention, attrs.totalexpired) == (0, 0)
    assert "retention" not in r.hkeys(rsmq.keys("q").hash)  # RSMQ's default is not stored
    rsmq.create_queue("w", retention=60)
    assert rsmq.get_queue_attributes("w").retention == 60
    assert rsmq.set_queue_attributes("q", retention=3600).retention == 3600
    assert r.hget(rsmq.keys("q").hash, "retention") == "3600"
    assert rsmq.set_queue_attributes("q", retention=0).retention == 0


@pytest.mark.parametrize("bad", [-1, 10_000_000, "5", 1.5, True, None])
def test_a_bad_retention_is_refused_and_nothing_is_written(rsmq, r, bad):
    with pytest.raises(InvalidValue, match="retention must be between 0 and 9999999"):
        rsmq.create_queue("q", retention=bad)
    assert not r.exists(rsmq.keys("q").hash)
    assert rsmq.list_queues() == []
    rsmq.create_queue("q", retention=7)
    before = r.hgetall(rsmq.keys("q").hash)
    if bad is None:  # set_queue_attributes's "leave it as it is"
        with pytest.raises(NoAttributeSupplied):
            rsmq.set_queue_attributes("q", retention=bad)
    else:
        with pytest.raises(InvalidValue, match="retention must be between 0 and 9999999"):
            rsmq.set_queue_attributes("q", vt=5, retention=bad)
    assert r.hgetall(rsmq.keys("q").hash) == before


@backends
def test_a_message_is_delivered_until_its_retention_and_never_after(rsmq, r):
    rsmq.create_queue("q", retention=1)
    mid = rsmq.send_message("q", "a")
    deliveries = 0
    deadline = time.monotonic() + 10
    while True:
        before = server_ms(r)
        msg = rsmq.receive_message("q", vt=0)  # visible again at once: received again and again
        if msg is None:
            break
        assert msg.id == mid
        assert before - sent(mid) < 1000, "delivered after its retention"
        deliveries += 1
        assert time.monotonic() < deadline
    # Gone only once its retention has passed, dropped in the receive's step, and counted.
    assert server_ms(r) - sent(mid) >= 1000
    assert deliveries >= 1
    attrs = rsmq.get_queue_attributes("q")
    assert (attrs.msgs, attrs.totalexpired) == (0, 1)
    assert not [field for field in r.hkeys(rsmq.keys("q").hash) if mid in field]


@backends
def test_a_message_is_never_dropped_before_its_retention(rsmq, r):
    rsmq.create_queue("q", retention=2)
    mid = rsmq.send_message("q", "a")
    wait_until_server_ms(r, sent(mid) + 1500)
    msg = rsmq.receive_message("q", vt=0)
    assert msg is not None and msg.id == mid
    assert [m.id for m in rsmq.pop_messages("q", 10)] == [mid]
    assert rsmq.get_queue_attributes("q").totalexpired == 0


@backends
@pytest.mark.parametrize(
    "how", ["receive_message", "receive_messages", "receive_batch", "pop_message", "pop_messages"]
)
def test_every_receive_path_skips_expired_messages_for_fresh_ones_behind_them(rsmq, r, how):
    rsmq.create_queue("q", retention=1)
    old = rsmq.send_messages("q", ["old1", "old2", "old3"])
    wait_until_server_ms(r, sent(old[-1]) + 1000)
    fresh = rsmq.send_messages("q", ["new1", "new2"])
    if how == "receive_message":
        got = [rsmq.receive_message("q"), rsmq.receive_message("q")]
    elif how == "pop_message":
        got = [rsmq.pop_message("q"), rsmq.pop_message("q")]
    elif how == "receive_batch":
        got = rsmq.receive_batch("q", 2).messages
    else:
        got = getattr(rsmq, how)("q", 2)
    assert [m.id for m in got] == fresh
    attrs = rsmq.get_queue_attributes("q")
    assert attrs.totalexpired == 3
    assert attrs.msgs == (2 if how.startswith("receive") else 0)
    # The receives handed the ids over for the sweep to announce, each once.
    assert sorted(sweep_pass(rsmq, "q")) == sorted(old)
    assert sweep_pass(rsmq, "q") == []


@backends
def test_a_delayed_message_expires_from_its_send_not_from_when_it_is_visible(rsmq, r):
    rsmq.create_queue("q", retention=1)
    mid = rsmq.send_message("q", "late", delay=2)
    wait_until_server_ms(r, sent(mid) + 2000)
    assert rsmq.receive_message("q") is None
    assert rsmq.get_queue_attributes("q").totalexpired == 1


@backends
def test_a_queue_without_retention_keeps_old_messages(rsmq, r):
    rsmq.create_queue("q", retention=1)
    rsmq.set_queue_attributes("q", retention=0)
    mid = rsmq.send_message("q", "a")
    wait_until_server_ms(r, sent(mid) + 1100)
    assert sweep_pass(rsmq, "q") == []
    assert rsmq.receive_message("q").id == mid
    assert rsmq.get_queue_attributes("q").totalexpired == 0


@backends
def test_a_move_never_revives_an_expired_message_and_starts_the_targets_clock(rsmq, r):
    rsmq.create_queue("q", retention=1)
    rsmq.create_queue("dead", retention=1)
    rsmq.create_queue("keep")
    mid = rsmq.send_message("q", "a")
    kept = rsmq.send_message("keep", "b")
    wait_until_server_ms(r, sent(mid) + 1000)
    assert rsmq.move_messages("q", [mid], "dead") == [""]
    assert rsmq.redrive_messages("q", "dead") == 0
    # A message older than the target's retention moved there is a new message of it.
    (moved,) = rsmq.move_messages("keep", [kept], "dead")
    assert moved and rsmq.receive_message("dead").id == moved


@backends
def test_the_sweep_drops_expired_messages_that_no_receive_sees(rsmq, r):
    rsmq.create_queue("q", retention=1)
    hidden = rsmq.send_messages("q", [str(i) for i in range(300)])
    assert len(rsmq.receive_messages("q", 300, vt=1000)) == 300  # hidden far beyond expiry
    wait_until_server_ms(r, sent(hidden[-1]) + 1000)
    fresh = rsmq.send_message("q", "fresh")
    # Hidden, they may be in flight, their handlers running: a sweep leaves them...
    assert sweep_pass(rsmq, "q") == []
    assert rsmq.get_queue_attributes("q").msgs == 301
    for mid in hidden:  # ...until they are visible again (their handlers gave up, say)
        assert rsmq.change_message_visibility("q", mid, 0)
    first = rsmq.sweep_expired("q", count=10)
    assert len(first.ids) < 300 and first.cursor != 0  # one slice a call, not the whole queue
    swept = first.ids + sweep_pass(rsmq, "q", count=10)
    swept += sweep_pass(rsmq, "q")  # a pass may miss what moved meanwhile: the next finds it
    assert sorted(swept) == sorted(hidden)
    attrs = rsmq.get_queue_attributes("q")
    assert (attrs.msgs, attrs.totalexpired) == (1, 300)
    assert rsmq.receive_message("q").id == fresh


def test_one_receive_drops_a_bounded_number_of_expired_messages(rsmq, r):
    rsmq.create_queue("q", retention=1)
    ids = rsmq.send_messages("q", ["x"] * 1000) + rsmq.send_messages("q", ["y"] * 500)
    wait_until_server_ms(r, sent(ids[-1]) + 1000)
    fresh = rsmq.send_message("q", "fresh")
    assert rsmq.receive_message("q") is None  # 1000 dropped: the call stops there
    assert rsmq.get_queue_attributes("q").totalexpired == 1000
    assert rsmq.receive_message("q").id == fresh
    assert rsmq.get_queue_attributes("q").totalexpired == 1500


def test_the_sweep_of_a_missing_queue_and_bad_arguments(rsmq):
    with pytest.raises(QueueNotFound):
        rsmq.sweep_expired("nope")
    rsmq.create_queue("q")
    with pytest.raises(InvalidValue, match="count must be between 1 and 1000"):
        rsmq.sweep_expired("q", count=0)
    with pytest.raises(InvalidValue, match="cursor must be between"):
        rsmq.sweep_expired("q", cursor=-1)


def test_delete_queue_deletes_the_ids_waiting_to_be_announced(rsmq, r):
    rsmq.create_queue("q", retention=1)
    mid = rsmq.send_message("q", "a")
    wait_until_server_ms(r, sent(mid) + 1000)
    assert rsmq.receive_message("q") is None
    assert r.smembers(rsmq.keys("q").expired) == {mid}
    rsmq.delete_queue("q")
    assert not r.exists(rsmq.keys("q").expired)


def test_the_api_creates_changes_and_refuses_retention_and_never_delivers_expired(
    make_client, queues, r
):
    api = make_client()
    created = api.post("/api/queues", json={"qname": "q", "retention": 1})
    assert created.status_code == 201
    assert (created.json()["retention"], created.json()["totalexpired"]) == (1, 0)
    bad = api.patch("/api/queues/q", json={"retention": -1})
    assert bad.status_code == 400
    assert bad.json()["message"] == "retention must be between 0 and 9999999"
    refused = api.post("/api/queues", json={"qname": "w", "retention": "1"})
    assert refused.status_code == 400 and "w" not in queues.list_queues()
    mid = api.post("/api/queues/q/messages", json={"message": "a"}).json()["id"]
    wait_until_server_ms(r, sent(mid) + 1000)
    assert api.post("/api/queues/q/receive", json={}).json() == {"message": None}
    assert api.get("/api/queues/q").json()["totalexpired"] == 1
    assert api.patch("/api/queues/q", json={"retention": 0}).json()["retention"] == 0


async def test_the_dashboards_figures_show_retention_and_expired(redis_url, ns):
    from rsmq_core import AsyncRSMQ
    from web.dashboard import snapshot

    async with AsyncRSMQ.from_url(redis_url, ns=ns) as rsmq:
        await rsmq.create_queue("q", retention=1)
        await rsmq.create_queue("forever")
        mid = await rsmq.send_message("q", "a")
        deadline = time.monotonic() + 10
        while (await rsmq.redis.time())[0] * 1000 < sent(mid) + 1100:
            assert time.monotonic() < deadline, "Redis's clock never passed the retention"
            await asyncio.sleep(0.01)
        assert await rsmq.receive_message("q") is None
        queues = (await snapshot(rsmq))["queues"]
    assert (queues["q"]["retention"], queues["q"]["totalexpired"]) == (1, 1)
    assert (queues["forever"]["retention"], queues["forever"]["totalexpired"]) == (0, 0)
