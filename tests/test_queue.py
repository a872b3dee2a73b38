"""Every queue behaviour, run against both RSMQ and AsyncRSMQ (the `rsmq` fixture)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest
import redis
import redis.asyncio as aioredis

from rsmq_core import RSMQ, AsyncRSMQ, InvalidValue, Message, QueueExists, QueueNotFound
from rsmq_core._protocol import ATTRIBUTE_FIELDS
from support.redis_cluster import BACKENDS

# Every behaviour on a standalone Redis and on a 3-master Redis Cluster (its own key layout).
pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

ID = re.compile(r"^[a-zA-Z0-9:]{32}$")


def wait_for(predicate, timeout: float = 5.0):
    """Poll a condition until it holds; fail after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.005)


class Listener:
    """A queue's channel heard as its scripts publish on it: PUBLISH on a standalone Redis;
    on a cluster SPUBLISH, heard on the master of the queue's slot only."""

    def __init__(self, r, channel: str) -> None:
        self.sharded = isinstance(r, redis.RedisCluster)
        self.client: redis.Redis | None = None
        if self.sharded:
            node = r.get_node_from_key(channel)
            self.client = redis.Redis(host=node.host, port=node.port, decode_responses=True)
            self.sub = self.client.pubsub()
            self.sub.ssubscribe(channel)
        else:
            self.sub = r.pubsub()
            self.sub.subscribe(channel)
        self.r, self.channel = r, channel

    def get(self, timeout: float):
        """The next message (types without the sharded "s": "subscribe", "message")."""
        m = self.sub.get_message(timeout=timeout)
        if m and self.sharded:
            m["type"] = m["type"].removeprefix("s")
        return m

    def publish(self, message: str) -> None:
        """Publish as the scripts do: a marker after their messages arrives after them."""
        if self.sharded:
            self.r.spublish(self.channel, message)
        else:
            self.r.publish(self.channel, message)

    def close(self) -> None:
        self.sub.close()
        if self.client is not None:
            self.client.close()


def test_keys_are_rsmqs_own_or_hash_tagged_on_a_cluster(rsmq, backend):
    k = rsmq.keys("a")
    name = "{a}" if backend.cluster else "a"  # the tag keeps one queue's keys in one slot
    assert (k.zset, k.hash, k.channel) == (
        f"{rsmq.ns}:{name}",
        f"{rsmq.ns}:{name}:Q",
        f"{rsmq.ns}:rt:{name}",
    )
    assert k.queues == f"{rsmq.ns}:QUEUES"


def test_create_list_delete_queue(rsmq, r):
    assert rsmq.list_queues() == []
    rsmq.create_queue("b")
    rsmq.create_queue("a", vt=5, delay=2, maxsize=2048)
    assert rsmq.list_queues() == ["a", "b"]
    stored = r.hgetall(rsmq.keys("a").hash)
    assert {k: stored[k] for k in ("vt", "delay", "maxsize")} == {
        "vt": "5",
        "delay": "2",
        "maxsize": "2048",
    }
    assert stored["created"] == stored["modified"]
    assert abs(int(stored["created"]) - int(r.time()[0])) <= 1
    assert r.smembers(rsmq.keys("a").queues) == {"a", "b"}

    rsmq.send_message("a", "x")
    rsmq.delete_queue("a")
    assert rsmq.list_queues() == ["b"]
    assert not r.exists(rsmq.keys("a").hash, rsmq.keys("a").zset)


def test_duplicate_queue_is_refused_and_keeps_its_settings(rsmq, r):
    rsmq.create_queue("q", vt=7)
    with pytest.raises(QueueExists, match="Queue exists") as exc:
        rsmq.create_queue("q", vt=9)
    assert exc.value.name == "queueExists"
    assert r.hget(rsmq.keys("q").hash, "vt") == "7"


