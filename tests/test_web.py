"""The web app in-process (Starlette's TestClient): pages, REST API, websocket."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from support.workers import wait_for
from web.live import MAX_QUEUES

ID = "a" * 32


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def refused(response: Any, status: int, error: str, text: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert text in body["message"]


def test_index_page_sets_csrf_and_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200
    token = page.cookies.get("csrftoken")
    assert token and f'content="{token}"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    # The random token may spell "cdn" itself (one CI run in some thousands): not a CDN.
    assert "cdn" not in page.text.replace(token, "").lower()
    assert client.get("/static/app.js").status_code == 200
    icon = client.get("/favicon.ico")  # asked for by every browser: never a 404
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"


def test_submit_needs_the_csrf_token(client, r, ns):
    client.get("/")
    token = client.cookies.get("csrftoken")
    refused(client.post("/submit", json={"message": "x"}), 403, "csrf")
    refused(
        client.post("/submit", json={"message": "x"}, headers={"x-csrf-token": "bad"}), 403, "csrf"
    )
    sent = client.post("/submit", json={"message": "hello"}, headers={"x-csrf-token": token})
    assert sent.status_code == 202
    mid = sent.json()["id"]
    assert r.hget(f"{ns}:jobs:Q", mid) == "hello"
    csrf = {"x-csrf-token": token}
    refused(client.post("/submit", json={"message": 5}, headers=csrf), 400, "messageNotString")
    refused(
        client.post("/submit", json={"message": "x" * 70_000}, headers=csrf), 413, "messageTooLong"
    )
    raw = {**csrf, "content-type": "application/json"}
    refused(client.post("/submit", content=b"{", headers=raw), 400, "invalidJson")


def test_an_empty_message_is_refused_and_too_long_says_the_limit(client, r, ns):
    client.get("/")
    csrf = {"x-csrf-token": client.cookies.get("csrftoken")}
    before = r.zcard(f"{ns}:jobs")
    refused(
        client.post("/submit", json={"message": ""}, headers=csrf),
        400,
        "emptyMessage",
        "the message is empty",
    )
    refused(client.post("/submit", json={}, headers=csrf), 400, "emptyMessage")
    refused(client.post("/api/queues/jobs/messages", json={"message": ""}), 400, "emptyMessage")
    batch = {"messages": ["a", {"message": ""}]}
    refused(
        client.post("/api/queues/jobs/messages", json=batch),
        400,
        "emptyMessage",
        "messages[1] is empty",
    )
    assert r.zcard(f"{ns}:jobs") == before  # nothing of a refused batch was stored
    client.patch("/api/queues/jobs", json={"maxsize": 1024})
    for answer in (
        client.post("/submit", json={"message": "é" * 600}, headers=csrf),
        client.post("/api/queues/jobs/messages", json={"message": "x" * 1025}),
    ):
        refused(answer, 413, "messageTooLong")
        assert answer.json()["message"] == "Message too long"  # RSMQ's text, byte for byte
        assert "at most 1024 bytes" in answer.json()["detail"]
    batch = {"messages": ["a", "x" * 2000]}
    detail = client.post("/api/queues/jobs/messages", json=batch).json()["detail"]
    assert (
        detail == "at index 1 of the batch: this queue takes messages of at most 1024 bytes (UTF-8)"
    )


def test_queue_endpoints(client, r, ns):
    created = client.post("/api/queues", json={"qname": "q", "vt": 5})
    assert created.status_code == 201
    assert created.json()["vt"] == 5
    refused(client.post("/api/queues", json={"qname": "q"}), 409, "queueExists", "Queue exists")
    assert "q" in client.get("/api/queues").json()["queues"]
    assert client.get("/api/queues/q").json()["vt"] == 5
    assert client.patch("/api/queues/q", json={"delay": 2}).json()["delay"] == 2
    refused(client.patch("/api/queues/q", json={}), 400, "noAttributeSupplied")
    assert client.delete("/api/queues/q").status_code == 204
    refused(client.get("/api/queues/q"), 404, "queueNotFound", "Queue not found")


def test_message_endpoints(client, r, ns):
    client.post("/api/queues", json={"qname": "q", "vt": 60})
    one = client.post("/api/queues/q/messages", json={"message": "a"})
    assert one.status_code == 202
    batch = client.post("/api/queues/q/messages", json={"messages": ["b", "c"]})
    assert len(batch.json()["ids"]) == 2
    got = client.post("/api/queues/q/receive", json={}).json()["message"]
    assert got["message"] == "a" and got["rc"] == 1
    more = client.post("/api/queues/q/receive", json={"count": 5, "vt": 0}).json()["messages"]
    assert [m["message"] for m in more] == ["b", "c"]
    popped = client.post("/api/queues/q/pop").json()["message"]
    assert popped["message"] == "b"
    assert client.post("/api/queues/q/pop").json()["message"]["message"] == "c"
    assert client.post("/api/queues/q/pop").json()["message"] is None
    mid = got["id"]
    vis = client.post(f"/api/queues/q/messages/{mid}/visibility", json={"vt": 0})
    assert vis.json() == {"changed": True}
    fenced = client.request("DELETE", f"/api/queues/q/messages/{mid}", json={"rc": 7})
    assert fenced.json() == {"deleted": False}
    assert client.delete(f"/api/queues/q/messages/{mid}").json() == {"deleted": True}
    assert r.zcard(f"{ns}:q") == 0


def test_redrive_and_status(client, r, ns):
    client.post("/api/queues", json={"qname": "q"})
    client.post("/api/queues", json={"qname": "q-dead"})
    mid = client.post("/api/queues/q-dead/messages", json={"message": "x"}).json()["id"]
    assert client.post("/api/queues/q-dead/redrive", json={"to": "q"}).json() == {"moved": 1}
    refused(client.post("/api/queues/q-dead/redrive", json={}), 400, "missingParameter")
    # The send recorded "queued" for the message: its status is readable.
    status = client.get(f"/api/queues/q-dead/messages/{mid}/status")
    assert status.json()["status"] == "queued"
    refused(client.get(f"/api/queues/q/messages/{ID}/status"), 404, "statusNotFound")
    refused(client.get(f"/api/queues/nope/messages/{ID}/status"), 404, "queueNotFound")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("post", "/api/queues", {"qname": "a b"}, 400, "invalidFormat"),
        ("post", "/api/queues", {}, 400, "missingParameter"),
        ("post", "/api/queues", {"qname": "q", "vt": "3"}, 400, "invalidValue"),
        ("post", "/api/queues", {"qname": "q", "colour": 1}, 400, "unknownField"),
        ("post", "/api/queues/jobs/messages", {"message": 5}, 400, "messageNotString"),
        ("post", "/api/queues/jobs/messages", {}, 400, "missingParameter"),
        (
            "post",
            "/api/queues/jobs/messages",
            {"message": "x", "messages": []},
            400,
            "missingParameter",
        ),
        ("post", "/api/queues/jobs/messages", {"message": "x" * 70000}, 413, "messageTooLong"),
        ("post", "/api/queues/jobs/messages", {"message": "x", "delay": -1}, 400, "invalidValue"),
        ("post", "/api/queues/nope/messages", {"message": "x"}, 404, "queueNotFound"),
        ("post", "/api/queues/jobs/receive", {"count": 0}, 400, "invalidValue"),
        ("post", "/api/queues/jobs/receive", {"vt": []}, 400, "invalidValue"),
        ("post", f"/api/queues/jobs/messages/{ID}/visibility", {}, 400, "missingParameter"),
        ("post", "/api/queues/jobs/messages/short/visibility", {"vt": 1}, 400, "invalidFormat"),
        ("delete", "/api/queues/jobs/messages/short", None, 400, "invalidFormat"),
        ("post", "/api/queues/jobs/receive", {"vt": None}, 400, "invalidValue"),
        ("post", "/api/queues/jobs/messages", {"message": None}, 400, "invalidValue"),
        ("patch", "/api/queues/jobs", {"maxsize": None}, 400, "invalidValue"),
        ("patch", "/api/queues/jobs", {"maxsize": 5}, 400, "invalidValue"),
    ],
)
def test_bad_input_is_a_clear_json_error(client, method, path, body, status, error):
    response = client.request(method.upper(), path, json=body)
    refused(response, status, error)


def test_bad_bodies(client):
    raw = {"headers": {"content-type": "application/json"}}
    refused(client.post("/api/queues", content=b"{nope", **raw), 400, "invalidJson")
    refused(client.post("/api/queues", content=b"[1, 2]", **raw), 400, "invalidJson")
    deep = b"[" * 100_000 + b"]" * 100_000
    refused(client.post("/api/queues", content=deep, **raw), 400, "invalidJson")
    big = b'{"qname": "' + b"x" * 300_000 + b'"}'
    refused(client.post("/api/queues", content=big, **raw), 413, "bodyTooLarge")


def test_api_token_guards_the_api(make_client):
    client = make_client(api_token="s3cret-s3cret-s3cret")
    refused(client.post("/api/queues", json={"qname": "q"}), 401, "unauthorized", "Bearer")
    wrong = {"authorization": "Bearer nope"}
    refused(client.post("/api/queues", json={"qname": "q"}, headers=wrong), 401, "unauthorized")
    good = {"authorization": "Bearer s3cret-s3cret-s3cret"}
    assert client.post("/api/queues", json={"qname": "q"}, headers=good).status_code == 201
    assert client.get("/api/queues/q", headers=good).status_code == 200
    refused(client.get("/api/queues/q"), 401, "unauthorized")


def test_health_exercises_redis(client, make_client):
    assert client.get("/api/health").json()["ok"] is True
    down = make_client(redis_url="redis://:hunter2secret@127.0.0.1:1/0")
    answer = down.get("/api/health")
    refused(answer, 503, "unhealthy", "ConnectionError")
    assert "hunter2secret" not in answer.text


def test_openapi_document(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/api/queues/{qname}/messages" in doc["paths"]


# Websocket -----------------------------------------------------------------------------------

ORIGIN = {"origin": "http://testserver"}


def next_frame(ws: Any, kind: str) -> dict[str, Any]:
    """The next frame of a kind, skipping keep-alive pings."""
    while True:
        frame: dict[str, Any] = ws.receive_json()
        if frame["type"] == kind:
            return frame
        assert frame["type"] == "ping", frame


def test_websocket_refuses_a_foreign_origin(client):
    with pytest.raises(WebSocketDenialResponse) as exc:
        with client.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws:
            ws.receive_json()
    refusal = exc.value
    assert refusal.status_code == 403
    assert refusal.json() == {
        "error": "foreignOrigin",
        "message": "Origin 'http://evil.example' may not open the websocket",
    }
    assert "default-src" in refusal.headers["content-security-policy"]


def test_websocket_pushes_events_of_a_queue_and_resumes(client):
    first = client.post("/api/queues/jobs/messages", json={"message": "1"}).json()["id"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs"})
        assert next_frame(ws, "subscribed")["queue"] == "jobs"
        second = client.post("/api/queues/jobs/messages", json={"message": "2"}).json()["id"]
        event = next_frame(ws, "event")
        assert (event["event"]["id"], event["event"]["status"]) == (second, "queued")
        mark = event["eid"]
    # Offline meanwhile; the reconnecting client names the last event it saw.
    third = client.post("/api/queues/jobs/messages", json={"message": "3"}).json()["id"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "after": mark})
        next_frame(ws, "subscribed")
        replayed = next_frame(ws, "event")
        assert replayed["event"]["id"] == third
    assert first != second


def test_a_last_status_comes_with_the_mark_to_resume_it_from(client):
    """The example page, reloaded, resumes an id it knew only by its last status."""
    mid = client.post("/api/queues/jobs/messages", json={"message": "x"}).json()["id"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "ids": [mid]})
        next_frame(ws, "subscribed")
        status = next_frame(ws, "event")
    assert (status["eid"], status["event"]["status"]) == (None, "queued")
    client.post("/api/queues/jobs/messages", json={"message": "other"})
    client.post("/api/queues/jobs/redrive", json={"to": "jobs", "ids": [mid]})  # while away
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "ids": [mid], "after": status["mark"]})
        next_frame(ws, "subscribed")
        replayed = next_frame(ws, "event")
    assert (replayed["event"]["id"], replayed["event"]["status"]) == (mid, "redriven")


def test_websocket_events_name_an_actions_origin_without_the_operators_address(client):
    """A visitor following its own message by ticket learns that the dashboard deleted it,
    not from which address; the timeline API, behind the login, says it all."""
    mid = client.post("/api/queues/jobs/messages", json={"message": "x"}).json()["id"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "ids": [mid]})
        next_frame(ws, "subscribed")
        assert next_frame(ws, "event")["event"]["status"] == "queued"
        assert client.delete(f"/api/queues/jobs/messages/{mid}").json() == {"deleted": True}
        live = next_frame(ws, "event")["event"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "ids": [mid]})  # its last status
        next_frame(ws, "subscribed")
        last = next_frame(ws, "event")["event"]
    assert (live["status"], live["by"]) == (last["status"], last["by"]) == ("deleted", "api")
    (kept,) = client.get(f"/api/queues/jobs/messages/{mid}/timeline").json()["events"][-1:]
    assert kept["by"] == "api testclient"


def test_websocket_ids_get_their_last_status(client):
    mid = client.post("/api/queues/jobs/messages", json={"message": "x"}).json()["id"]
    other = client.post("/api/queues/jobs/messages", json={"message": "y"}).json()["id"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "ids": [mid]})
        next_frame(ws, "subscribed")
        assert next_frame(ws, "event")["event"]["id"] == mid
        client.post("/api/queues/jobs/messages", json={"message": "z"})  # not asked for
        ws.send_json({"type": "ping"})
        assert next_frame(ws, "pong") == {"type": "pong"}
    assert other != mid


def subscribe_after(eid: str) -> str:
    return json.dumps({"type": "subscribe", "queue": "jobs", "after": eid})


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("not json", "invalidJson"),
        ("[1]", "invalidJson"),
        (json.dumps({"type": "dance"}), "unknownType"),
        (json.dumps({"type": "subscribe", "queue": "a b"}), "invalidFormat"),
        (json.dumps({"type": "subscribe", "queue": "jobs", "ids": "x"}), "invalidFormat"),
        (json.dumps({"type": "subscribe", "queue": "jobs", "after": "later"}), "invalidFormat"),
        # Past Redis's 64-bit stream ids: Redis refused the read, which broke the connection.
        (subscribe_after("9" * 20 + "-0"), "invalidFormat"),
        (subscribe_after(f"0-{2**64}"), "invalidFormat"),
        (subscribe_after(f"{2**64 - 1}-{2**64 - 1}"), "invalidFormat"),  # nothing comes after
        ("x" * 70_000, "frameTooLarge"),
        ("é" * 40_000, "frameTooLarge"),  # 40 000 characters, but 80 000 bytes
        ("[" * 30_000 + "]" * 30_000, "invalidJson"),
    ],
)
def test_websocket_bad_frames_get_an_error_and_the_connection_stays(client, frame, error):
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_text(frame)
        assert next_frame(ws, "error")["error"] == error
        ws.send_bytes(b"\x00\x01")
        assert next_frame(ws, "error")["error"] == "badFrame"
        ws.send_json({"type": "ping"})
        assert next_frame(ws, "pong")


def test_a_websocket_follows_a_bounded_number_of_queues_and_lets_them_go(client):
    hub = client.app.state.hub
    with (
        client.websocket_connect("/ws", headers=ORIGIN) as ws,
        client.websocket_connect("/ws", headers=ORIGIN) as other,
    ):
        for i in range(MAX_QUEUES):
            ws.send_json({"type": "subscribe", "queue": f"q{i}"})
            assert next_frame(ws, "subscribed")["queue"] == f"q{i}"
        ws.send_json({"type": "subscribe", "queue": "q0"})  # again: not one more
        assert next_frame(ws, "subscribed")["queue"] == "q0"
        ws.send_json({"type": "subscribe", "queue": "one-too-many"})
        refused = next_frame(ws, "error")
        assert refused["error"] == "tooManyQueues" and str(MAX_QUEUES) in refused["message"]
        other.send_json({"type": "subscribe", "queue": "q1"})
        next_frame(other, "subscribed")
        assert hub.queues == MAX_QUEUES

        ws.send_json({"type": "unsubscribe", "queue": "q0"})
        ws.send_json({"type": "subscribe", "queue": "one-too-many"})
        assert next_frame(ws, "subscribed")["queue"] == "one-too-many"
        assert hub.queues == MAX_QUEUES  # q0 is no longer read; one-too-many is
        ws.close()
        # Only q1 is still followed, by the other connection, and still delivered to it.
        wait_for(lambda: hub.queues == 1, what="the closed connection's queues let go")
        client.post("/api/queues", json={"qname": "q1"})
        client.post("/api/queues/q1/messages", json={"message": "still here"})
        assert next_frame(other, "event")["event"]["status"] == "queued"
    wait_for(lambda: hub.queues == 0, what="every queue let go")


def test_a_slow_websocket_is_closed_not_buffered(make_client):
    client = make_client(ws_buffer=5)
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs"})
        client.post("/api/queues/jobs/messages", json={"messages": ["m"] * 200})
        with pytest.raises(WebSocketDisconnect) as exc:
            while True:
                ws.receive_json()
    assert exc.value.code == 1013


def test_dashboard_page_and_stats_over_the_websocket(client):
    page = client.get("/dashboard")
    assert page.status_code == 200 and "Live workers" in page.text
    client.post("/api/queues", json={"qname": "jobs-dead"})
    client.post("/api/queues/jobs/messages", json={"messages": ["a", "b"]})
    client.post("/api/queues/jobs-dead/messages", json={"message": "x"})
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "watch"})
        first = next_frame(ws, "stats")
        jobs = first["queues"]["jobs"]
        assert (jobs["msgs"], jobs["totalsent"], jobs["dead"]) == (2, 2, 1)
        assert jobs["send_rate"] is None  # no snapshot before the first
        client.post("/api/queues/jobs/messages", json={"message": "c"})
        second = next_frame(ws, "stats")
        assert second["queues"]["jobs"]["totalsent"] == 3
        assert second["queues"]["jobs"]["send_rate"] > 0
        assert second["workers"] == []


def test_live_events_during_a_replay_are_held_then_deduplicated():
    from realtime import StatusEvent
    from web.live import Client, event_frame

    client = Client(ws=None, buffer=100)  # type: ignore[arg-type]
    client.wants["q"] = None
    ev = {i: StatusEvent("queued", "q", str(i) * 32) for i in range(1, 6)}
    client.replaying["q"] = []
    client.offer("q", "5-0", ev[5], event_frame("5-0", ev[5]))  # live, during the replay
    for eid in ("2-0", "3-0", "4-0"):
        client.push("q", eid, ev[int(eid[0])])  # the replay
    for eid, event, _ in client.replaying.pop("q"):
        client.push("q", eid, event)
    client.offer("q", "4-0", ev[4], event_frame("4-0", ev[4]))  # a late duplicate
    sent = []
    while not client.outbox.empty():
        sent.append(json.loads(client.outbox.get_nowait())["eid"])
    assert sent == ["2-0", "3-0", "4-0", "5-0"]


def ids_until_one_more_is_sent(client: TestClient, ws: Any, r: Any, channel: str) -> list[str]:
    """The ids of the events a websocket gets up to that of a message sent once Redis
    confirms the channel: what came before it is all a lost event could have been in."""
    wait_for(
        lambda: r.execute_command("PUBSUB", "NUMSUB", channel)[1] == 1,
        what="the channel to be heard",
    )
    last = client.post("/api/queues/jobs/messages", json={"message": "last"}).json()["id"]
    got = [next_frame(ws, "event")["event"]["id"]]
    while got[-1] != last:
        got.append(next_frame(ws, "event")["event"]["id"])
    return got


def test_an_event_right_after_subscribed_arrives_however_late_redis_answers(client, r):
    """The answer "subscribed" promises every later event. Here the mark's read and the channel's
    SUBSCRIBE both wait until the client has sent (or 2 s): sent before the mark was read,
    "subscribed" let the client's "queued" fall between the live feed and the catch-up."""
    hub = client.app.state.hub
    sent = threading.Event()

    def after_the_send(call: Any) -> Any:
        async def gated(*args: Any, **kwargs: Any) -> Any:
            await asyncio.to_thread(sent.wait, 2)
            return await call(*args, **kwargs)

        return gated

    hub._events.snapshot = after_the_send(hub._events.snapshot)
    hub._subscriber._batches = after_the_send(hub._subscriber._batches)
    channel = hub._events.channel("jobs")
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs"})
        next_frame(ws, "subscribed")
        first = client.post("/api/queues/jobs/messages", json={"message": "1"}).json()["id"]
        sent.set()
        got = ids_until_one_more_is_sent(client, ws, r, channel)
    assert got[:-1] == [first]


