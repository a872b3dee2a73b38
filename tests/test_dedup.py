"""Idempotent sends: dedup ids within a queue's dedup window, and a send that the client
retries after its reply was lost, stored once. Against RSMQ and AsyncRSMQ (the `rsmq`
fixture), on a standalone Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from dataclasses import replace

import pytest
import redis

from realtime.events import StatusEvent, queued_on_send
from rsmq_core import (
    RSMQ,
    AsyncRSMQ,
    InvalidFormat,
    InvalidValue,
    MessageTooLong,
    NoAttributeSupplied,
)
from rsmq_core import _protocol as p
from support.redis_cluster import BACKENDS

backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


@backends
def test_a_repeated_dedup_id_returns_the_first_id_and_stores_nothing(rsmq, r):
    rsmq.create_queue("q")
    first = rsmq.send_message("q", "a", dedup_id="order-1")
    assert rsmq.send_message("q", "other body", dedup_id="order-1") == first
    other = rsmq.send_message("q", "b", dedup_id="order-2")
    assert other != first
    assert rsmq.get_queue_attributes("q").totalsent == 2
    assert [m.message for m in rsmq.pop_messages("q", 10)] == ["a", "b"]
    # Still a duplicate once the first was received and deleted: the window decides.
    assert rsmq.send_message("q", "a", dedup_id="order-1") == first
    assert rsmq.receive_message("q") is None
    k = rsmq.keys("q")
    assert r.get(k.dedup("order-1")).split() == [r.hget(k.hash, "created"), first]
    assert 295 <= r.ttl(k.dedup("order-1")) <= 300


@backends
def test_dedup_ids_are_per_queue_and_sends_without_one_are_never_deduplicated(rsmq):
    rsmq.create_queue("q")
    rsmq.create_queue("q2")
    a = rsmq.send_message("q", "x", dedup_id="same")
    b = rsmq.send_message("q2", "x", dedup_id="same")
    assert a != b
    assert rsmq.send_message("q", "x") != rsmq.send_message("q", "x")
    assert rsmq.get_queue_attributes("q").msgs == 3


@backends
def test_a_batch_with_dedup_ids_within_it_and_against_earlier_sends(rsmq):
    rsmq.create_queue("q")
    before = rsmq.send_message("q", "0", dedup_id="k0")
    ids = rsmq.send_messages(
        "q", ["a", "b", "c", "d", "e"], dedup_ids=["k0", "k1", None, "k1", "k2"]
    )
    assert ids[0] == before
    assert ids[3] == ids[1]
    assert len({ids[1], ids[2], ids[4], before}) == 4
    assert [m.message for m in rsmq.pop_messages("q", 10)] == ["0", "b", "c", "e"]


@backends
def test_the_dedup_window_is_an_attribute_rsmq_ignores(rsmq, r):
    rsmq.create_queue("q")
    assert rsmq.get_queue_attributes("q").dedup_window == p.DEFAULT_DEDUP_WINDOW
    assert "dedup_window" not in r.hkeys(rsmq.keys("q").hash)  # the default is not stored
    rsmq.create_queue("w", dedup_window=1)
    assert rsmq.get_queue_attributes("w").dedup_window == 1
    assert rsmq.set_queue_attributes("q", dedup_window=3600).dedup_window == 3600
    assert r.hget(rsmq.keys("q").hash, "dedup_window") == "3600"
    rsmq.send_message("q", "x", dedup_id="d")
    assert 3595 <= r.ttl(rsmq.keys("q").dedup("d")) <= 3600


@backends
def test_a_dedup_id_is_forgotten_after_the_window(rsmq, r):
    rsmq.create_queue("q", dedup_window=1)
    first = rsmq.send_message("q", "x", dedup_id="d")
    key = rsmq.keys("q").dedup("d")
    deadline = time.monotonic() + 5
    while r.exists(key):  # Redis expires it; the test waits for that, with a deadline
        assert time.monotonic() < deadline, "the dedup key outlived its window"
        time.sleep(0.05)
    assert rsmq.send_message("q", "x", dedup_id="d") != first


@backends
def test_deleting_a_queue_deletes_its_dedup_keys(rsmq, r):
    rsmq.create_queue("q")
    rsmq.create_queue("q2")  # a neighbour whose keys start with q's name
    for i in range(5):
        rsmq.send_message("q", "x", dedup_id=f"d{i}")
    rsmq.send_message("q2", "x", dedup_id="d0")
    k, k2 = rsmq.keys("q"), rsmq.keys("q2")
    rsmq.delete_queue("q")
    assert not any(r.exists(k.dedup(f"d{i}")) for i in range(5))
    assert not r.exists(k.dedup_sweep)
    assert r.exists(k2.dedup("d0"))
    spans = range(p.retry_span() - 1, p.retry_span() + 1)
    assert not any(r.exists(k.sent(span)) for span in spans)
    assert any(r.exists(k2.sent(span)) for span in spans)
    rsmq.create_queue("q")  # a new queue of the name remembers nothing of the old one
    rsmq.send_message("q", "y", dedup_id="d0")
    assert rsmq.get_queue_attributes("q").msgs == 1


@backends
def test_a_dedup_key_of_a_deleted_queue_of_the_same_name_is_not_taken(rsmq, r):
    """Node RSMQ's deleteQueue leaves our dedup keys behind (until they expire): the key says
    which queue (its created time) wrote it."""
    rsmq.create_queue("q")
    k = rsmq.keys("q")
    r.set(k.dedup("d"), f"{int(r.hget(k.hash, 'created')) - 5} {'x' * 32}", ex=60)
    mid = rsmq.send_message("q", "x", dedup_id="d")
    assert mid != "x" * 32
    assert rsmq.send_message("q", "y", dedup_id="d") == mid


@backends
def test_a_repeated_delete_sweeps_the_dedup_keys_an_interrupted_one_left(rsmq, r):
    k = rsmq.keys("q")
    with r.pipeline() as pipe:
        for i in range(2 * p.SWEEP_COUNT + 5):
            pipe.set(k.dedup(f"id{i}"), "x" * 32, ex=600)
        pipe.set(k.dedup_sweep, "1")
        pipe.execute()
    with pytest.raises(Exception, match=r"^Queue not found$"):
        rsmq.delete_queue("q")
    assert not r.exists(k.dedup_sweep)
    assert list(r.scan_iter(match=k.dedups, count=1000)) == []


@backends
def test_dedup_input_is_validated_with_clear_errors(rsmq):
    rsmq.create_queue("q")
    for bad, detail in [
        ("", "got 0 characters"),
        ("x" * 129, "got 129 characters"),
        ("a,b", "got ',' at index 1"),
        ("a b", "got ' ' at index 1"),
        ("a#b", "got '#' at index 1"),
        ("é", "got 'é' at index 0"),
        (5, "got int"),
    ]:
        with pytest.raises(InvalidFormat, match=r"^Invalid dedup_id format$") as exc:
            rsmq.send_message("q", "x", dedup_id=bad)
        assert detail in str(exc.value.detail)
        with pytest.raises(InvalidFormat):
            rsmq.send_messages("q", ["x"], dedup_ids=[bad])
    assert rsmq.send_message("q", "x", dedup_id="a" * 128)
    assert rsmq.send_message("q", "x", dedup_id="Az09_.:/=+@-")
    with pytest.raises(InvalidValue, match=r"^dedup_ids must have one item per message$"):
        rsmq.send_messages("q", ["x", "y"], dedup_ids=["a"])
    with pytest.raises(InvalidValue, match=r"^dedup_ids must be a list of dedup ids$"):
        rsmq.send_messages("q", ["x"], dedup_ids="a")
    for bad in (0, 86401, -1, 1.5, True, "300"):
        with pytest.raises(InvalidValue, match=r"^dedup_window must be between 1 and 86400$"):
            rsmq.create_queue("w", dedup_window=bad)
        with pytest.raises(InvalidValue, match=r"^dedup_window must be between 1 and 86400$"):
            rsmq.set_queue_attributes("q", dedup_window=bad)
    with pytest.raises(NoAttributeSupplied):
        rsmq.set_queue_attributes("q")
    assert rsmq.get_queue_attributes("q").msgs == 2


# The client's own retry ---------------------------------------------------------------------


class ReplyDropper:
    """A loopback proxy to Redis that, for every ``every``-th send script call it forwards,
    lets Redis run it and then cuts the connection instead of passing the reply on: the reply
    is lost, and redis-py retries the call on a new connection."""

    def __init__(self, target: tuple[str, int], marker: bytes, every: int = 3) -> None:
        self.target, self.marker, self.every = target, marker, every
        self.sends = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            drop = threading.Event()
            threading.Thread(target=self.up, args=(client, upstream, drop), daemon=True).start()
            threading.Thread(target=self.down, args=(upstream, client, drop), daemon=True).start()

    def up(self, client: socket.socket, upstream: socket.socket, drop: threading.Event) -> None:
        while data := self.recv(client):
            if self.marker in data:
                with self.lock:
                    self.sends += 1
                    if self.sends % self.every == 0:
                        drop.set()
            try:
                upstream.sendall(data)
            except OSError:
                return

    def down(self, upstream: socket.socket, client: socket.socket, drop: threading.Event) -> None:
        while data := self.recv(upstream):
            if drop.is_set():
                with self.lock:
                    self.dropped += 1
                for s in (client, upstream):
                    self.cut(s)
                return
            try:
                client.sendall(data)
            except OSError:
                return

    @staticmethod
    def recv(s: socket.socket) -> bytes:
        try:
            return s.recv(65536)
        except OSError:
            return b""

    @staticmethod
    def cut(s: socket.socket) -> None:
        # shutdown, not only close: close leaves the other thread's recv waiting, and the
        # client would never hear of the cut.
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def close(self) -> None:
        self.server.close()
        for s in self.conns:
            self.cut(s)


@backends
def test_a_send_call_run_again_answers_as_the_first_and_stores_nothing(rsmq, r):
    """What redis-py's retry does after a lost reply: the same call, arguments and all."""
    rsmq.create_queue("q")
    k = rsmq.keys("q")
    call = p.send(k, [b"a", b"b"], "", all_or_none=True, realtime=False)
    first = p.parse_batch_ids(rsmq._call(call))
    assert p.parse_batch_ids(rsmq._call(call)) == first
    assert rsmq.get_queue_attributes("q").totalsent == 2
    suffixes = call.args[3]
    assert isinstance(suffixes, bytes)
    # In the hash of the span the call named, for 90 s after the call that made it.
    marker_hash = call.keys[2]
    assert marker_hash in (k.sent(p.retry_span()).encode(), k.sent(p.retry_span() - 1).encode())
    # Every message stored: the marker holds the clock reading the ids were made from.
    assert r.hget(marker_hash, suffixes[:22]) == "#" + first[0][:10]
    assert 0 < r.ttl(marker_hash) <= 90
    # Set once, not at every call (which cost Redis more than the check that it is new).
    r.expire(marker_hash, 50)
    rsmq._call(in_span(p.send(k, [b"c"], "", all_or_none=True, realtime=False), marker_hash))
    assert 0 < r.ttl(marker_hash) <= 50 and r.hlen(marker_hash) == 2
    rsmq.delete_queue("q")
    assert not r.exists(marker_hash)
    # A hash made again (the queue deleted and made again in the span) gets its lifetime too.
    rsmq.create_queue("q")
    rsmq._call(in_span(p.send(k, [b"d"], "", all_or_none=True, realtime=False), marker_hash))
    assert 0 < r.ttl(marker_hash) <= 90