def test_missing_queue_everywhere(rsmq):
    some_id = "a" * 32
    calls = [
        lambda: rsmq.delete_queue("nope"),
        lambda: rsmq.get_queue_attributes("nope"),
        lambda: rsmq.set_queue_attributes("nope", vt=1),
        lambda: rsmq.send_message("nope", "x"),
        lambda: rsmq.send_messages("nope", ["x", "y"]),
        lambda: rsmq.send_messages("nope", []),
        lambda: rsmq.receive_message("nope"),
        lambda: rsmq.receive_messages("nope", 3),
        lambda: rsmq.pop_message("nope"),
        lambda: rsmq.delete_message("nope", some_id),
        lambda: rsmq.delete_messages("nope", [some_id]),
        lambda: rsmq.delete_messages("nope", []),
        lambda: rsmq.change_message_visibility("nope", some_id, 1),
    ]
    for call in calls:
        with pytest.raises(QueueNotFound, match="Queue not found") as exc:
            call()
        assert exc.value.name == "queueNotFound"
    assert rsmq.list_queues() == []


def test_send_receive_delete_round_trip(rsmq, r):
    rsmq.create_queue("q", vt=60)
    before_ms = int(r.time()[0]) * 1000
    mid = rsmq.send_message("q", "hello")
    assert ID.match(mid)
    assert r.hget(rsmq.keys("q").hash, mid) == "hello"

    msg = rsmq.receive_message("q")
    assert isinstance(msg, Message)
    assert (msg.id, msg.message, msg.rc) == (mid, "hello", 1)
    assert msg.fr >= int(msg.sent) >= before_ms
    assert r.hget(rsmq.keys("q").hash, f"{mid}:fr") == str(msg.fr)
    # Hidden for vt=60 s: its score is fr + 60000.
    assert r.zscore(rsmq.keys("q").zset, mid) == msg.fr + 60_000
    assert rsmq.receive_message("q") is None

    assert rsmq.delete_message("q", mid) is True
    assert rsmq.delete_message("q", mid) is False
    assert r.hkeys(rsmq.keys("q").hash) == [
        k for k in r.hkeys(rsmq.keys("q").hash) if not k.startswith(mid)
    ]
    assert r.zcard(rsmq.keys("q").zset) == 0


def test_fifo_order(rsmq):
    rsmq.create_queue("q")
    sent = [rsmq.send_message("q", str(i)) for i in range(30)]
    assert sorted(sent) == sent
    got = [rsmq.receive_message("q") for _ in range(30)]
    assert [m.message for m in got] == [str(i) for i in range(30)]


def test_receive_count_and_first_receive(rsmq):
    rsmq.create_queue("q", vt=0)
    mid = rsmq.send_message("q", "x")
    first = rsmq.receive_message("q")
    second = rsmq.receive_message("q")  # vt=0: visible again at once
    assert (first.rc, second.rc) == (1, 2)
    assert second.id == mid
    assert second.fr == first.fr


def test_receive_vt_override_and_visibility_timeout(rsmq, r):
    rsmq.create_queue("q", vt=3600)
    mid = rsmq.send_message("q", "x")
    msg = rsmq.receive_message("q", vt=1)
    assert r.zscore(rsmq.keys("q").zset, mid) == msg.fr + 1000
    assert rsmq.receive_message("q") is None
    again = wait_for(lambda: rsmq.receive_message("q"), timeout=5)
    assert (again.id, again.rc) == (mid, 2)


