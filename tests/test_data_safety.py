"""Nothing of a user's is lost or wrongly deleted (issue 11, items 1, 2, 4 and 7).

- A queue name whose keys would be a key of the layout ("QUEUES") is refused by every
  operation, and a ``{ns}:QUEUES`` of someone else's is reported, never deleted.
- A body that is not UTF-8 (written by another RSMQ client or redis-cli) comes back losslessly
  from the library, the CLI and the web API; no request that changed state answers 5xx.
- Deleting a queue deletes every key of ours that belongs to it (events, statuses).
- ``str(err)`` is RSMQ's text; what we know beyond it is ``err.detail``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from typing import Any

import pytest
import redis

from realtime import EventLog, StatusEvent
from rsmq_core import AsyncRSMQ, IndexConflict, InvalidFormat, InvalidValue, QueueNotFound
from rsmq_core._protocol import SWEEP_COUNT
from rsmq_core.cli import main
from rsmq_core.client import connect
from support.redis_cluster import BACKENDS
from web.api import ROUTES

RESERVED = (
    "'QUEUES' is reserved: its messages would be stored at {ns}:QUEUES, the key of the index "
    "of queue names"
)
NOT_UTF8 = b"caf\xe9 \xff\x00 \xed\xa0\x80 end"  # Latin-1, a stray byte, NUL, a CESU surrogate


@pytest.fixture
def raw(backend: Any) -> Any:
    """A client that does not decode replies (bodies are bytes), on the test's backend."""
    client: Any = (
        redis.RedisCluster.from_url(backend.url)
        if backend.cluster
        else redis.Redis.from_url(backend.url)
    )
    with client:
        yield client


def store_raw(raw: Any, rsmq: Any, qname: str, body: bytes) -> str:
    """A message whose body is any bytes, as another RSMQ client or redis-cli can store it:
    sent, then its body field overwritten (HSET {ns}:{qname}:Q <id> <bytes>)."""
    mid: str = rsmq.send_message(qname, "placeholder")
    raw.hset(rsmq.keys(qname).hash, mid, body)
    return mid


# 1. Names that collide with keys of the layout ---------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.create_queue("QUEUES"),
        lambda q: q.delete_queue("QUEUES"),
        lambda q: q.get_queue_attributes("QUEUES"),
        lambda q: q.set_queue_attributes("QUEUES", vt=1),
        lambda q: q.send_message("QUEUES", "x"),
        lambda q: q.send_messages("QUEUES", ["x"]),
        lambda q: q.receive_message("QUEUES"),
        lambda q: q.pop_message("QUEUES"),
        lambda q: q.delete_message("QUEUES", "a" * 32),
        lambda q: q.purge_queue("QUEUES"),
        lambda q: q.move_message("a", "a" * 32, "QUEUES"),
        lambda q: q.redrive_messages("QUEUES", "a"),
        lambda q: q.keys("QUEUES"),
    ],
)
def test_the_queue_name_QUEUES_is_refused_by_every_operation(rsmq, r, call):
    rsmq.create_queue("a")
    with pytest.raises(InvalidFormat, match=r"^Invalid qname format$") as refused:
        call(rsmq)
    assert refused.value.name == "invalidFormat"
    assert refused.value.detail == RESERVED
    # The index is what it was: a set naming "a", which is still a queue.
    assert r.type(f"{rsmq.ns}:QUEUES") == "set"
    assert rsmq.list_queues() == ["a"]
    assert rsmq.get_queue_attributes("a").msgs == 0


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_an_index_of_someone_elses_is_reported_and_never_touched(rsmq, r):
    rsmq.create_queue("a")
    index = f"{rsmq.ns}:QUEUES"
    r.delete(index)
    r.set(index, "not ours")
    message = f"{index} is a string, not the set of queue names RSMQ keeps there"
    detail = (
        "another program wrote it; nothing here changes or deletes it: rename or remove it yourself"
    )
    for call in (rsmq.list_queues, lambda: rsmq.create_queue("b"), lambda: rsmq.delete_queue("a")):
        with pytest.raises(IndexConflict) as refused:
            call()
        assert (refused.value.name, str(refused.value)) == ("indexConflict", message)
        assert refused.value.detail == detail
    assert r.get(index) == "not ours"
    assert rsmq.get_queue_attributes("a").msgs == 0  # not deleted
    assert not r.exists(rsmq.keys("b").hash)  # not created
    # Once its owner removes it, everything works again (the index is rebuilt by creates).
    r.delete(index)
    rsmq.create_queue("b")
    assert rsmq.list_queues() == ["b"]


