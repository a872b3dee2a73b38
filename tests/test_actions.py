"""The operator's actions: peek, make visible now, move selected messages, pause and resume;
in the library (both clients, standalone and cluster), the API, the dashboard's own routes,
the CLI and the worker."""

from __future__ import annotations

import asyncio
import base64
import getpass
import json
import re
import socket

import pytest

from realtime import EventLog, StatusEvent
from realtime.events import status_key
from rsmq_core import RSMQ, InvalidValue, Keys, QueueNotFound
from rsmq_core import cli as cli_module
from rsmq_core.cli import main as cli_main
from rsmq_core.client import connect
from support.redis_cluster import BACKENDS
from support.workers import WorkerProcess, wait_for
from tests.handlers import done, started

both = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


@both
def test_peek_shows_visible_and_hidden_and_changes_nothing(rsmq, r):
    rsmq.create_queue("q")
    first = rsmq.send_message("q", "one")
    later = rsmq.send_message("q", "two", delay=60)
    third = rsmq.send_message("q", "three")
    got = rsmq.receive_message("q", vt=120)  # "one": now hidden, received once
    assert got.id == first
    keys = rsmq.keys("q")
    before = (r.zrange(keys.zset, 0, -1, withscores=True), r.hgetall(keys.hash))

    page = rsmq.peek_messages("q", count=2)

    assert (r.zrange(keys.zset, 0, -1, withscores=True), r.hgetall(keys.hash)) == before
    assert page.total == 3 and page.offset == 0 and page.next_offset == 2
    assert [m.id for m in page.messages] == [third, later]  # by visible-at
    assert [m.visible for m in page.messages] == [True, False]
    assert page.messages[0].rc == 0 and page.messages[0].fr == 0
    assert page.messages[1].visible_at == int(r.zscore(keys.zset, later))
    rest = rsmq.peek_messages("q", offset=page.next_offset, count=2)
    assert [(m.id, m.rc, m.fr, m.visible) for m in rest.messages] == [(first, 1, got.fr, False)]
    assert rest.next_offset is None
    assert rsmq.receive_message("q").id == third  # nothing taken, nothing hidden by peeking


@both
def test_peek_refuses_bad_pages_and_missing_queues(rsmq):
    rsmq.create_queue("q")
    with pytest.raises(InvalidValue, match="count must be between 1 and 1000"):
        rsmq.peek_messages("q", count=1001)
    with pytest.raises(InvalidValue, match="offset must be between 0 and"):
        rsmq.peek_messages("q", offset=-1)
    with pytest.raises(QueueNotFound):
        rsmq.peek_messages("nope")
    assert rsmq.peek_messages("q").to_json() == {
        "messages": [],
        "offset": 0,
        "total": 0,
        "next_offset": None,
        "paused_since": None,
    }


def test_peek_carries_a_body_that_is_not_utf8_as_base64(rsmq, r):
    rsmq.create_queue("q")
    mid = rsmq.send_message("q", "x")
    r.hset(rsmq.keys("q").hash, mid, b"\xff\xfe")
    shown = rsmq.peek_messages("q").messages[0].to_json()
    assert shown["message"] is None
    assert base64.b64decode(shown["message_base64"]) == b"\xff\xfe"


@both
def test_make_visible_brings_a_hidden_message_back_now(rsmq):
    rsmq.create_queue("q")
    mid = rsmq.send_message("q", "later", delay=600)
    assert rsmq.receive_message("q") is None
    assert rsmq.make_visible("q", mid) is True
    got = rsmq.receive_message("q")
    assert got.id == mid and got.rc == 1
    assert rsmq.make_visible("q", "x" * 32) is False
    with pytest.raises(QueueNotFound):
        rsmq.make_visible("nope", mid)


@both
def test_move_messages_moves_only_the_selected(rsmq):
    rsmq.create_queue("q-dead")
    rsmq.create_queue("q")
    ids = rsmq.send_messages("q-dead", ["a", "b", "c"])
    moved = rsmq.move_messages("q-dead", [ids[0], ids[2], "y" * 32], "q")
    assert moved[2] == "" and all(moved[:2])
    assert [m.message for m in rsmq.peek_messages("q").messages] == ["a", "c"]
    assert [m.id for m in rsmq.peek_messages("q-dead").messages] == [ids[1]]
    with pytest.raises(InvalidValue, match="ids must be a list of message ids"):
        rsmq.move_messages("q-dead", [], "q")