@backends
def test_a_retried_batch_gets_its_ids_again_across_a_carry_and_with_refusals(rsmq, r):
    """A retry answers every id of the first try, in order (1,500 of them pass a carry of the
    id's last two digits, 1,296 microseconds), and a message it refused as it did; one
    message alone (a path of its own in send.lua) as well."""
    rsmq.create_queue("q")
    k = rsmq.keys("q")
    one = p.send(k, [b"1"], "", all_or_none=False, realtime=True)  # the one-message path
    (id,) = p.parse_ids(rsmq._call(one))
    assert p.parse_ids(rsmq._call(one)) == [id] and r.hget(one.keys[2], one.args[3]) == id
    many = p.send(k, [b"m"] * 1500, "", all_or_none=True, realtime=False)
    first = p.parse_batch_ids(rsmq._call(many))
    assert len(set(first)) == 1500 and first == sorted(first)
    assert p.parse_batch_ids(rsmq._call(many)) == first
    some = p.send(k, [b"a", b"x" * 70000, b"c"], "", all_or_none=False, realtime=False)
    answers = p.parse_ids(rsmq._call(some))
    again = p.parse_ids(rsmq._call(some))
    assert [str(a) for a in again] == [str(a) for a in answers]
    stored, refused, suffixes = answers[0], answers[1], some.args[3]
    assert isinstance(stored, str) and isinstance(refused, MessageTooLong)
    assert isinstance(suffixes, bytes)
    assert r.hget(some.keys[2], suffixes[:22]) == f"#{stored[:10]}:2"  # the reading, the refused
    # The queue's maxsize cut between the tries: the retry still answers what the first stored.
    big = p.send(k, [b"y" * 2000, b"z"], "", all_or_none=False, realtime=False)
    stored_both = p.parse_ids(rsmq._call(big))
    rsmq.set_queue_attributes("q", maxsize=1024)
    assert p.parse_ids(rsmq._call(big)) == stored_both and all(
        isinstance(i, str) for i in stored_both
    )
    assert rsmq.get_queue_attributes("q").totalsent == 1505