def test_the_api_refuses_QUEUES_and_reports_a_foreign_index(make_client, r, ns):
    api = make_client()
    assert api.post("/api/queues", json={"qname": "a"}).status_code == 201
    created = api.post("/api/queues", json={"qname": "QUEUES"})
    assert created.status_code == 400
    assert created.json() == {
        "error": "invalidFormat",
        "message": "Invalid qname format",
        "detail": RESERVED,
    }
    deleted = api.delete("/api/queues/QUEUES")
    assert (deleted.status_code, deleted.json()["detail"]) == (400, RESERVED)
    assert api.get("/api/queues").json() == {"queues": ["a", "jobs"]}  # jobs: the example queue
    r.delete(f"{ns}:QUEUES")
    r.lpush(f"{ns}:QUEUES", "x")
    for answer in (
        api.get("/api/queues"),
        api.post("/api/queues", json={"qname": "b"}),
        api.delete("/api/queues/a"),
    ):
        assert answer.status_code == 409
        assert answer.json()["error"] == "indexConflict"
        assert answer.json()["message"].startswith(f"{ns}:QUEUES is a list, not the set")
    assert r.lrange(f"{ns}:QUEUES", 0, -1) == ["x"]
    assert r.exists(f"{ns}:a:Q") and not r.exists(f"{ns}:b:Q")