@both
def test_pause_and_resume_mark_the_queue_and_say_whether_it_changed(rsmq, r):
    rsmq.create_queue("q")
    assert rsmq.is_paused("q") is False
    assert rsmq.pause_queue("q") is True
    assert rsmq.pause_queue("q") is False
    assert rsmq.is_paused("q") is True
    assert rsmq.peek_messages("q").paused_since is not None
    mid = rsmq.send_message("q", "still accepted")
    # The mark is for our workers only: the library's receive (as RSMQ's) still takes it.
    assert rsmq.receive_message("q").id == mid
    assert rsmq.resume_queue("q") is True
    assert rsmq.resume_queue("q") is False
    assert rsmq.is_paused("q") is False
    with pytest.raises(QueueNotFound):
        rsmq.pause_queue("nope")
    rsmq.pause_queue("q")
    rsmq.delete_queue("q")  # the mark goes with the queue
    rsmq.create_queue("q")
    assert rsmq.is_paused("q") is False


# The worker honours pause ------------------------------------------------------------------


@pytest.fixture
def workers():
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.cleanup()


def done_ids(r, ns) -> list[str]:
    return [d["id"] for d in done(r, ns)]


@pytest.mark.parametrize(
    ("backend", "mode"),
    [("standalone", "realtime"), ("standalone", "polling"), ("cluster", "realtime")],
    indirect=["backend"],
)
def test_a_paused_queue_is_not_received_from_until_resumed(backend, ns, r, workers, mode):
    """Realtime: the pause is heard at once (the heartbeat is too slow to be what stops it).
    Polling: at the next heartbeat. Another queue of the same worker goes on meanwhile, which
    shows the worker alive and past the pause; the paused queue's message waits, untouched.
    On a cluster the pause channel is in the queue's slot, heard by sharded pub/sub."""
    realtime = mode == "realtime"
    w = WorkerProcess(
        backend.url,
        ns,
        cluster=backend.cluster,
        queues="jobs,other",
        realtime=realtime,
        heartbeat=60 if realtime else 0.2,
        poll_interval=0.05,
    )
    workers.append(w)
    w.start()
    with RSMQ.from_url(backend.url, ns=ns, realtime=True, cluster=backend.cluster) as q:
        assert q.pause_queue("jobs")
        if not realtime:  # a heartbeat that began after the pause has read it
            key = next(iter(r.keys(f"{ns}:@workers*:*")))

            def beat() -> int:  # when the last heartbeat began (its TTL's reset was too
                return int(json.loads(r.get(key))["last_seen"])  # fine to see reliably)

            seen = beat()
            wait_for(lambda: beat() > seen, what="a heartbeat after the pause")
            seen = beat()
            wait_for(lambda: beat() > seen, what="a whole heartbeat after the pause")
        held = q.send_message("jobs", "{}")
        alive = q.send_message("other", "{}")
        wait_for(lambda: alive in done_ids(r, ns), what="the other queue's message done")
        assert held not in [s["id"] for s in started(r, ns)]
        assert q.peek_messages("jobs").messages[0].rc == 0
        assert q.resume_queue("jobs")
        wait_for(lambda: held in done_ids(r, ns), what="the resumed queue's message done")
    assert w.stop() == 0


# The API and the dashboard's own routes ------------------------------------------------------

TOKEN = "t0ken-t0ken-t0ken-t0ken"
BEARER = {"authorization": f"Bearer {TOKEN}"}


def csrf_of(client, page: str) -> str:
    found = re.search(r'(?:content|value)="([^"]+\.[^"]+)"', client.get(page).text)
    assert found
    return found.group(1)


def logged_in(client) -> str:
    """Log the client in as the dashboard's form does; the page's CSRF token."""
    answer = client.post(
        "/login", data={"csrf": csrf_of(client, "/login"), "token": TOKEN}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client, "/dashboard")


@pytest.fixture
def closed(make_client):
    return make_client(api_token=TOKEN)


@pytest.fixture
def queues(redis_url, ns):
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("q")
        q.create_queue("q-dead")
        yield q


