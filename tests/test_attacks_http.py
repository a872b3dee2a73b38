"""Hostile clients at the door of a real uvicorn (``python -m web``): huge frames and bodies,
half-sent requests, foreign Host names, clients that leave mid-body; and the security headers
on every answer, the 500s included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import websockets
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rsmq_core.embedded import free_port
from support.web import ROOT
from support.workers import wait_for
from web.app import create_app
from web.guard import host_allowed, host_name
from web.settings import SettingError, Settings

MIB = 1024 * 1024
SEND = "/api/queues/jobs/messages"


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, port: int, *lines: str) -> bytes:
    return "\r\n".join(
        [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *lines, "", ""]
    ).encode()


def until_closed(sock: socket.socket, within: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True) or ``within`` s pass."""
    data = b""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def status_and_body(answer: bytes) -> tuple[int, bytes, bytes]:
    top, _, body = answer.partition(b"\r\n\r\n")
    return int(top.split(b" ", 2)[1]), top.lower(), body


def test_a_15_mib_websocket_frame_is_refused_from_its_header(start):
    server = start()
    pid = server.proc.pid
    before = peak_rss(pid)

    async def send_huge() -> int | None:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send("x" * (15 * MIB))
                async with asyncio.timeout(10):
                    async for _ in ws:  # anything but the close: the frame was accepted
                        pass
            return ws.close_code

    assert asyncio.run(send_huge()) == 1009  # "message too big", from the frame's header
    assert peak_rss(pid) - before < 4 * MIB  # the frame was never buffered


def test_a_10_mib_content_length_is_refused_before_the_body_is_sent(start):
    server = start()
    with connect(server.port) as sock:
        sock.sendall(
            head(
                "POST",
                SEND,
                server.port,
                "Content-Type: application/json",
                f"Content-Length: {10 * MIB}",
            )
        )
        answer, closed = until_closed(sock, 5)
    status, headers, body = status_and_body(answer)
    assert status == 413 and b"connection: close" in headers
    assert json.loads(body) == {
        "error": "bodyTooLarge",
        "message": "the request body may have at most 262144 bytes",
    }
    assert closed  # not kept open for the 10 MiB to come


def test_a_chunked_body_is_cut_with_413_at_the_limit(start):
    server = start(MAX_BODY="65536")
    chunk = b"x" * 16384
    with connect(server.port) as sock:
        sock.sendall(
            head(
                "POST",
                SEND,
                server.port,
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            )
        )
        for _ in range(5):  # 80 KiB, past the 64 KiB limit; the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer, closed = until_closed(sock, 5)
    status, _, body = status_and_body(answer)
    assert status == 413 and json.loads(body)["error"] == "bodyTooLarge"
    assert closed


def test_a_half_sent_request_is_closed_after_the_head_timeout(start):
    server = start(HEAD_TIMEOUT="1")
    with connect(server.port) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        start = time.monotonic()
        answer, closed = until_closed(sock, 10)
    assert closed and 0.9 < time.monotonic() - start < 5
    status, headers, body = status_and_body(answer)
    assert status == 408 and b"nosniff" in headers
    assert body == b"the request head did not arrive in time"


def test_a_request_trickled_byte_by_byte_gets_the_same_deadline(start):
    server = start(HEAD_TIMEOUT="1")
    with connect(server.port) as sock:
        begun = time.monotonic()
        answer, closed = b"", False
        for byte in b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"y" * 100:
            got, closed = until_closed(sock, 0.1)  # a byte each 0.1 s resets no timer
            answer += got
            if closed or got:
                break
            sock.send(bytes([byte]))
        if not closed:
            got, closed = until_closed(sock, 5)
            answer += got
    assert closed and time.monotonic() - begun < 5
    assert status_and_body(answer)[0] == 408


def test_each_head_on_a_kept_connection_gets_its_deadline_from_the_last_answer(start):
    """The timer is not moved at every request: one set by the first answer fires early for
    the second's and sets itself again, neither cutting the connection early nor late."""
    server = start(HEAD_TIMEOUT="1")
    ask = head("GET", "/api/health", server.port)
    with connect(server.port) as sock:
        for pause in (0.0, 0.5):  # the second answer, at 0.7 s, moves the deadline to 1.7
            time.sleep(pause)
            sock.sendall(ask)
            answer, closed = until_closed(sock, 0.2)
            assert not closed and status_and_body(answer)[0] == 200
        read = time.monotonic()  # 0.9 s: the first answer's timer fires at 1.0, sets 1.7
        sock.sendall(ask[:20])  # half a head
        answer, closed = until_closed(sock, 5)
    assert closed and status_and_body(answer)[0] == 408
    assert 0.5 < time.monotonic() - read < 3