def test_the_cli_reports_a_foreign_index(capsys, monkeypatch, redis_url, r, ns):
    r.set(f"{ns}:QUEUES", "x")
    monkeypatch.setattr(sys, "stdin", None)
    assert main(["--url", redis_url, "--ns", ns, "create", "q"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"rsmq: indexConflict: {ns}:QUEUES is a string, not the set of queue names RSMQ keeps "
        "there (another program wrote it; nothing here changes or deletes it: rename or "
        "remove it yourself)\n"
    )
    assert r.get(f"{ns}:QUEUES") == "x" and not r.exists(f"{ns}:q:Q")


# 2. Bodies that are not UTF-8 -----------------------------------------------------------------


def assert_raw(message: Any, body: bytes = NOT_UTF8) -> None:
    """A received message carrying ``body`` losslessly: as bytes, and in its JSON form."""
    assert message is not None
    assert message.body == body and not message.is_text
    as_json = message.to_json()
    assert as_json["message"] is None
    assert base64.b64decode(as_json["message_base64"]) == body
    json.dumps(as_json, ensure_ascii=False).encode("utf-8")  # what a JSON response does


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_library_delivers_bodies_that_are_not_utf8_losslessly(rsmq, raw):
    rsmq.create_queue("q")
    rsmq.create_queue("dead")
    bodies = {
        store_raw(raw, rsmq, "q", NOT_UTF8 + bytes([i])): NOT_UTF8 + bytes([i]) for i in range(4)
    }
    first = next(iter(bodies))
    got = rsmq.receive_message("q", vt=0)
    assert got.id == first
    assert_raw(got, bodies[first])
    # vt=0 makes each received message visible again, after the others: order is not asserted.
    for m in rsmq.receive_messages("q", 2, vt=0) + rsmq.receive_batch("q", 1, vt=0).messages:
        assert_raw(m, bodies[m.id])
    # A move (dead-lettering) and a redrive carry the bytes as they are (with new ids).
    assert rsmq.move_message("q", first, "dead")
    assert rsmq.redrive_messages("dead", "q") == 1
    popped = [rsmq.pop_message("q"), *rsmq.pop_messages("q", 10)]
    for m in popped:
        assert_raw(m, m.body)
    assert sorted(m.body for m in popped) == sorted(bodies.values())
    # A UTF-8 body is plain text, and its JSON form is RSMQ's five fields.
    rsmq.send_message("q", "café ☕")
    text = rsmq.pop_message("q")
    assert (text.message, text.body, text.is_text) == ("café ☕", "café ☕".encode(), True)
    assert text.to_json() == {
        "id": text.id,
        "message": "café ☕",
        "rc": 1,
        "fr": text.fr,
        "sent": text.sent,
    }


@pytest.fixture
def client(redis_url: str, ns: str) -> Any:
    from rsmq_core import RSMQ

    with RSMQ.from_url(redis_url, ns=ns) as c:
        yield c


def test_no_state_changing_route_answers_5xx_for_a_body_that_is_not_utf8(make_client, client, raw):
    """The rule: a request that changed state never answers 5xx for what happened afterwards.
    Each route that changes state, run with a body that is not UTF-8 in the queue, answers 2xx
    and (where it returns the message) gives the bytes back."""
    api = make_client()
    answers = []

    def call(method: str, path: str, **kwargs: Any) -> Any:
        answer = api.request(method, path, **kwargs)
        answers.append((method, path, answer.status_code))
        assert answer.status_code < 300, (method, path, answer.status_code, answer.text)
        return answer.json() if answer.content else None

    call("POST", "/api/queues", json={"qname": "q"})
    call("POST", "/api/queues", json={"qname": "dead"})
    mid = store_raw(raw, client, "q", NOT_UTF8)
    received = call("POST", "/api/queues/q/receive", json={"vt": 0})["message"]
    assert received["id"] == mid and received["message"] is None
    assert base64.b64decode(received["message_base64"]) == NOT_UTF8
    listed = call("POST", "/api/queues/q/receive", json={"vt": 0, "count": 5})["messages"]
    assert [base64.b64decode(m["message_base64"]) for m in listed] == [NOT_UTF8]
    assert call("POST", f"/api/queues/q/messages/{mid}/visibility", json={"vt": 0})["changed"]
    call("PATCH", "/api/queues/q", json={"vt": 5})
    call("GET", "/api/queues/q")
    call("POST", "/api/queues/q/messages", json={"message": "text"})
    popped = call("POST", "/api/queues/q/pop")["message"]
    assert popped["id"] == mid and base64.b64decode(popped["message_base64"]) == NOT_UTF8
    assert call("POST", "/api/queues/q/pop")["message"]["message"] == "text"
    # Dead-lettered and redriven: still the same bytes.
    store_raw(raw, client, "dead", NOT_UTF8)
    assert call("POST", "/api/queues/dead/redrive", json={"to": "q"}) == {"moved": 1}
    again = call("POST", "/api/queues/q/receive", json={"vt": 0})["message"]
    assert base64.b64decode(again["message_base64"]) == NOT_UTF8
    assert call("DELETE", f"/api/queues/q/messages/{again['id']}") == {"deleted": True}
    # The operator's actions on such a message: peek, retry now, pause, resume, purge.
    hidden = store_raw(raw, client, "q", NOT_UTF8)
    call("POST", f"/api/queues/q/messages/{hidden}/visibility", json={"vt": 60})
    peeked = call("GET", "/api/queues/q/peek")["messages"]
    assert [base64.b64decode(m["message_base64"]) for m in peeked] == [NOT_UTF8]
    assert call("POST", f"/api/queues/q/messages/{hidden}/visible") == {"changed": True}
    assert call("POST", "/api/queues/q/pause")["changed"]
    assert call("POST", "/api/queues/q/resume")["changed"]
    assert call("POST", "/api/queues/q/purge") == {"purged": 1}
    store_raw(raw, client, "q", NOT_UTF8)
    call("POST", "/api/schedules", json={"name": "s", "queue": "q", "every": 60, "message": "t"})
    call("DELETE", "/api/schedules/s")
    call("DELETE", "/api/queues/q")
    # Every route that changes state was run (a new one fails this until it is added above).
    ran = {(m, re.sub(r"/queues/[^/]+", "/queues/{qname}", p)) for m, p, _ in answers}
    ran = {(m, re.sub(r"/messages/[a-zA-Z0-9]{32}", "/messages/{id}", p)) for m, p in ran}
    ran = {(m, re.sub(r"/schedules/[^/]+", "/schedules/{name}", p)) for m, p in ran}
    writes = {(m, route.path) for route in ROUTES for m in route.methods or () if m != "GET"}
    writes -= {("HEAD", route.path) for route in ROUTES}
    # The dashboard's routes run the same endpoints as /api's (with its session instead).
    dashboard = {(m, path) for m, path in writes if path.startswith("/dashboard/api/")}
    assert {(m, "/api/" + path.removeprefix("/dashboard/api/")) for m, path in dashboard} <= writes
    assert writes - dashboard <= ran


def test_the_cli_prints_bodies_that_are_not_utf8_losslessly(capsys, redis_url, ns, client, raw):
    client.create_queue("q")
    mid = store_raw(raw, client, "q", NOT_UTF8)
    assert main(["--url", redis_url, "--ns", ns, "receive", "q", "--vt", "0"]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert (err, printed["id"], printed["message"]) == ("", mid, None)
    assert base64.b64decode(printed["message_base64"]) == NOT_UTF8
    assert main(["--url", redis_url, "--ns", ns, "pop", "q"]) == 0
    out, _ = capsys.readouterr()
    assert base64.b64decode(json.loads(out)["message_base64"]) == NOT_UTF8
    assert out.isascii()


# 4. Deleting a queue deletes every key of ours that belongs to it -------------------------------


async def record_events(backend: Any, ns: str, events: list[StatusEvent]) -> None:
    client = connect(backend.url, cluster=backend.cluster)
    try:
        log = EventLog(client, ns)
        for event in events:
            await log.record(event)
    finally:
        await client.aclose()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_deleting_a_queue_deletes_its_events_and_statuses(rsmq, r, backend):
    for name in ("q", "q2"):  # q2: a neighbour whose keys start with q's name
        rsmq.create_queue(name)
    mid = rsmq.send_message("q", "x")
    events = [StatusEvent(s, q, mid) for q in ("q", "q2") for s in ("queued", "done")]
    asyncio.run(record_events(backend, rsmq.ns, events))
    q, q2 = rsmq.keys("q"), rsmq.keys("q2")
    ours = [q.events, q.status(mid), q2.events, q2.status(mid)]
    assert [r.exists(k) for k in ours] == [1, 1, 1, 1]
    rsmq.delete_queue("q")
    assert [r.exists(k) for k in ours] == [0, 0, 1, 1]
    assert not r.exists(q.hash) and not r.exists(q.zset)
    assert rsmq.list_queues() == ["q2"]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_repeated_delete_sweeps_what_an_interrupted_one_left(rsmq, r):
    """The queue's own keys gone (an interrupted delete, or Node RSMQ's deleteQueue), many
    statuses and the stream left: the next delete_queue sweeps them, in more than one call,
    and says the queue is not there."""
    k = rsmq.keys("q")
    with r.pipeline() as pipe:
        for i in range(2 * SWEEP_COUNT + 5):
            pipe.set(k.status(f"{i:032d}"), "{}", ex=600)
        pipe.xadd(k.events, {"e": "{}"})
        pipe.set(k.status("short"), "not a status of ours: kept")
        pipe.execute()
    with pytest.raises(QueueNotFound, match=r"^Queue not found$"):
        rsmq.delete_queue("q")
    assert not r.exists(k.events)
    assert list(r.scan_iter(match=f"{k.zset}:status:*", count=1000)) == [k.status("short")]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_sweep_that_fails_does_not_fail_the_delete_done_before_it(r, ns, redis_url, kind):
    """The rule: a call that changed state never fails for what happened afterwards. A user
    not allowed SCAN has the queue deleted, answered as done; the stream left behind has the
    next delete_queue (by a user allowed it) sweep."""
    from rsmq_core import RSMQ, AsyncRSMQ

    r.acl_setuser(
        ns, enabled=True, passwords=["+pw"], keys=[f"{ns}:*"], commands=["+@all", "-scan"]
    )
    url = redis_url.replace("redis://", f"redis://{ns}:pw@")
    try:
        with RSMQ.from_url(redis_url, ns=ns) as admin:
            admin.create_queue("q")
            k = admin.keys("q")
            r.xadd(k.events, {"e": "{}"})
            r.set(k.status("a" * 32), "{}", ex=600)
            if kind == "sync":
                with RSMQ.from_url(url, ns=ns) as user:
                    user.delete_queue("q")
            else:

                async def delete() -> None:
                    async with AsyncRSMQ.from_url(url, ns=ns) as user:
                        await user.delete_queue("q")

                asyncio.run(delete())
            assert not r.exists(k.hash) and admin.list_queues() == []
            assert r.exists(k.events) and r.exists(k.status("a" * 32))
            with pytest.raises(QueueNotFound):
                admin.delete_queue("q")
            assert not r.exists(k.events) and not r.exists(k.status("a" * 32))
    finally:
        r.acl_deluser(ns)


@pytest.mark.parametrize("ns", ["t*[a]?\\"])
def test_a_namespace_with_glob_characters_sweeps_only_its_own(r, ns, redis_url):
    """The SCAN pattern matches the namespace literally: "t*" must not sweep "tx"."""
    from rsmq_core import RSMQ

    with RSMQ.from_url(redis_url, ns=ns) as mine, RSMQ.from_url(redis_url, ns="tx") as other:
        mine.create_queue("q")
        other_status = other.keys("q").status("a" * 32)
        r.set(other_status, "{}")
        r.xadd(mine.keys("q").events, {"e": "{}"})
        r.set(mine.keys("q").status("b" * 32), "{}")
        mine.delete_queue("q")
        assert r.exists(other_status) and not r.exists(mine.keys("q").status("b" * 32))
        r.delete(other_status)


# 7. RSMQ's message in str(err), the rest in err.detail -----------------------------------------


def test_errors_keep_rsmqs_text_and_carry_the_detail(client, make_client):
    with pytest.raises(InvalidValue) as refused:
        client.create_queue("q", vt="x")
    assert str(refused.value) == refused.value.message == "vt must be between 0 and 9999999"
    assert refused.value.detail == "got 'x', not an integer"
    assert refused.value.explain() == "vt must be between 0 and 9999999 (got 'x', not an integer)"
    assert repr(refused.value) == (
        "InvalidValue('vt must be between 0 and 9999999', detail=\"got 'x', not an integer\")"
    )
    api = make_client()
    answer = api.post("/api/queues", json={"qname": "q", "maxsize": 5})
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "error": "invalidValue",
            "message": "maxsize must be between 1024 and 65536",
            "detail": "got 5",
        },
    )
    # No detail, no field: the body is RSMQ's name and message only.
    missing = api.get("/api/queues/nope")
    assert missing.json() == {"error": "queueNotFound", "message": "Queue not found"}


def test_the_dashboard_skips_a_QUEUES_name_an_older_version_left_in_the_index(redis_url, ns, r):
    from web.dashboard import snapshot

    async def run() -> dict[str, Any]:
        rsmq = AsyncRSMQ.from_url(redis_url, ns=ns)
        try:
            await rsmq.create_queue("jobs")
            r.sadd(f"{ns}:QUEUES", "QUEUES")  # as an older version (or Node RSMQ) could
            return await snapshot(rsmq)
        finally:
            await rsmq.aclose()

    snap = asyncio.run(run())
    assert list(snap["queues"]) == ["jobs"]