def timeline_of(client, mid, prefix="/api", headers=BEARER):
    answer = client.get(f"{prefix}/queues/q/messages/{mid}/timeline", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def test_api_actions_act_and_leave_events_saying_from_where(closed, queues):
    mid = queues.send_message("q", "hello", delay=600)
    page = closed.get("/api/queues/q/peek?count=10", headers=BEARER).json()
    assert [(m["id"], m["message"], m["rc"], m["visible"]) for m in page["messages"]] == [
        (mid, "hello", 0, False)
    ]
    assert closed.post(f"/api/queues/q/messages/{mid}/visible", headers=BEARER).json() == {
        "changed": True
    }
    assert queues.receive_message("q").id == mid
    assert closed.delete(f"/api/queues/q/messages/{mid}", headers=BEARER).json() == {
        "deleted": True
    }
    events = timeline_of(closed, mid)
    assert [e["status"] for e in events] == ["made visible", "deleted"]
    assert all(e["by"] == "api testclient" and e["ts"] for e in events)

    dead = queues.send_messages("q-dead", ["a", "b", "c"])
    body = {"to": "q", "ids": [dead[1]]}
    moved = closed.post("/api/queues/q-dead/redrive", json=body, headers=BEARER).json()
    assert moved["moved"] == 1 and list(moved["ids"]) == [dead[1]]
    assert [m.message for m in queues.peek_messages("q").messages] == ["b"]
    rest = closed.post("/api/queues/q-dead/redrive", json={"to": "q"}, headers=BEARER).json()
    assert rest == {"moved": 2}

    assert closed.post("/api/queues/q/pause", headers=BEARER).json() == {
        "paused": True,
        "changed": True,
    }
    assert queues.is_paused("q")
    assert closed.post("/api/queues/q/resume", headers=BEARER).json()["changed"] is True
    assert closed.patch("/api/queues/q", json={"vt": 60}, headers=BEARER).json()["vt"] == 60
    assert closed.post("/api/queues/q/purge", headers=BEARER).json() == {"purged": 3}
    history = closed.get("/api/queues/q/history", headers=BEARER).json()["events"]
    assert [(e["status"], e.get("detail")) for e in history] == [
        ("paused", None),
        ("resumed", None),
        ("changed", "vt=60"),
        ("purged", "3 message(s)"),
    ]
    dead_history = closed.get("/api/queues/q-dead/history", headers=BEARER).json()["events"]
    assert [e.get("detail") for e in dead_history] == ["2 message(s) to q"]


def test_a_redriven_message_s_timeline_says_where_it_went(closed, queues):
    mid = queues.send_message("q-dead", "x")
    moved = closed.post(
        "/api/queues/q-dead/redrive", json={"to": "q", "ids": [mid]}, headers=BEARER
    ).json()
    (event,) = closed.get(f"/api/queues/q-dead/messages/{mid}/timeline", headers=BEARER).json()[
        "events"
    ]
    assert (event["status"], event["detail"], event["dead_letter_id"]) == (
        "redriven",
        "to q",
        moved["ids"][mid],
    )


def test_api_actions_refuse_bad_input_by_name(closed, queues):
    def refused(answer, status, error, text):
        assert answer.status_code == status, answer.text
        assert answer.json()["error"] == error and text in answer.json()["message"]

    refused(
        closed.get("/api/queues/q/peek?count=x", headers=BEARER),
        400,
        "invalidValue",
        "count must be an integer",
    )
    refused(
        closed.get("/api/queues/q/peek?count=5000", headers=BEARER),
        400,
        "invalidValue",
        "count must be between 1 and 1000",
    )
    refused(closed.get("/api/queues/q/peek?limit=5", headers=BEARER), 400, "unknownField", "limit")
    refused(
        closed.get("/api/queues/nope/peek", headers=BEARER), 404, "queueNotFound", "Queue not found"
    )
    refused(
        closed.get("/api/queues/q/messages/short/timeline", headers=BEARER),
        400,
        "invalidFormat",
        "Invalid id format",
    )
    refused(
        closed.get(f"/api/queues/nope/messages/{'a' * 32}/timeline", headers=BEARER),
        404,
        "queueNotFound",
        "Queue not found",
    )
    refused(
        closed.post("/api/queues/q-dead/redrive", json={"to": "q", "ids": []}, headers=BEARER),
        400,
        "invalidValue",
        "ids must be a list",
    )
    refused(
        closed.post(
            "/api/queues/q-dead/redrive",
            json={"to": "q", "ids": ["a" * 32], "count": 1},
            headers=BEARER,
        ),
        400,
        "invalidValue",
        "either ids or count",
    )
    refused(
        closed.post("/api/queues/nope/pause", headers=BEARER),
        404,
        "queueNotFound",
        "Queue not found",
    )
    refused(
        closed.post("/api/queues/q/purge", json={"really": True}, headers=BEARER),
        400,
        "unknownField",
        "really",
    )
    refused(closed.post("/api/queues/q/pause"), 401, "unauthorized", "API token")
    assert not queues.is_paused("q")


def test_the_dashboard_acts_with_its_login_and_csrf_token_only(closed, queues):
    mid = queues.send_message("q", "x")
    # The API never takes the cookie; the dashboard's routes need a login.
    refused = closed.post("/dashboard/api/queues/q/pause")
    assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized")
    csrf = logged_in(closed)
    assert closed.post("/api/queues/q/pause").status_code == 401
    # Logged in, but without the page's token: what another site's form could send.
    for headers in ({}, {"x-csrf-token": "made.up"}):
        answer = closed.post("/dashboard/api/queues/q/pause", headers=headers)
        assert (answer.status_code, answer.json()["error"]) == (403, "csrf")
    forged = {"x-csrf-token": csrf, "origin": "https://evil.example"}
    evil = closed.post("/dashboard/api/queues/q/pause", headers=forged)
    assert evil.status_code == 403
    assert not queues.is_paused("q")
    ok = closed.post("/dashboard/api/queues/q/pause", headers={"x-csrf-token": csrf})
    assert ok.json() == {"paused": True, "changed": True}
    assert closed.get("/dashboard/api/queues/q/peek").json()["paused_since"]
    gone = closed.delete(f"/dashboard/api/queues/q/messages/{mid}", headers={"x-csrf-token": csrf})
    assert gone.json() == {"deleted": True}
    (event,) = timeline_of(closed, mid, "/dashboard/api", {})
    assert (event["status"], event["by"]) == ("deleted", "dashboard testclient")


def test_an_action_recorded_nowhere_is_still_done_and_said(closed, queues, redis_url, ns):
    """The events stream made unwritable (a key of another type in its place): the message is
    deleted all the same, and the answer says so rather than a 500."""
    mid = queues.send_message("q", "x")
    stream = queues.keys("q").events
    queues.redis.delete(stream)
    queues.redis.set(stream, "not a stream")
    answer = closed.delete(f"/api/queues/q/messages/{mid}", headers=BEARER)
    assert answer.json() == {"deleted": True}
    assert queues.peek_messages("q").total == 0
    queues.redis.delete(stream)


# The CLI -------------------------------------------------------------------------------------


def test_cli_peeks_retries_pauses_resumes_and_redrives_the_selected(
    redis_url, ns, queues, capsys, monkeypatch
):
    monkeypatch.delenv("REDIS_URL", raising=False)

    def rsmq(*argv: str):
        code = cli_main(["--url", redis_url, "--ns", ns, *argv])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out else None), err

    mid = queues.send_message("q", "later", delay=600)
    code, page, _ = rsmq("peek", "q", "--count", "1")
    assert code == 0 and page["total"] == 1
    assert [(m["id"], m["visible"], m["rc"]) for m in page["messages"]] == [(mid, False, 0)]
    assert rsmq("retry", "q", mid)[:2] == (0, True)
    assert queues.peek_messages("q").messages[0].visible
    assert rsmq("pause", "q")[:2] == (0, True)
    assert queues.is_paused("q")
    assert rsmq("resume", "q")[:2] == (0, True)
    assert rsmq("resume", "q")[:2] == (0, False)
    dead = queues.send_messages("q-dead", ["a", "b"])
    code, moved, _ = rsmq("redrive", "q-dead", "q", "--ids", dead[1])
    assert code == 0 and list(moved) == [dead[1]]
    assert [m.message for m in queues.peek_messages("q-dead").messages] == ["a"]
    assert rsmq("peek", "q", "--count", "0") == (
        1,
        None,
        "rsmq: invalidValue: count must be between 1 and 1000 (got 0)\n",
    )
    with pytest.raises(SystemExit) as usage:
        rsmq("redrive", "q-dead", "q", "--ids", "a" * 32, "--count", "1")
    assert usage.value.code == 2
    assert "--count: not allowed with argument --ids" in capsys.readouterr().err