@backends
@pytest.mark.parametrize("all_or_none", [False, True])
@pytest.mark.parametrize("dedup", ["none", "every", "first"])
@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("cut", [False, True], ids=["same-maxsize", "maxsize-cut"])
def test_a_retry_answers_the_ids_stored_as_the_first_try_did(
    rsmq, r, all_or_none, dedup, count, cut
):
    """A retry of a try that stored its messages answers their ids as the first try did: not
    "too long" when the queue's maxsize was cut between the tries (a caller told so may
    shorten the message and send it again: twice), and not as duplicates when every message
    has a dedup id (the retry finds them all, stores nothing, and was answered "=" without a
    look at the marker: "duplicate" through the REST API, for a message sent once). One
    message (its own path), "all" mode (refused before the marker was looked at) and both."""
    rsmq.create_queue("q")
    k = rsmq.keys("q")
    ids = {
        "none": None,
        "every": [f"d{i}" for i in range(count)],
        "first": ["d0"] + [""] * (count - 1),
    }[dedup]
    bodies = [b"y" * 2000] * count
    call = p.send(k, bodies, "", all_or_none=all_or_none, realtime=False, dedup_ids=ids)
    first = [p._text(a) for a in rsmq._call(call)]
    assert first[0] == "ok" and len(first) == count + 1 and "!" not in "".join(first)
    if cut:
        rsmq.set_queue_attributes("q", maxsize=1024)
    # The same answers, duplicates marked as they were ("=" before the id: none, the first try
    # stored every one).
    assert [p._text(a) for a in rsmq._call(call)] == first
    assert rsmq.get_queue_attributes("q").msgs == count