def test_an_event_right_after_a_subscribe_with_after_arrives_however_late_redis_answers(client, r):
    """As for a plain subscribe: "subscribed" promises every later event. With ``after`` and
    nothing in the stream after it, the replay set no mark; when Redis then confirmed the
    channel, the catch-up found no mark and skipped the client: the client's own "queued",
    sent after "subscribed" and before the confirmation, was in neither feed."""
    hub = client.app.state.hub
    sent = threading.Event()
    batches = hub._subscriber._batches

    async def after_the_send(*args: Any, **kwargs: Any) -> Any:
        await asyncio.to_thread(sent.wait, 2)
        return await batches(*args, **kwargs)

    hub._subscriber._batches = after_the_send
    channel = hub._events.channel("jobs")
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "after": "0-0"})
        next_frame(ws, "subscribed")
        first = client.post("/api/queues/jobs/messages", json={"message": "1"}).json()["id"]
        sent.set()
        got = ids_until_one_more_is_sent(client, ws, r, channel)
    assert got[:-1] == [first]


def test_a_catch_up_asked_for_while_one_runs_reads_once_more(client, r):
    """The channel confirmed again while a client's replay runs: the replay may have read
    its last rows already, so it reads once more before it ends."""
    from realtime import StatusEvent
    from realtime.events import MAXLEN, TTL, _write_args

    hub = client.app.state.hub
    ids = client.post("/api/queues/jobs/messages", json={"messages": ["m"] * 3}).json()["ids"]
    history, reads = hub._events.history, []

    async def history_then_an_unheard_event(queue: str, **kwargs: Any) -> Any:
        rows = await history(queue, **kwargs)
        reads.append(len(rows))
        if len(reads) == 1:
            # Recorded after the replay's read and published where nobody listens: an
            # event lost by pub/sub, which the catch-up below must find in the stream.
            event = StatusEvent("queued", queue, ID)
            keys, args = _write_args(hub._events._keys(queue), [event], MAXLEN, TTL)
            await hub._events._script(keys=keys, args=["nowhere", *args[1:]])
            hub._hear(queue, None)
        return rows

    hub._events.history = history_then_an_unheard_event
    channel = hub._events.channel("jobs")
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "after": "0-0"})
        next_frame(ws, "subscribed")
        got = ids_until_one_more_is_sent(client, ws, r, channel)
    assert got[:-1] == [*ids, ID] and reads[0] == 3 and len(reads) >= 2


