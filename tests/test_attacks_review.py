"""What a second round of attacks on issue 10's fixes found, each against a real uvicorn
(``python -m web``) and a real Redis: the ways around the door that the first tests missed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import redis
import websockets

from support.workers import wait_for
from tests.test_attacks_http import connect, head, status_and_body, until_closed
from web.protocol import websocket_limit

TOKEN = "review-token-0123456789"


def test_an_anonymous_subscribe_naming_no_ids_follows_nothing(start, redis_url, ns):
    """With API_TOKEN set, ``ids: []`` and ``tickets: []`` passed the ticket check (every one
    of no ids had its ticket), so an anonymous client made the process follow any queue name
    it liked: 100 made-up channels a connection, until WS_MAX_CHANNELS refused everyone."""
    server = start(API_TOKEN=TOKEN)

    async def anonymous() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            for queue in ("made-up-1", "jobs"):
                frame = {"type": "subscribe", "queue": queue, "ids": [], "tickets": []}
                await ws.send(json.dumps(frame))
            async with asyncio.timeout(10):
                while len(got) < 2:
                    frame = json.loads(await ws.recv())
                    if frame["type"] != "ping":
                        got.append(frame)
        return got

    got = asyncio.run(anonymous())
    assert [(f["type"], f.get("error")) for f in got] == [("error", "unauthorized")] * 2, got
    assert got[0]["message"] == (
        "name the ids /submit answered with, each with its ticket (following no id, or a "
        "whole queue, needs a login: API_TOKEN is set)"
    )
    with redis.Redis.from_url(redis_url) as r:
        assert r.pubsub_channels(f"{ns}*made-up*") == []


def test_websockets_count_against_max_connections(start):
    """uvicorn upgrades a websocket before its concurrency check: past MAX_CONNECTIONS every
    HTTP request got 503 while websockets were still accepted, without end."""
    server = start(MAX_CONNECTIONS="10")

    async def crowd() -> tuple[int, int, bytes]:
        opened: list[Any] = []
        refused: Any = None
        try:
            for _ in range(30):
                try:
                    opened.append(await websockets.connect(f"ws://127.0.0.1:{server.port}/ws"))
                except websockets.InvalidStatus as exc:
                    refused = exc.response
                    break
            assert refused is not None, f"{len(opened)} websockets, none refused"
            # One client holding every websocket it may: HTTP still has room of its own.
            assert server.healthy()
            headers = "".join(f"{k}: {v}\n" for k, v in refused.headers.raw_items()).lower()
            return len(opened), refused.status_code, headers.encode() + refused.body
        finally:
            await asyncio.gather(*(ws.close() for ws in opened))

    opened, status, answer = asyncio.run(crowd())
    assert opened == websocket_limit(10) == 8 and status == 503
    assert b"content-security-policy" in answer and b"nosniff" in answer
    assert b"MAX_CONNECTIONS" in answer
    wait_for(server.healthy, timeout=10, what="the app to answer once the websockets left")


def test_content_length_beside_transfer_encoding_is_refused_and_the_connection_closed(start):
    """Both framings at once is how requests are smuggled past a proxy that reads the other:
    h11 took the chunked one and answered the next request on the same connection."""
    server = start()
    smuggled = head("GET", "/api/queues", server.port)
    with connect(server.port) as sock:
        sock.sendall(
            head(
                "POST",
                "/api/queues/jobs/pop",
                server.port,
                "Content-Type: application/json",
                f"Content-Length: {len(smuggled) + 5}",
                "Transfer-Encoding: chunked",
            )
            + b"0\r\n\r\n"
            + smuggled
        )
        answer, closed = until_closed(sock, 5)
    status, headers, body = status_and_body(answer)
    assert status == 400 and closed and b"x-content-type-options: nosniff" in headers
    assert answer.count(b"HTTP/1.1 ") == 1  # the request behind it was not answered
    assert json.loads(body) == {
        "error": "badFraming",
        "message": "a request may not have both Content-Length and Transfer-Encoding",
    }


def test_uvicorns_own_400_carries_the_security_headers(start):
    """A request h11 cannot parse is answered by uvicorn itself, outside the app's
    middlewares: it came without CSP and nosniff."""
    server = start()
    for bad in (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
    ):
        with connect(server.port) as sock:
            sock.sendall(bad)
            answer, closed = until_closed(sock, 5)
        status, headers, body = status_and_body(answer)
        assert (status, closed, body) == (400, True, b"Invalid HTTP request received.")
        assert b"content-security-policy: default-src 'self'" in headers
        assert b"x-content-type-options: nosniff" in headers


def test_a_flood_of_frames_past_the_read_budget_is_closed(start):
    """Only subscribes were budgeted: pings, refused frames and bad JSON were parsed as fast as
    one connection could send them (63 KB frames from one client took the API's p50 from 2.6
    to 31 ms). Past READ_BURST units (256 pings, 4 frames of 64 KiB) and READ_RATE (64 a
    second) the connection is closed with 1013, and what it had queued is never read (read
    slowly instead, a flood kept its connection and queues long after the client left)."""
    server = start()

    async def flood() -> tuple[int, int | None, str | None]:
        pongs = 0
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            for _ in range(400):
                await ws.send(json.dumps({"type": "ping"}))
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(30):
                    async for frame in ws:
                        pongs += json.loads(frame)["type"] == "pong"
        return pongs, ws.close_code, ws.close_reason

    pongs, code, reason = asyncio.run(flood())
    assert pongs < 400  # what it had queued was not read
    assert (code, reason) == (1013, "too many frames: 64 KiB a second after 256 KiB")
    wait_for(server.healthy, timeout=10, what="the app to answer")