@backends
def test_a_retry_finding_a_marker_of_answers_answers_them(rsmq, r):
    """A marker in the other form (a call's answers, joined, as a send with dedup ids or an
    earlier release leaves it) is answered as it stands, whatever the call."""
    rsmq.create_queue("q")
    call = p.send(rsmq.keys("q"), [b"a", b"b"], "", all_or_none=True, realtime=False)
    suffixes = call.args[3]
    assert isinstance(suffixes, bytes)
    ids = ["a" * 32, "b" * 32]
    r.hset(call.keys[2], suffixes[:22], ",".join(ids))
    assert p.parse_batch_ids(rsmq._call(call)) == ids
    assert rsmq.get_queue_attributes("q").msgs == 0


def in_span(call: p.Call, marker_hash: str | bytes) -> p.Call:
    """The call, its marker in the hash named (the clock's span may have moved on meanwhile)."""
    return replace(call, keys=[*call.keys[:2], marker_hash, *call.keys[3:]])


@backends
def test_a_retry_of_a_send_that_failed_finds_no_marker_and_is_answered_as_the_first(rsmq, r):
    """A call that stored nothing (every message too long, or all duplicates) leaves no
    marker: its retry stores nothing either, and says so as the first try did."""
    rsmq.create_queue("q")
    k = rsmq.keys("q")
    call = p.send(k, [b"x" * 70000], "", all_or_none=False, realtime=False)
    assert p.parse_ids(rsmq._call(call))[0].name == "messageTooLong"
    assert not r.exists(call.keys[2])
    assert p.parse_ids(rsmq._call(call))[0].name == "messageTooLong"
    assert rsmq.get_queue_attributes("q").msgs == 0