def test_live_events_held_past_the_buffer_cut_the_client():
    """A replay to a client that reads slowly may last long; what it holds back meanwhile
    is bounded as its outbox is, not by how busy the queue is."""
    from realtime import StatusEvent
    from web.live import CLOSE, Client, TooSlow, event_frame

    client = Client(ws=None, buffer=3)  # type: ignore[arg-type]
    client.wants["q"] = None
    client.replaying["q"] = []
    event = StatusEvent("queued", "q", ID)
    for i in range(3):
        client.offer("q", f"{i}-0", event, event_frame(f"{i}-0", event))
    with pytest.raises(TooSlow):
        client.offer("q", "3-0", event, event_frame("3-0", event))
    assert client.replaying == {} and client.outbox.get_nowait() == CLOSE


def test_a_batching_websocket_message_stays_small_with_big_results(client, r, ns):
    """/ws?batch=1 sends what piled up as one message, up to MAX_BATCH_BYTES (one frame past
    it at most): thirty "done" events with 8 KB results were one message of 250 KB."""
    from realtime import StatusEvent
    from realtime.events import _SCRIPT, MAXLEN, TTL, _write_args
    from rsmq_core import RSMQ
    from web.live import MAX_BATCH_BYTES

    done = [StatusEvent("done", "jobs", f"{i:032d}", result="r" * 8000) for i in range(30)]
    keys, args = _write_args(RSMQ(r, ns=ns).keys("jobs"), done, MAXLEN, TTL)
    with client.websocket_connect("/ws?batch=1", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs"})
        assert [f["type"] for f in ws.receive_json()] == ["subscribed"]
        r.register_script(_SCRIPT)(keys=keys, args=args)  # one burst
        sizes, got = [], []
        while len(got) < 30:
            text = ws.receive_text()
            sizes.append(len(text))
            got += [f["event"]["id"] for f in json.loads(text) if f["type"] == "event"]
    assert got == [e.id for e in done]
    assert len(sizes) > 1 and max(sizes) < MAX_BATCH_BYTES + 9000, sizes


def test_the_batch_parameter_takes_yes_and_no_and_refuses_the_rest(client):
    """/ws?batch=true batches as batch=1 does (it meant "unbatched" once, silently); a value
    that is neither is refused with a reason naming it, not taken for no."""
    for query, batched in [("?batch=true", True), ("?batch=ON", True), ("?batch=0", False)]:
        with client.websocket_connect("/ws" + query, headers=ORIGIN) as ws:
            ws.send_json({"type": "subscribe", "queue": "jobs"})
            reply = ws.receive_json()
            assert isinstance(reply, list) is batched, query
    with client.websocket_connect("/ws?batch=maybe", headers=ORIGIN) as ws:
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
    assert exc.value.code == 1008 and "batch" in exc.value.reason and "maybe" in exc.value.reason


def test_a_replay_longer_than_the_buffer_gets_through(make_client):
    client = make_client(ws_buffer=50)
    ids = client.post("/api/queues/jobs/messages", json={"messages": ["m"] * 300}).json()["ids"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "after": "0-0"})
        next_frame(ws, "subscribed")
        got = [next_frame(ws, "event")["event"]["id"] for _ in range(300)]
    assert got == ids  # 300 queued events through a 50-frame buffer, in order