def test_an_unread_body_after_an_early_answer_is_not_a_way_to_hold_the_connection(start):
    """A request answered before its body was read (a refused Host: TrustedHosts answers
    before BodyLimit reads) left the connection with no deadline at all: neither the head's
    (the head was in) nor the body's (nothing read it). Trickled a byte at a time, its body
    held the connection for ever."""
    server = start(HEAD_TIMEOUT="1", BODY_TIMEOUT="1")
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /api/queues/jobs/messages HTTP/1.1\r\nHost: evil.example\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        begun = time.monotonic()
        answer, closed = until_closed(sock, 0.5)
        assert status_and_body(answer)[0] == 400
        while not closed and time.monotonic() - begun < 12:
            try:
                sock.send(b"x")
            except OSError:
                closed = True
                break
            _, closed = until_closed(sock, 0.5)
    assert closed and time.monotonic() - begun < 8, time.monotonic() - begun


def test_a_body_slower_than_body_timeout_gets_408(start):
    server = start(BODY_TIMEOUT="1")
    with connect(server.port) as sock:
        sock.sendall(
            head("POST", SEND, server.port, "Content-Type: application/json", "Content-Length: 100")
            + b'{"message": "'
        )
        answer, closed = until_closed(sock, 10)
    status, _, body = status_and_body(answer)
    assert status == 408 and closed
    assert json.loads(body) == {
        "error": "bodyTimeout",
        "message": "the request body must arrive within 1 s",
    }


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("LocalHost:8000", "localhost"),
        ("[::1]:8000", "[::1]"),
        ("[::1]", "[::1]"),
        ("example.com", "example.com"),
        ("", None),
        ("a:b", None),
        ("[::1", None),
        ("[::1]x", None),
        ("example.com:", None),
    ],
)
def test_the_host_check_reads_the_name_out_of_the_header(header, name):
    assert host_name(header) == name


def test_a_wildcard_admits_the_names_under_a_domain_only():
    patterns = ("*.herokuapp.com", "example.com")
    assert host_allowed("my-app.herokuapp.com", patterns)
    assert not host_allowed("herokuapp.com", patterns)
    assert not host_allowed("evilherokuapp.com", patterns)
    assert not host_allowed("www.example.com", patterns)
    assert host_allowed("anything", ("*",))


def test_a_foreign_host_is_refused_on_http_and_on_the_websocket(start):
    server = start()  # HOST=127.0.0.1: loopback names only
    rebound = ("Host: evil.example:8096", "Origin: http://evil.example:8096")
    upgrade = (
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    )
    for request in (b"GET /api/queues HTTP/1.1\r\n", b"GET /ws HTTP/1.1\r\n"):
        lines = rebound + (upgrade if b"/ws" in request else ())
        with connect(server.port) as sock:
            sock.sendall(request + "\r\n".join([*lines, "", ""]).encode())
            answer, _ = until_closed(sock, 3)
        status, headers, body = status_and_body(answer)
        assert status == 400, answer
        assert b"content-security-policy" in headers
        assert json.loads(body) == {
            "error": "invalidHost",
            "message": "Host 'evil.example:8096' is not a name this app answers to",
        }
    with connect(server.port) as sock:  # the loopback names still pass, with their port
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % server.port)
        assert status_and_body(until_closed(sock, 1)[0])[0] == 200


def test_a_client_leaving_mid_body_logs_one_info_line(start):
    with tempfile.TemporaryFile("w+") as out:
        server = start(LOG_LEVEL="INFO", stdout=out, stderr=out)
        with connect(server.port) as sock:
            sock.sendall(
                head(
                    "POST",
                    SEND,
                    server.port,
                    "Content-Type: application/json",
                    "Content-Length: 1000",
                )
                + b'{"message": "'
            )

        def told() -> list[str]:
            out.seek(0)
            text = out.read()
            said = [ln for ln in text.splitlines() if "mid-body" in ln or "Exception" in ln]
            return said + ["Traceback"] * ("Traceback" in text)

        said = wait_for(told, timeout=10, what="the web app to log the disconnect")
    assert len(said) == 1, said
    assert " INFO " in said[0] and f"POST {SEND} after 13 bytes" in said[0]