def direct(redis_url: str) -> tuple[str, int, int]:
    kw = redis.Redis.from_url(redis_url).get_connection_kwargs()
    return kw["host"], kw["port"], kw.get("db", 0)


def test_a_send_whose_reply_is_lost_is_retried_and_stored_once(redis_url, ns):
    """The soak's fault, made deterministic: every third send's reply is lost after Redis ran
    it. The client retries it by itself; every message is stored once and every send answers
    the id it was stored under. Without the retry marker a third of them were stored twice."""
    host, port, db = direct(redis_url)
    proxy = ReplyDropper((host, port), b"EVALSHA")
    try:
        url = f"redis://127.0.0.1:{proxy.port}/{db}"
        with RSMQ.from_url(url, ns=ns) as rsmq:
            rsmq.create_queue("q")
            sent = {rsmq.send_message("q", f"m{i}"): f"m{i}" for i in range(60)}
            batch = rsmq.send_messages("q", [f"b{i}" for i in range(10)])
        assert proxy.dropped >= 20  # the fault did happen, to sends the client then retried
        with RSMQ.from_url(redis_url, ns=ns) as stored:
            peek = stored.peek_messages("q", count=1000)
        bodies = Counter(m.message for m in peek.messages)
        assert [b for b, n in bodies.items() if n > 1] == []  # 0 duplicates from retried sends
        assert len(peek.messages) == 70
        assert {m.id: m.message for m in peek.messages} == {
            **sent,
            **{mid: f"b{i}" for i, mid in enumerate(batch)},
        }
    finally:
        proxy.close()


def test_an_async_send_whose_reply_is_lost_is_retried_and_stored_once(redis_url, ns):
    host, port, db = direct(redis_url)
    proxy = ReplyDropper((host, port), b"EVALSHA")

    async def scenario() -> dict[str, str]:
        url = f"redis://127.0.0.1:{proxy.port}/{db}"
        async with AsyncRSMQ.from_url(url, ns=ns) as rsmq:
            await rsmq.create_queue("q")
            sent = {}
            for i in range(30):  # one at a time: each its own script call
                sent[await rsmq.send_message("q", f"m{i}")] = f"m{i}"
            # Concurrent: coalesced into batches, each batch's call retried whole.
            ids = await asyncio.gather(*(rsmq.send_message("q", f"c{i}") for i in range(30)))
            sent.update({mid: f"c{i}" for i, mid in enumerate(ids)})
            return sent

    try:
        sent = asyncio.run(scenario())
        assert proxy.dropped >= 10
        with RSMQ.from_url(redis_url, ns=ns) as rsmq:
            peek = rsmq.peek_messages("q", count=1000)
        assert Counter(m.message for m in peek.messages).most_common(1)[0][1] == 1
        assert {m.id: m.message for m in peek.messages} == sent
    finally:
        proxy.close()


# The REST API ---------------------------------------------------------------------------------