def test_delay_hides_a_message_until_due(rsmq, r):
    rsmq.create_queue("q", delay=3600)
    late = rsmq.send_message("q", "queue default delay")
    now = rsmq.send_message("q", "no delay", delay=0)
    attrs = rsmq.get_queue_attributes("q")
    assert (attrs.msgs, attrs.hiddenmsgs) == (2, 2)
    msg = rsmq.receive_message("q")
    assert msg.id == now
    assert rsmq.receive_message("q") is None
    score = r.zscore(rsmq.keys("q").zset, late)
    assert score == pytest.approx(int(late[:10], 36) // 1000 + 3_600_000, abs=1)


def test_change_message_visibility(rsmq, r):
    rsmq.create_queue("q", vt=3600)
    mid = rsmq.send_message("q", "x")
    rsmq.receive_message("q")
    assert rsmq.receive_message("q") is None
    assert rsmq.change_message_visibility("q", mid, 0) is True
    assert rsmq.receive_message("q").id == mid
    assert rsmq.change_message_visibility("q", "b" * 32, 5) is False
    rsmq.delete_message("q", mid)
    assert rsmq.change_message_visibility("q", mid, 5) is False


def test_pop_removes_the_message(rsmq, r):
    rsmq.create_queue("q")
    assert rsmq.pop_message("q") is None
    mid = rsmq.send_message("q", "x")
    msg = rsmq.pop_message("q")
    assert (msg.id, msg.message, msg.rc) == (mid, "x", 1)
    assert msg.fr >= int(msg.sent)
    assert r.zcard(rsmq.keys("q").zset) == 0
    assert r.hkeys(rsmq.keys("q").hash) == [
        "vt",
        "delay",
        "maxsize",
        "created",
        "modified",
        "totalsent",
        "totalrecv",
    ]


def test_pop_after_receive_keeps_first_receive(rsmq):
    rsmq.create_queue("q", vt=0)
    rsmq.send_message("q", "x")
    first = rsmq.receive_message("q")
    popped = rsmq.pop_message("q")
    assert (popped.rc, popped.fr) == (2, first.fr)
    assert rsmq.receive_message("q") is None


def test_attributes_and_counters(rsmq):
    rsmq.create_queue("q", vt=0)
    for i in range(3):
        rsmq.send_message("q", str(i))
    rsmq.send_message("q", "later", delay=3600)
    rsmq.receive_message("q")
    rsmq.receive_message("q")
    a = rsmq.get_queue_attributes("q")
    assert (a.vt, a.delay, a.maxsize) == (0, 0, 65536)
    assert (a.totalsent, a.totalrecv, a.msgs) == (4, 2, 4)
    assert a.hiddenmsgs >= 1  # RSMQ counts from the start of the second: "later" at least
    assert a.created <= a.modified


def test_set_queue_attributes(rsmq, r):
    rsmq.create_queue("q")
    created = rsmq.get_queue_attributes("q").created
    a = rsmq.set_queue_attributes("q", vt=10)
    assert (a.vt, a.delay, a.maxsize) == (10, 0, 65536)
    a = rsmq.set_queue_attributes("q", delay=5, maxsize=-1)
    assert (a.vt, a.delay, a.maxsize) == (10, 5, -1)
    assert a.created == created
    assert a.modified >= created
    assert rsmq.get_queue_attributes("q") == a


def test_unlimited_maxsize_takes_a_large_message(rsmq):
    rsmq.create_queue("q", maxsize=-1)
    body = "é" * (1024 * 1024)
    rsmq.send_message("q", body)
    assert rsmq.receive_message("q").message == body


def test_bodies_round_trip_exactly(rsmq):
    rsmq.create_queue("q")
    bodies = ["", " ", "a\x00b", "line\nbreak\r\n", "🎉 emoji", "中文", '{"json": [1, 2]}']
    for b in bodies:
        rsmq.send_message("q", b)
    assert [rsmq.pop_message("q").message for _ in bodies] == bodies


def test_a_totalsent_another_client_left_unreadable_does_not_stop_sends(rsmq, r):
    """The send script reads totalsent with the queue's settings and writes it with the
    bodies (RSMQ's HINCRBY, one call fewer). A value that is not a count, left by some other
    client, is counted afresh from the sends, not a reason to refuse them."""
    rsmq.create_queue("q")
    r.hset(rsmq.keys("q").hash, "totalsent", "not a number")
    first = rsmq.send_message("q", "a")
    rsmq.send_messages("q", ["b", "c"])
    assert rsmq.get_queue_attributes("q").totalsent == 3
    assert rsmq.receive_message("q").id == first


def test_send_messages_batch(rsmq, r):
    rsmq.create_queue("q")
    ids = rsmq.send_messages("q", [f"m{i}" for i in range(100)])
    assert len(set(ids)) == 100
    assert ids == sorted(ids)  # one batch keeps its order in the queue
    assert all(ID.match(i) for i in ids)
    assert rsmq.send_messages("q", []) == []
    assert r.zrange(rsmq.keys("q").zset, 0, -1) == ids
    assert rsmq.get_queue_attributes("q").totalsent == 100


def test_send_messages_batch_with_delay(rsmq):
    rsmq.create_queue("q")
    rsmq.send_messages("q", ["a", "b"], delay=3600)
    assert rsmq.receive_message("q") is None
    assert rsmq.get_queue_attributes("q").msgs == 2


def test_receive_and_delete_messages_batch(rsmq, r):
    rsmq.create_queue("q", vt=3600)
    ids = rsmq.send_messages("q", [str(i) for i in range(10)])
    got = rsmq.receive_messages("q", 4)
    assert [m.id for m in got] == ids[:4]
    assert [m.rc for m in got] == [1] * 4
    rest = rsmq.receive_messages("q", 100)
    assert [m.id for m in rest] == ids[4:]
    assert rsmq.receive_messages("q", 5) == []
    assert rsmq.delete_messages("q", [*ids[:3], "z" * 32]) == 3
    assert rsmq.delete_messages("q", []) == 0
    assert rsmq.get_queue_attributes("q").msgs == 7
    assert rsmq.get_queue_attributes("q").totalrecv == 10
    # A repeated id, or one deleted before, counts once.
    assert rsmq.delete_messages("q", [ids[3], ids[3], ids[0]]) == 1
    assert rsmq.delete_messages("q", ids) == 6
    assert r.zcard(rsmq.keys("q").zset) == 0
    assert sorted(r.hkeys(rsmq.keys("q").hash)) == sorted(ATTRIBUTE_FIELDS)  # no :rc or :fr left


def test_batch_receive_of_first_and_repeated_receives(rsmq):
    rsmq.create_queue("q", vt=0)  # every received message is visible again at once
    ids = rsmq.send_messages("q", ["a", "b", "c"])
    first = rsmq.receive_message("q")
    got = {m.id: m for m in rsmq.receive_messages("q", 3)}
    assert {i: (m.message, m.rc) for i, m in got.items()} == {
        ids[0]: ("a", 2),
        ids[1]: ("b", 1),
        ids[2]: ("c", 1),
    }
    assert got[ids[0]].fr == first.fr
    assert got[ids[1]].fr == got[ids[2]].fr >= first.fr
    popped = {m.id: m for m in rsmq.pop_messages("q", 3)}
    assert {i: (m.rc, m.fr) for i, m in popped.items()} == {
        i: (m.rc + 1, m.fr) for i, m in got.items()
    }
    assert rsmq.get_queue_attributes("q").totalrecv == 7


def test_receive_counts_written_by_another_client(rsmq, r):
    # RSMQ stores counts as text; whatever form another client wrote, they read as integers.
    rsmq.create_queue("q")
    ids = rsmq.send_messages("q", ["a", "b", "c", "d"])
    r.hset(rsmq.keys("q").hash, mapping={f"{ids[0]}:rc": "4", f"{ids[0]}:fr": "1700000000000"})
    r.hset(rsmq.keys("q").hash, mapping={f"{ids[1]}:rc": "2.0", f"{ids[1]}:fr": "1.7e12"})
    r.hset(rsmq.keys("q").hash, mapping={f"{ids[2]}:rc": "1", f"{ids[2]}:fr": "garbage"})
    r.hset(rsmq.keys("q").hash, mapping={f"{ids[3]}:rc": "0", f"{ids[3]}:fr": "1700000000000"})
    got = rsmq.receive_messages("q", 4)
    assert [(m.rc, m.fr) for m in got[:2]] == [(5, 1_700_000_000_000), (3, 1_700_000_000_000)]
    assert got[2].rc == 2 and got[2].fr > 1_700_000_000_000  # no first receive: now
    assert (got[3].rc, got[3].fr) == (1, got[2].fr)  # a first receive: now, stored as such
    stored = r.hmget(rsmq.keys("q").hash, [f"{ids[0]}:rc", f"{ids[3]}:rc", f"{ids[3]}:fr"])
    assert stored == ["5", "1", str(got[3].fr)]


def test_realtime_send_publishes_queue_size(backend, ns, r):
    from rsmq_core import RSMQ

    with RSMQ.from_url(backend.url, ns=ns, realtime=True, cluster=backend.cluster) as rt:
        rt.create_queue("q")
        sub = Listener(r, rt.keys("q").channel)
        assert sub.get(timeout=5)["type"] == "subscribe"
        rt.send_message("q", "a")
        rt.send_message("q", "b")
        rt.send_messages("q", ["c", "d", "e"])
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            m = sub.get(timeout=0.5)
            if m and m["type"] == "message":
                got.append(m["data"])
        sub.close()
    assert got == ["1", "2", "5"]


def test_a_namespace_of_any_first_character_publishes_on_its_own_channel(backend, r):
    # Found in review: a sharded channel was once marked by a "!" in front of the channel's
    # own name, so a namespace beginning with "!" was SPUBLISHed under another name.
    from rsmq_core import RSMQ

    ns = f"!odd{uuid.uuid4().hex[:6]}"
    with RSMQ.from_url(backend.url, ns=ns, realtime=True, cluster=backend.cluster) as rt:
        rt.create_queue("q")
        sub = Listener(r, rt.keys("q").channel)
        assert rt.keys("q").channel.startswith(f"{ns}:rt:")
        assert sub.get(timeout=5)["type"] == "subscribe"
        rt.send_message("q", "a")
        m = sub.get(timeout=5)
        sub.close()
        rt.delete_queue("q")
    assert (m["type"], m["data"]) == ("message", "1")


def test_not_realtime_publishes_nothing(rsmq, r):
    rsmq.create_queue("q")
    sub = Listener(r, rsmq.keys("q").channel)
    assert sub.get(timeout=5)["type"] == "subscribe"
    rsmq.send_message("q", "a")
    # Redis delivers publishes in order: anything the send published would come before this.
    sub.publish("marker")
    m = sub.get(timeout=5)
    sub.close()
    assert (m["type"], m["data"]) == ("message", "marker")


def test_notify_publishes_the_queue_size_as_a_realtime_send_would(rsmq, r):
    rsmq.create_queue("q")
    rsmq.send_messages("q", ["a", "b"])  # not in realtime mode: nothing published
    sub = Listener(r, rsmq.keys("q").channel)
    assert sub.get(timeout=5)["type"] == "subscribe"
    assert rsmq.notify("q") == 1
    m = sub.get(timeout=5)
    sub.close()
    assert (m["type"], m["data"]) == ("message", "2")


def test_fenced_delete_and_visibility(rsmq):
    rsmq.create_queue("q", vt=0)
    mid = rsmq.send_message("q", "x")
    first = rsmq.receive_message("q")
    second = rsmq.receive_message("q")  # vt=0: someone else has it now
    assert (first.rc, second.rc) == (1, 2)
    assert rsmq.change_message_visibility("q", mid, 60, rc=first.rc) is False
    assert rsmq.delete_message("q", mid, rc=first.rc) is False
    assert rsmq.get_queue_attributes("q").msgs == 1
    assert rsmq.change_message_visibility("q", mid, 60, rc=second.rc) is True
    assert rsmq.receive_message("q") is None
    assert rsmq.delete_message("q", mid, rc=second.rc) is True
    assert rsmq.get_queue_attributes("q").msgs == 0


def test_next_visible_in(rsmq):
    rsmq.create_queue("q", vt=100)
    assert rsmq.next_visible_in("q") is None
    rsmq.send_message("q", "later", delay=50)
    assert 49 < rsmq.next_visible_in("q") <= 50
    rsmq.send_message("q", "now")
    assert rsmq.next_visible_in("q") == 0
    rsmq.receive_message("q")  # hidden for 100 s; "later" is due first
    assert 49 < rsmq.next_visible_in("q") <= 50


def test_move_message_to_a_dead_letter_queue(rsmq, r):
    rsmq.create_queue("q", vt=0)
    rsmq.create_queue("q-dead")
    mid = rsmq.send_message("q", "poison")
    got = rsmq.receive_message("q")
    rsmq.receive_message("q")  # received again: rc 2
    assert rsmq.move_message("q", mid, "q-dead", rc=got.rc) is None  # fenced off
    new = rsmq.move_message("q", mid, "q-dead", rc=2)
    assert new and new != mid and new[-22:] == mid[-22:]
    assert r.zcard(rsmq.keys("q").zset) == 0
    assert not [k for k in r.hkeys(rsmq.keys("q").hash) if k.startswith(mid)]
    dead = rsmq.receive_message("q-dead")
    assert (dead.id, dead.message, dead.rc) == (new, "poison", 1)
    assert rsmq.get_queue_attributes("q-dead").totalsent == 1
    assert rsmq.move_message("q", mid, "q-dead") is None  # gone already


def test_move_keeps_a_message_longer_than_the_target_allows(rsmq):
    rsmq.create_queue("q", maxsize=-1)
    rsmq.create_queue("small", maxsize=1024)
    mid = rsmq.send_message("q", "x" * 5000)
    assert rsmq.move_message("q", mid, "small")
    assert rsmq.pop_message("small").message == "x" * 5000


def test_move_to_or_from_a_missing_queue(rsmq):
    rsmq.create_queue("q")
    mid = rsmq.send_message("q", "x")
    for src, dst in (("q", "nope"), ("nope", "q")):
        with pytest.raises(QueueNotFound, match=r"^Queue not found$") as refused:
            rsmq.move_message(src, mid, dst)
        assert refused.value.detail == "no queue 'nope'"
    assert rsmq.get_queue_attributes("q").msgs == 1


def test_redrive_moves_oldest_first(rsmq):
    rsmq.create_queue("q")
    rsmq.create_queue("dead")
    rsmq.send_messages("dead", [str(i) for i in range(5)])
    assert rsmq.redrive_messages("dead", "q", count=2) == 2
    assert rsmq.redrive_messages("dead", "q") == 3
    assert rsmq.redrive_messages("dead", "q") == 0
    assert [rsmq.pop_message("q").message for _ in range(5)] == ["0", "1", "2", "3", "4"]


def test_purge_queue(rsmq, r):
    rsmq.create_queue("q", vt=100)
    rsmq.send_messages("q", [str(i) for i in range(5)])
    rsmq.send_message("q", "delayed", delay=100)
    rsmq.receive_message("q")
    assert rsmq.purge_queue("q") == 6
    a = rsmq.get_queue_attributes("q")
    assert (a.msgs, a.totalsent, a.totalrecv, a.vt) == (0, 6, 1, 100)
    assert set(r.hkeys(rsmq.keys("q").hash)) == {
        "vt",
        "delay",
        "maxsize",
        "created",
        "modified",
        "totalsent",
        "totalrecv",
    }
    assert rsmq.purge_queue("q") == 0
    with pytest.raises(QueueNotFound):
        rsmq.purge_queue("nope")


def test_receive_batch_says_when_to_look_again(rsmq):
    rsmq.create_queue("q", vt=100)
    empty = rsmq.receive_batch("q", 5)
    assert (empty.messages, empty.next_visible_in) == ([], None)
    rsmq.send_messages("q", ["a", "b", "c"])
    full = rsmq.receive_batch("q", 2)
    assert [m.message for m in full.messages] == ["a", "b"]
    assert full.next_visible_in == 0.0  # took all it asked for: there may be more
    rsmq.send_message("q", "later", delay=50)
    short = rsmq.receive_batch("q", 5)
    assert [m.message for m in short.messages] == ["c"]
    assert 49 < short.next_visible_in <= 50  # "later" is due before the received ones


def test_receive_batch_announces_in_the_same_step(rsmq, r):
    rsmq.create_queue("q")
    peers = rsmq.keys("q").channel + ":peers"  # in the queue's slot, as a cluster needs
    sub = Listener(r, peers)
    assert sub.get(timeout=5)["type"] == "subscribe"
    rsmq.send_messages("q", ["a", "b"])
    rsmq.receive_batch("q", 1, announce=peers)
    rsmq.receive_batch("q", 5, announce=peers)
    rsmq.receive_batch("q", 1)  # no announcement asked for
    sub.publish("end")
    got = []
    while (m := sub.get(timeout=5)) and m["data"] != "end":
        got.append(m["data"])
    sub.close()
    assert got[0] == "1"
    status, wait = got[1].split()
    assert status == "0" and 29_000 < int(wait) <= 30_000  # the received ones come back then
    with pytest.raises(InvalidValue, match="announce must be a channel name"):
        rsmq.receive_batch("q", 1, announce="")


def test_large_batches_take_consecutive_microseconds(rsmq):
    rsmq.create_queue("q")
    for _ in range(3):  # 1000 microseconds cross a 1296 boundary in most batches
        ids = rsmq.send_messages("q", ["x"] * 1000)
        stamps = [int(i[:10], 36) for i in ids]
        assert stamps == list(range(stamps[0], stamps[0] + 1000))
        assert ids == sorted(ids)
        assert all(ID.match(i) for i in ids)
    assert rsmq.get_queue_attributes("q").msgs == 3000


def test_pop_messages_batch(rsmq, r):
    rsmq.create_queue("q")
    ids = rsmq.send_messages("q", [str(i) for i in range(5)])
    assert [m.id for m in rsmq.pop_messages("q", 3)] == ids[:3]
    assert [m.message for m in rsmq.pop_messages("q", 10)] == ["3", "4"]
    assert rsmq.pop_messages("q", 1) == []
    assert r.zcard(rsmq.keys("q").zset) == 0
    assert rsmq.get_queue_attributes("q").totalrecv == 5


def test_a_wrapped_client_that_decodes_replies_itself(backend, ns):
    # A redis-py client made with decode_responses=True hands the replies over as text.
    sync_client = redis.RedisCluster if backend.cluster else redis.Redis
    async_client = aioredis.RedisCluster if backend.cluster else aioredis.Redis
    with RSMQ(sync_client.from_url(backend.url, decode_responses=True), ns=ns) as q:
        q.create_queue("q", vt=0)
        ids = q.send_messages("q", ["a", "b"])
        assert [(m.id, m.message, m.rc) for m in q.receive_messages("q", 2)] == [
            (ids[0], "a", 1),
            (ids[1], "b", 1),
        ]
        assert [(m.id, m.rc) for m in q.pop_messages("q", 2)] == [(ids[0], 2), (ids[1], 2)]
        # A move reads the message's receive count back as text too (two steps on a cluster).
        q.create_queue("q-dead")
        mid = q.send_message("q", "m")
        got = q.receive_message("q")
        assert got is not None and q.move_message("q", mid, "q-dead", rc=got.rc)
        assert q.redrive_messages("q-dead", "q") == 1
        assert q.get_queue_attributes("q-dead").msgs == 0
        back = q.pop_message("q")
        assert back is not None and back.message == "m"

    async def run() -> list[Message]:
        aq = AsyncRSMQ(async_client.from_url(backend.url, decode_responses=True), ns=ns)
        await aq.send_message("q", "c")
        try:
            return await aq.receive_messages("q", 2)
        finally:
            await aq.aclose()
            await aq.redis.aclose()

    assert [m.message for m in asyncio.run(run())] == ["c"]


def server_ms(r) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_change_visibility_counts_in_milliseconds(rsmq, r):
    rsmq.create_queue("q", vt=3600)
    mid = rsmq.send_message("q", "x")
    rsmq.receive_message("q")
    before = server_ms(r)
    assert rsmq.change_message_visibility("q", mid, 2) is True
    after = server_ms(r)
    # Hidden 2 s from the script's own clock: exactly 2000 ms past a time between the two.
    assert before + 2000 <= r.zscore(rsmq.keys("q").zset, mid) <= after + 2000


def test_a_vt_0_receive_of_fewer_than_asked_says_look_again_now(rsmq):
    rsmq.create_queue("q")
    rsmq.send_messages("q", ["a", "b"])
    got = rsmq.receive_batch("q", 5, vt=0)
    assert [m.message for m in got.messages] == ["a", "b"]
    # Visible again at once: 0 s to wait, not None (which would say the queue is empty).
    assert got.next_visible_in == 0.0