def test_https_behind_a_trusted_proxy_gets_hsts_and_nothing_else_does(start):
    trusted = start(FORWARDED_ALLOW_IPS="127.0.0.1").port
    untrusted = start(FORWARDED_ALLOW_IPS="10.9.8.7").port  # not us

    def headers(port: int, *lines: str) -> bytes:
        with connect(port) as sock:
            sock.sendall(head("GET", "/api/health", port, "Connection: close", *lines))
            return status_and_body(until_closed(sock, 5)[0])[1]

    assert b"strict-transport-security: max-age=31536000" in headers(
        trusted, "X-Forwarded-Proto: https"
    )
    assert b"strict-transport-security" not in headers(trusted)
    assert b"strict-transport-security" not in headers(untrusted, "X-Forwarded-Proto: https")
    assert b"x-content-type-options: nosniff" in headers(untrusted)


@contextlib.contextmanager
def serving(app: object) -> Iterator[int]:
    """A real uvicorn in a thread (no signal handlers there), on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            log_config=None,
            log_level="critical",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, what="uvicorn to start")
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


def test_a_500_carries_the_security_headers(redis_url, ns):
    app = create_app(Settings(redis_url=redis_url, ns=ns))

    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    app.router.routes.append(Route("/boom", boom))
    with serving(app) as port, connect(port) as sock:
        sock.sendall(head("GET", "/boom", port))
        status, headers, _ = status_and_body(until_closed(sock, 5)[0])
    assert status == 500
    assert b"content-security-policy: default-src 'self'" in headers
    assert b"x-content-type-options: nosniff" in headers


def test_allowed_hosts_default_to_the_loopback_names_on_loopback_only():
    assert Settings.from_env({"HOST": "127.0.0.1"}).allowed_hosts == (
        "localhost",
        "127.0.0.1",
        "[::1]",
    )
    assert Settings.from_env({"HOST": "0.0.0.0", "ALLOW_ANONYMOUS": "true"}).allowed_hosts == ()
    env = {
        "HOST": "0.0.0.0",
        "ALLOW_ANONYMOUS": "true",
        "ALLOWED_HOSTS": " App.Example.com, *.herokuapp.com,::1",
    }
    assert Settings.from_env(env).allowed_hosts == ("app.example.com", "*.herokuapp.com", "[::1]")


NO_PORT = "write host names only, no port or scheme"
WILDCARD = "a wildcard stands for the names under a domain (*.example.com), or for any name (*)"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("example.com:8000", NO_PORT),
        ("https://example.com", NO_PORT),
        ("app.*.com", WILDCARD),
        ("*example.com", WILDCARD),
    ],
)
def test_a_bad_allowed_host_is_named(value, why):
    with pytest.raises(SettingError) as caught:
        Settings.from_env({"ALLOWED_HOSTS": value})
    assert str(caught.value) == f"ALLOWED_HOSTS: {value!r}: {why}"


def test_an_app_without_allowed_hosts_is_not_made(redis_url, ns):
    with pytest.raises(SettingError, match=r"^ALLOWED_HOSTS is not set and HOST=0.0.0.0 is not"):
        create_app(Settings(redis_url=redis_url, ns=ns, allowed_hosts=()))


def test_the_web_app_will_not_start_on_a_public_interface_without_allowed_hosts(ns):
    env = dict(
        os.environ,
        HOST="0.0.0.0",
        PORT=str(free_port()),
        PYTHONPATH=str(ROOT),
        RSMQ_NS=ns,
        API_TOKEN="t" * 16,
    )
    env.pop("ALLOWED_HOSTS", None)
    done = subprocess.run(
        [sys.executable, "-m", "web"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr == (
        "web: bad setting: ALLOWED_HOSTS is not set and HOST=0.0.0.0 is not a loopback "
        "address: set ALLOWED_HOSTS to the names clients reach this app by (comma-separated; "
        "*.herokuapp.com on Heroku, * for any)\n"
    )


def test_past_max_connections_a_request_gets_503(start):
    server = start(MAX_CONNECTIONS="10")
    holders = [connect(server.port) for _ in range(10)]
    try:
        for sock in holders:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no more
        with connect(server.port) as sock:
            sock.sendall(head("GET", "/api/health", server.port))
            assert status_and_body(until_closed(sock, 5)[0])[0] == 503
    finally:
        for sock in holders:
            sock.close()
    wait_for(server.healthy, timeout=10, what="the app to answer once the holders left")