def test_api_send_with_an_idempotency_key_or_a_dedup_id(make_client, queues):
    api = make_client()
    assert (
        api.post("/api/queues", json={"qname": "q", "dedup_window": 60}).json()["dedup_window"]
        == 60
    )
    send = "/api/queues/q/messages"
    first = api.post(send, json={"message": "a"}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202 and first.json()["duplicate"] is False
    again = api.post(send, json={"message": "a"}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    # The body's dedup_id is the same id space; a message's own dedup_id wins over the header.
    assert api.post(send, json={"message": "a", "dedup_id": "k1"}).json()["duplicate"] is True
    own = api.post(send, json={"message": "b", "dedup_id": "k2"}, headers={"Idempotency-Key": "k1"})
    assert own.json()["duplicate"] is False
    assert "duplicate" not in api.post(send, json={"message": "c"}).json()
    assert queues.get_queue_attributes("q").msgs == 3
    # A duplicate is not recorded "queued" again: its status stays as its worker left it.
    events = api.get(f"/api/queues/q/messages/{first.json()['id']}/timeline").json()["events"]
    assert [e["status"] for e in events] == ["queued"]


def test_api_batch_dedup_per_message_and_by_the_requests_key(make_client, queues):
    api = make_client()
    api.post("/api/queues", json={"qname": "q"})
    send = "/api/queues/q/messages"
    body = {"messages": ["a", {"message": "b", "dedup_id": "own"}, {"message": "c"}]}
    first = api.post(send, json=body, headers={"Idempotency-Key": "batch-1"}).json()
    assert first["duplicate"] == [False, False, False]
    again = api.post(send, json=body, headers={"Idempotency-Key": "batch-1"}).json()
    assert again == {"ids": first["ids"], "duplicate": [True, True, True]}
    assert queues.get_queue_attributes("q").msgs == 3
    assert queues.send_message("q", "x", dedup_id="batch-1/0") == first["ids"][0]
    mixed = api.post(send, json={"messages": [{"message": "d", "dedup_id": "own"}, "e"]}).json()
    assert mixed == {"ids": [first["ids"][1], mixed["ids"][1]], "duplicate": [True, False]}


def test_api_refuses_bad_dedup_input_clearly(make_client):
    api = make_client()
    api.post("/api/queues", json={"qname": "q"})
    send = "/api/queues/q/messages"
    bad = api.post(send, json={"message": "a", "dedup_id": "a b"})
    assert bad.status_code == 400
    assert bad.json()["message"] == "Invalid dedup_id format"
    assert "' ' at index 1" in bad.json()["detail"]
    long = api.post(send, json={"message": "a"}, headers={"Idempotency-Key": "k" * 121})
    assert long.status_code == 400 and "at most 120" in long.json()["message"]
    odd = api.post(send, json={"message": "a"}, headers={"Idempotency-Key": "a,b"})
    assert odd.status_code == 400 and odd.json()["message"] == "Invalid dedup_id format"
    both = api.post(send, json={"messages": ["a"], "dedup_id": "x"})
    assert both.status_code == 400
    extra = api.post(send, json={"messages": [{"message": "a", "nope": 1}]})
    assert extra.status_code == 400 and "messages[0]" in extra.json()["message"]
    window = api.patch("/api/queues/q", json={"dedup_window": 0})
    assert window.status_code == 400
    assert window.json()["message"] == "dedup_window must be between 1 and 86400"
    assert api.patch("/api/queues/q", json={"dedup_window": 10}).json()["dedup_window"] == 10


def queued_events(r, k: p.Keys) -> list[StatusEvent]:
    return [StatusEvent.from_json(f["e"]) for _, f in r.xrange(k.events)]


@backends
@pytest.mark.parametrize("dedup", [None, ["a", None]])
def test_a_retried_send_with_events_records_queued_once(rsmq, r, dedup):
    rsmq.create_queue("q")
    k = rsmq.keys("q")
    events = queued_on_send()(k)
    call = p.send(
        k,
        [b"x", b"y"],
        "",
        all_or_none=True,
        realtime=False,
        dedup_ids=dedup and ["a", ""],
        events=events,
    )
    first = p.parse_batch_ids(rsmq._call(call))
    again = rsmq._call(call)
    assert r.zcard(k.zset) == 2
    got = queued_events(r, k)
    assert sorted(e.id for e in got) == sorted(first)
    assert all(e.status == "queued" and e.ts for e in got)
    for mid in first:
        assert StatusEvent.from_json(r.get(k.status(mid))).status == "queued"
    assert again is not None