def test_queued_is_published_before_the_workers_are_woken(client, r, ns):
    # A worker that hears of a message can record "received" at once; had the send woken it
    # before "queued" was recorded, the message's history could start with "received".
    sub = r.pubsub()
    sub.subscribe(f"{ns}:rt:jobs", f"{ns}:rt:jobs:events")
    for _ in range(2):
        assert sub.get_message(timeout=5)["type"] == "subscribe"
    for body in ({"message": "one"}, {"messages": ["two", "three"]}):
        assert client.post("/api/queues/jobs/messages", json=body).status_code == 202
        heard = []
        while len(heard) < 1 + len(body.get("messages", [None])):
            m = sub.get_message(timeout=5)
            assert m is not None, heard
            heard.append(m["channel"].rsplit(":", 1)[1])
        assert heard[-1] == "jobs", heard  # the notification, after every "queued" event
        assert set(heard[:-1]) == {"events"}
    sub.close()


def test_a_send_records_queued_and_wakes_the_workers_in_its_own_call(client, r, ns):
    """The POST's three round trips (send, "queued", wake-up) are one: the send script
    records "queued" of each message it stores, then publishes the wake-up."""
    sender, events = client.app.state.sender, client.app.state.events
    calls: list[str] = []

    def counted(name: str, script: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return await script(*args, **kwargs)

        return call

    sender._scripts = {name: counted(name, s) for name, s in sender._scripts.items()}
    events._script = counted("emit", events._script)
    ids = client.post("/api/queues/jobs/messages", json={"messages": ["a", "b"]}).json()["ids"]
    one = client.post("/api/queues/jobs/messages", json={"message": "c"}).json()["id"]
    assert calls == ["send", "send"]
    stream = r.xrange(f"{ns}:jobs:events")
    assert [json.loads(e["e"])["id"] for _, e in stream[-3:]] == [*ids, one]
    assert json.loads(r.get(f"{ns}:jobs:status:{one}"))["status"] == "queued"


def test_live_events_held_by_a_replay_keep_their_order_and_all_arrive(redis_url, ns):
    """A replay ends by sending what it held back, waiting for room in the outbox. A live
    event that came meanwhile went straight out, ahead of those still held, and moved the
    client's place past them: they were then dropped as already sent (lost, and out of order)."""
    import redis.asyncio as aioredis

    from realtime import EventLog, StatusEvent
    from web.live import Client, Hub, event_frame

    async def until(predicate: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(5):
            while not predicate():
                await asyncio.sleep(0.001)

    async def run() -> tuple[list[str], list[str]]:
        redis = aioredis.from_url(redis_url)
        events = EventLog(redis, ns)
        first = await events.record(StatusEvent("queued", "q", ID))
        ms = int(first.split("-")[0])
        live = [f"{ms + 1000}-{i}" for i in range(3)]
        client = Client(ws=None, buffer=2)  # type: ignore[arg-type]
        client.wants["q"] = None
        client.put("filler")
        client.put("filler")
        hub: Any = type("H", (), {})()  # what _replay uses of a Hub: real Redis reads
        hub._reads, hub._events = asyncio.Semaphore(1), events

        def offer(eid: str) -> None:
            event = StatusEvent("received", "q", ID)
            client.offer("q", eid, event, event_frame(eid, event))

        replay = asyncio.create_task(Hub._replay(hub, client, "q", "0-0"))
        # The replay waits for room for the stream's event; two live ones are held.
        await until(lambda: client.last_eid.get("q") == first, "the replay to wait")
        offer(live[0])
        offer(live[1])
        client.outbox.get_nowait()  # the sender takes one: the stream's event goes in
        await until(lambda: client.last_eid.get("q") == live[0], "the held ones to go out")
        # The sender takes one more, and in the same turn a live event comes (as _hear runs).
        client.outbox.get_nowait()
        offer(live[2])
        sent: list[str] = []
        while not (replay.done() and client.outbox.empty()):
            if not client.outbox.empty():
                sent.append(json.loads(client.outbox.get_nowait())["eid"])
            await asyncio.sleep(0.001)
        await replay
        await redis.aclose()
        return [first, *live], sent

    expected, sent = asyncio.run(run())
    assert sent == expected


def test_a_subscribe_naming_more_ids_than_the_buffer_gets_all_their_statuses(make_client):
    """WS_MAX_IDS (1000) is more than WS_BUFFER (500): the statuses of the ids a subscribe
    names were put in the outbox all at once, so a subscribe naming more ids than the buffer
    holds, all with a status, cut the client (1013) every time it tried."""
    client = make_client(ws_buffer=5)
    ids = client.post("/api/queues/jobs/messages", json={"messages": ["m"] * 20}).json()["ids"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "ids": ids})
        next_frame(ws, "subscribed")
        got = [next_frame(ws, "event")["event"]["id"] for _ in ids]
    assert sorted(got) == sorted(ids)


def test_a_send_whose_queued_event_cannot_be_written_is_still_stored_and_announced(client, r, ns):
    """The send script writes "queued" after the message: a stream key taken by another kind
    of value must not make a stored message's POST an error (a resend would duplicate it)."""
    r.set(f"{ns}:jobs:events", "not a stream")
    sub = r.pubsub()
    sub.subscribe(f"{ns}:rt:jobs")
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    reply = client.post("/api/queues/jobs/messages", json={"message": "x"})
    assert reply.status_code == 202, reply.text
    assert r.zscore(f"{ns}:jobs", reply.json()["id"]) is not None
    woken = sub.get_message(timeout=5)
    sub.close()
    assert woken is not None and woken["channel"] == f"{ns}:rt:jobs"