# The timeline ---------------------------------------------------------------------------------


async def test_a_timeline_is_every_event_of_one_id_across_chunks(redis_url, ns):
    redis_client = connect(redis_url)
    log = EventLog(redis_client, ns)
    try:
        mine, other = "m" * 32, "o" * 32
        for i in range(7):
            await log.record(StatusEvent("received", "q", mine if i % 2 else other, rc=i))
        await log.record(StatusEvent("paused", "q", "", by="cli"))
        rows = await log.timeline("q", mine, chunk=2)
        assert [e.rc for _, e in rows] == [1, 3, 5]
        assert [eid for eid, _ in rows] == sorted(eid for eid, _ in rows)
        (queue_event,) = await log.timeline("q", "", chunk=3)
        assert (queue_event[1].status, queue_event[1].by) == ("paused", "cli")
        assert await redis_client.exists(status_key(Keys.of(ns, "q"), "")) == 0  # none for ""
    finally:
        await redis_client.aclose()


def test_cli_actions_leave_events_saying_who_and_where(redis_url, ns, queues, capsys, monkeypatch):
    """Through the "rsmq_core.actions" entry point realtime registers (rsmq_core itself knows
    nothing of events); a recorder that fails leaves the action done and says so."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    by = f"cli {getpass.getuser()}@{socket.gethostname()}"
    mid = queues.send_message("q", "x", delay=600)
    gone = queues.send_message("q", "y")
    cli = ["--url", redis_url, "--ns", ns]
    for argv in (
        ["retry", "q", mid],
        ["delete", "q", gone, "n" * 32],
        ["pause", "q"],
        ["set", "q", "--vt", "9"],
        ["purge", "q"],
    ):
        assert cli_main([*cli, *argv]) == 0
    assert capsys.readouterr().err == ""

    async def read() -> tuple[list[tuple[str, StatusEvent]], list[tuple[str, StatusEvent]]]:
        client = connect(redis_url)
        try:
            log = EventLog(client, ns)
            return await log.timeline("q", mid), await log.timeline("q", "")
        finally:
            await client.aclose()

    message, queue = asyncio.run(read())
    assert [(e.status, e.by) for _, e in message] == [("made visible", by)]
    # The CLI reads them back too: a message's, and the queue's own.
    assert cli_main([*cli, "timeline", "q", gone]) == 0
    assert [(e["status"], e["by"]) for e in json.loads(capsys.readouterr().out)] == [
        ("deleted", by)
    ]
    assert cli_main([*cli, "timeline", "q", "n" * 32]) == 0
    assert json.loads(capsys.readouterr().out) == []  # not there: nothing was deleted
    assert cli_main([*cli, "timeline", "q"]) == 0
    assert [e["status"] for e in json.loads(capsys.readouterr().out)] == [
        "paused",
        "changed",
        "purged",
    ]
    assert [(e.status, e.detail) for _, e in queue] == [
        ("paused", None),
        ("changed", "vt=9"),
        ("purged", "1 message(s)"),
    ]
    stream = queues.keys("q").events
    queues.redis.delete(stream)
    queues.redis.set(stream, "not a stream")
    assert cli_main([*cli, "resume", "q"]) == 0
    out, err = capsys.readouterr()
    assert out == "true\n" and not queues.is_paused("q")
    assert err.startswith("rsmq: done, but events could not record it: WRONGTYPE")
    queues.redis.delete(stream)


def test_cli_timeline_refuses_what_it_cannot_read(redis_url, ns, queues, capsys, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    cli = ["--url", redis_url, "--ns", ns, "timeline"]
    assert cli_main([*cli, "nope", "n" * 32]) == 1
    assert capsys.readouterr().err == "rsmq: queueNotFound: Queue not found\n"
    assert cli_main([*cli, "q", "bad-id"]) == 1
    assert capsys.readouterr().err.startswith("rsmq: invalidFormat: Invalid id format")
    # Without a package that records events, there is nothing to read: a usage error.
    monkeypatch.setattr(cli_module, "READERS_GROUP", "no such group")
    assert cli_main([*cli, "q"]) == 2
    assert capsys.readouterr().err == (
        "rsmq: no package that records events is installed (rsmq-realtime's realtime)\n"
    )
