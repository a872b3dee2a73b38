"""Attacks on the web app's door (issue 10: items 5, 8, 9, 10, 12), each as a test that the
attack is refused and changed nothing: CSRF from another origin, open reads with API_TOKEN set,
token parsing, a client-chosen CSRF cookie, the dashboard's silent queue limit."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from rsmq_core import AsyncRSMQ
from support.web import ROOT, WebProcess
from tests.test_web import next_frame
from web.app import create_app
from web.openapi import openapi
from web.settings import SettingError, Settings

TOKEN = "t0ken-t0ken-t0ken-t0ken"
BEARER = {"authorization": f"Bearer {TOKEN}"}
SAME = {"origin": "http://testserver"}
EVIL = {"origin": "https://evil.example"}
ID = "a" * 32


def refused(response: Any, status: int, error: str, text: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert text in body["message"], body


@pytest.fixture
def open_app(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def closed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_token=TOKEN)


def csrf_of(client: TestClient, page: str = "/") -> str:
    text = client.get(page).text
    found = re.search(r'(?:content|value)="([^"]+\.[^"]+)"', text)
    assert found, text
    return found.group(1)


# Item 5: CSRF on the API ----------------------------------------------------------------------


def test_a_text_plain_body_is_refused_and_creates_nothing(open_app, queues):
    # What a no-cors fetch or a <form enctype="text/plain"> of another site can send.
    plain = {"content-type": "text/plain"}
    refused(
        open_app.post("/api/queues", content=b'{"qname": "evil"}', headers=plain),
        415,
        "unsupportedMediaType",
        "Content-Type: application/json",
    )
    assert "evil" not in queues.list_queues()
    queues.send_message("jobs", "hidden?")
    receive = b'{"count": 1000, "vt": 9999999}'
    refused(
        open_app.post("/api/queues/jobs/receive", content=receive, headers=plain),
        415,
        "unsupportedMediaType",
    )
    form = {"content-type": "application/x-www-form-urlencoded"}
    refused(
        open_app.post("/api/queues/jobs/messages", content=b"message=x", headers=form),
        415,
        "unsupportedMediaType",
    )
    attrs = queues.get_queue_attributes("jobs")
    assert (attrs.msgs, attrs.totalrecv, attrs.totalsent) == (1, 0, 1)  # none hidden or sent
    # The page's own form too: text/plain is refused even with a good CSRF token.
    token = csrf_of(open_app)
    headers = {**plain, "x-csrf-token": token}
    answer = open_app.post("/submit", content=b'{"message": "x"}', headers=headers)
    refused(answer, 415, "unsupportedMediaType")
    assert queues.get_queue_attributes("jobs").totalsent == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/queues", {"qname": "evil"}),
        ("PATCH", "/api/queues/jobs", {"vt": 1}),
        ("DELETE", "/api/queues/jobs", None),
        ("POST", "/api/queues/jobs/messages", {"message": "x"}),
        ("POST", "/api/queues/jobs/receive", {"count": 1000, "vt": 9999999}),
        ("POST", "/api/queues/jobs/pop", None),
        ("DELETE", f"/api/queues/jobs/messages/{ID}", None),
    ],
)
@pytest.mark.parametrize("origin", ["https://evil.example", "null", "https://testserver"])
def test_a_foreign_origin_changes_nothing(open_app, queues, method, path, body, origin):
    # https://testserver: the same host by another scheme is another origin.
    queues.send_message("jobs", "keep me")
    before = queues.get_queue_attributes("jobs")
    answer = open_app.request(method, path, json=body, headers={"origin": origin})
    refused(answer, 403, "foreignOrigin", origin)
    after = queues.get_queue_attributes("jobs")
    assert (after.vt, after.msgs, after.totalsent, after.totalrecv) == (before.vt, 1, 1, 0)
    assert "evil" not in queues.list_queues()


def test_same_origin_no_origin_and_allowed_origins_pass(open_app, make_client, queues):
    assert open_app.post("/api/queues", json={"qname": "a"}, headers=SAME).status_code == 201
    assert open_app.post("/api/queues", json={"qname": "b"}).status_code == 201  # curl
    token = csrf_of(open_app)
    sent = open_app.post("/submit", json={"message": "x"}, headers={**SAME, "x-csrf-token": token})
    assert sent.status_code == 202
    foreign = {**EVIL, "x-csrf-token": token}
    refused(open_app.post("/submit", json={"message": "x"}, headers=foreign), 403, "foreignOrigin")
    partner = make_client(allowed_origins=("https://partner.example",))
    ok = partner.post(
        "/api/queues", json={"qname": "c"}, headers={"origin": "https://partner.example"}
    )
    assert ok.status_code == 201
    refused(partner.post("/api/queues", json={"qname": "d"}, headers=EVIL), 403, "foreignOrigin")
    assert {"a", "b", "c"} <= set(queues.list_queues()) and "d" not in queues.list_queues()


# Item 8: reads need auth when API_TOKEN is set ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/queues", "/api/queues/jobs", f"/api/queues/jobs/messages/{ID}/status", "/openapi.json"],
)
def test_every_read_needs_the_token(closed, path):
    refused(closed.get(path), 401, "unauthorized")
    assert closed.get(path, headers=BEARER).status_code in (200, 404)  # 404: no such status


def test_the_dashboard_needs_a_login_and_the_example_page_does_not(closed):
    assert closed.get("/").status_code == 200
    answer = closed.get("/dashboard", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/dashboard"


def test_health_is_bare_without_the_token(closed, make_client):
    assert closed.get("/api/health").json() == {"ok": True}
    assert closed.get("/api/health", headers=BEARER).json()["queue"] == "jobs"
    down = make_client(api_token=TOKEN, redis_url="redis://127.0.0.1:1/0")
    bare = down.get("/api/health")
    assert (bare.status_code, bare.json()) == (503, {"ok": False})
    refused(down.get("/api/health", headers=BEARER), 503, "unhealthy", "ConnectionError")


def log_in(client: TestClient, token: str = TOKEN) -> Any:
    csrf = csrf_of(client, "/login")
    return client.post(
        "/login?next=/dashboard",
        data={"csrf": csrf, "token": token},
        headers=SAME,
        follow_redirects=False,
    )


def session_cookie(answer: Any) -> str:
    found: list[str] = [
        h for h in answer.headers.get_list("set-cookie") if h.startswith("session=")
    ]
    assert len(found) == 1, answer.headers
    return found[0]


def test_login_sets_a_signed_session_cookie(closed):
    wrong = log_in(closed, "not-the-token-at-all")
    assert wrong.status_code == 401 and "Wrong token" in wrong.text
    assert "session" not in closed.cookies
    answer = log_in(closed)
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cookie = session_cookie(answer).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    assert closed.get("/dashboard").status_code == 200
    # The API takes the token only: a cookie would make it forgeable from other sites.
    refused(closed.get("/api/queues"), 401, "unauthorized")
    # Logging out ends it.
    csrf = csrf_of(closed, "/dashboard")
    out = closed.post("/logout", data={"csrf": csrf}, headers=SAME, follow_redirects=False)
    assert out.status_code == 303
    assert closed.get("/dashboard", follow_redirects=False).status_code == 303


def test_login_needs_the_csrf_token_and_a_local_next(closed):
    closed.get("/login")
    no_csrf = closed.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert no_csrf.status_code == 403 and "expired" in no_csrf.text
    refused(closed.post("/login", data={"token": TOKEN}, headers=EVIL), 403, "foreignOrigin")
    refused(closed.post("/login", json={"token": TOKEN}), 415, "unsupportedMediaType", "urlencoded")
    big = closed.post("/login", data={"token": "x" * 5000})
    refused(big, 413, "bodyTooLarge")
    csrf = csrf_of(closed, "/login")
    away = closed.post(
        "/login?next=//evil.example/x", data={"csrf": csrf, "token": TOKEN}, follow_redirects=False
    )
    assert away.headers["location"] == "/dashboard"


def test_the_cookies_are_secure_behind_https(redis_url, ns):
    app = create_app(
        Settings(redis_url=redis_url, ns=ns, api_token=TOKEN, allowed_hosts=("testserver",))
    )
    with TestClient(app, base_url="https://testserver") as client:
        assert "secure" in client.get("/").headers["set-cookie"].lower()
        csrf = csrf_of(client, "/login")
        form, origin = {"csrf": csrf, "token": TOKEN}, {"origin": "https://testserver"}
        answer = client.post("/login", data=form, headers=origin, follow_redirects=False)
        assert "secure" in session_cookie(answer).lower()


def test_behind_a_trusted_proxy_on_a_real_server_the_session_is_secure(redis_url, ns):
    web = WebProcess(redis_url, ns, API_TOKEN=TOKEN, FORWARDED_ALLOW_IPS="127.0.0.1")
    try:
        https = {"x-forwarded-proto": "https"}
        conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=5)
        conn.request("GET", "/login", headers=https)
        page = conn.getresponse()
        csrf_header = page.getheader("set-cookie") or ""
        assert "secure" in csrf_header.lower()
        csrf = re.search(r'value="([^"]+)"', page.read().decode())
        assert csrf
        cookie = csrf_header.split(";")[0]
        conn.request(
            "POST",
            "/login",
            body=f"csrf={csrf.group(1)}&token={TOKEN}",
            headers={
                **https,
                "cookie": cookie,
                "origin": f"https://127.0.0.1:{web.port}",
                "content-type": "application/x-www-form-urlencoded",
            },
        )
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 303
        session = [v for k, v in answer.getheaders() if k.lower() == "set-cookie"]
        assert any(v.startswith("session=") and "secure" in v.lower() for v in session), session
        conn.close()
    finally:
        web.stop()


def test_a_forged_or_altered_session_cookie_is_refused(closed):
    good = session_cookie(log_in(closed)).split(";")[0].removeprefix("session=")
    issued, _, mac = good.partition(".")
    for forged in (
        f"{int(issued) + 3600}.{mac}",
        f"{issued}.{mac[:-1]}{'B' if mac.endswith('A') else 'A'}",
        "1",
        "",
        f"{issued}.",
    ):
        closed.cookies.delete("session")
        closed.cookies.set("session", forged)
        assert closed.get("/dashboard", follow_redirects=False).status_code == 303, forged
    closed.cookies.delete("session")
    closed.cookies.set("session", good)
    assert closed.get("/dashboard").status_code == 200


def test_a_session_of_another_token_or_too_old_is_refused(make_client, closed):
    from web.auth import SESSION_AGE

    keys = closed.app.state.keys
    old = keys.new_session(now=__import__("time").time() - SESSION_AGE - 1)
    closed.cookies.set("session", old)
    assert closed.get("/dashboard", follow_redirects=False).status_code == 303
    other = make_client(api_token="another-token-another-token")
    other.cookies.set("session", keys.new_session())
    assert other.get("/dashboard", follow_redirects=False).status_code == 303


# Item 8: the websocket -----------------------------------------------------------------------


def submit(client: TestClient, message: str) -> dict[str, Any]:
    token = csrf_of(client)
    answer = client.post("/submit", json={"message": message}, headers={"x-csrf-token": token})
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_visitor_follows_only_the_ids_it_was_given(closed):
    mine, other = submit(closed, "mine"), submit(closed, "other")
    with closed.websocket_connect("/ws", headers=SAME) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs"})
        refused_frame = next_frame(ws, "error")
        assert (
            refused_frame["error"] == "unauthorized" and "whole queue" in refused_frame["message"]
        )
        ws.send_json({"type": "watch"})
        assert next_frame(ws, "error")["error"] == "unauthorized"
        # Another id's ticket, or none, does not open an id.
        for tickets in ([mine["ticket"]], [], None, ["x"]):
            ws.send_json(
                {"type": "subscribe", "queue": "jobs", "ids": [other["id"]], "tickets": tickets}
            )
            assert next_frame(ws, "error")["error"] == "unauthorized", tickets
        # A ticket is for its queue only.
        ws.send_json(
            {
                "type": "subscribe",
                "queue": "other",
                "ids": [mine["id"]],
                "tickets": [mine["ticket"]],
            }
        )
        assert next_frame(ws, "error")["error"] == "unauthorized"
        ws.send_json(
            {"type": "subscribe", "queue": "jobs", "ids": [mine["id"]], "tickets": [mine["ticket"]]}
        )
        assert next_frame(ws, "subscribed")["queue"] == "jobs"
        event = next_frame(ws, "event")["event"]
        assert (event["id"], event["status"]) == (mine["id"], "queued")


def test_a_logged_in_page_or_the_token_follows_whole_queues(closed):
    with closed.websocket_connect("/ws", headers={**SAME, **BEARER}) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs"})
        assert next_frame(ws, "subscribed")["queue"] == "jobs"
    log_in(closed)
    with closed.websocket_connect("/ws", headers=SAME) as ws:
        ws.send_json({"type": "watch"})
        assert "queues" in next_frame(ws, "stats")


# Item 9: token parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (TOKEN, 401),  # bare: no scheme
        (f"Token {TOKEN}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Bearer{TOKEN}", 401),
        (f"bearer {TOKEN}", 200),  # schemes are case-insensitive (RFC 7235)
        (f"BEARER  {TOKEN}", 200),
        (f"Bearer {TOKEN}", 200),
    ],
)
def test_the_bearer_scheme_is_parsed_as_the_rfc_says(closed, header, status):
    answer = closed.post("/api/queues/jobs/pop", headers={"authorization": header})
    assert answer.status_code == status, answer.text
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("   ", "API_TOKEN may hold only letters, digits"),
        ("", "API_TOKEN may hold only letters, digits"),
        (" spaced-token-spaced-token ", "no spaces"),
        ("short", "API_TOKEN has 5 characters; use at least 16"),
    ],
)
def test_an_empty_blank_or_short_token_stops_the_start(value, message):
    with pytest.raises(SettingError) as exc:
        Settings.from_env({"API_TOKEN": value})
    assert message in str(exc.value)
    with pytest.raises(SettingError, match="SESSION_SECRET has 3"):
        Settings.from_env({"SESSION_SECRET": "abc"})
    assert Settings.from_env({"API_TOKEN": TOKEN}).api_token == TOKEN
    assert Settings.from_env({"HOST": "127.0.0.1"}).api_token is None


def test_the_web_process_will_not_start_with_a_short_token(redis_url, ns):
    env = dict(os.environ, API_TOKEN="short", REDIS_URL=redis_url, RSMQ_NS=ns, PORT="1")
    ran = subprocess.run(
        [sys.executable, "-m", "web"], env=env, capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert ran.returncode == 2
    assert "API_TOKEN has 5 characters; use at least 16" in ran.stderr


def test_the_openapi_document_says_which_operations_need_the_token(closed):
    doc = closed.get("/openapi.json", headers=BEARER).json()
    assert doc["components"]["securitySchemes"]["token"] == {"type": "http", "scheme": "bearer"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path == "/api/health":
                assert op["security"] == [{}, {"token": []}]  # open; details with the token
            else:
                assert op["security"] == [{"token": []}], (path, method)
                assert "401" in op["responses"], (path, method)
                if method != "get":
                    assert {"403", "415"} <= set(op["responses"]), (path, method)
    assert openapi() == doc


# Item 10: the CSRF cookie --------------------------------------------------------------------


def test_a_csrf_cookie_chosen_by_the_client_is_refused(open_app, queues):
    open_app.cookies.set("csrftoken", "chosen-by-the-attacker")
    chosen = {"x-csrf-token": "chosen-by-the-attacker"}
    refused(open_app.post("/submit", json={"message": "x"}, headers=chosen), 403, "csrf")
    forged = "nonce.not-the-mac"
    open_app.cookies.set("csrftoken", forged)
    refused(
        open_app.post("/submit", json={"message": "x"}, headers={"x-csrf-token": forged}),
        403,
        "csrf",
    )
    assert queues.get_queue_attributes("jobs").totalsent == 0
    # The page replaces it with one the server minted, which works.
    page = open_app.get("/")
    minted = page.cookies["csrftoken"]
    assert minted != forged and f'content="{minted}"' in page.text
    assert (
        open_app.post(
            "/submit", json={"message": "x"}, headers={"x-csrf-token": minted}
        ).status_code
        == 202
    )


def test_two_web_processes_without_a_token_accept_each_others_csrf_tokens(make_client):
    first, second = make_client(), make_client()
    token = csrf_of(first)
    second.cookies.set("csrftoken", token)
    answer = second.post("/submit", json={"message": "x"}, headers={"x-csrf-token": token})
    assert answer.status_code == 202, answer.text  # the secret is shared through Redis


# Item 12: the dashboard past its queue limit --------------------------------------------------


def test_the_snapshot_says_how_many_queues_it_leaves_out(redis_url, ns):
    from web.dashboard import LISTED, snapshot

    async def run() -> dict[str, Any]:
        rsmq = AsyncRSMQ.from_url(redis_url, ns=ns)
        try:
            for i in range(LISTED + 5):
                await rsmq.create_queue(f"q{i:03}")
            await rsmq.create_queue(f"q{LISTED - 1:03}-dead")  # sorts past the listed
            await rsmq.send_message(f"q{LISTED - 1:03}-dead", "x")
            return await snapshot(rsmq)
        finally:
            await rsmq.aclose()

    snap = asyncio.run(run())
    assert snap["total_queues"] == LISTED + 6
    assert list(snap["queues"]) == [f"q{i:03}" for i in range(LISTED)]
    assert snap["queues"][f"q{LISTED - 1:03}"]["dead"] == 1
