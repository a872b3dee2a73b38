"""Faults of Redis, as real processes meet them: a Redis that lost its data, one that went away
or refuses the process, an ACL user that lacks a permission."""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rsmq_core import RSMQ
from tests.redis_server import RedisServer
from tests.test_web_server import WebProcess
from tests.workers import WorkerProcess, done, wait_for

GONE = "was gone (Redis lost its data, or it was deleted); created it again"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis of the test's own: tests here flush, stop and reconfigure it."""
    own = RedisServer()
    own.start()
    yield own
    own.cleanup()


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    with server.client(decode_responses=True) as client:
        yield client


@pytest.fixture
def log_file() -> Iterator[Path]:
    with tempfile.NamedTemporaryFile(prefix="web-", suffix=".log", delete=False) as f:
        path = Path(f.name)
    yield path
    path.unlink()


@pytest.fixture
def web_log(log_file: Path) -> Iterator[Any]:
    """An open file a web process writes both its streams to."""
    with log_file.open("ab") as f:
        yield f


def request(
    web: WebProcess,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of a GET, or a POST of ``body``; errors included."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(web.url(path), data=data, headers={
        "content-type": "application/json", **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=15) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as answer:
        text = answer.read()
        try:
            return answer.code, dict(answer.headers), json.loads(text)
        except ValueError:
            return answer.code, dict(answer.headers), text.decode(errors="replace")


def submit(web: WebProcess, message: str) -> tuple[int, dict[str, str], Any]:
    """The page's button: /submit with the CSRF cookie and header."""
    return request(web, "/submit", {"message": message},
                   {"cookie": "csrftoken=t0ken", "x-csrf-token": "t0ken"})  # fmt: skip


# 3. Queues that vanish with Redis's data ------------------------------------------------------


def test_a_worker_creates_its_queues_again_after_a_flushall(server, admin, ns):
    worker = WorkerProcess(server.url, ns, queues="jobs,other", vt="7")
    try:
        worker.start()
        with RSMQ.from_url(server.url, ns=ns, realtime=True) as q:
            first = q.send_message("jobs", "{}")
            wait_for(lambda: len(done(admin, ns)) == 1, what="the first message done")
            admin.flushall()
            # Nobody sends to the missing queues: the worker notices at its heartbeat.
            for key in (f"{ns}:jobs:Q", f"{ns}:other:Q"):
                wait_for(lambda key=key: admin.exists(key), what=f"{key} again")  # type: ignore[misc]
            assert q.get_queue_attributes("other").vt == 7  # as the worker creates them
            ids = q.send_messages("jobs", ["{}", "{}"])
            wait_for(lambda: len(done(admin, ns)) == 2, what="the new sends handled")
            assert sorted(d["id"] for d in done(admin, ns)) == sorted(ids)
            # Two heartbeats (0.5 s apart) later, still one line per queue.
            later = admin.time()[0] * 1000 + 1100
            wait_for(lambda: any(s > later for _, s in admin.zrange(
                f"{ns}:@workers", 0, -1, withscores=True)), what="two more heartbeats")  # fmt: skip
            assert first not in ids
    finally:
        worker.stop()
        output = worker.output()
        worker.cleanup()
    for name in ("jobs", "other"):
        assert output.count(f"queue {name} {GONE} (vt 7s)") == 1, output
    assert "does not exist" not in output and "Traceback" not in output


def test_the_web_app_creates_its_queue_again_but_no_other(server, admin, ns, web_log, log_file):
    web = WebProcess(server.url, ns, stdout=web_log, stderr=web_log)
    try:
        assert submit(web, "before")[0] == 202
        assert request(web, "/api/queues", {"qname": "other"})[0] == 201
        admin.flushall()
        answers = [submit(web, f"after {i}") for i in range(3)]
        other = request(web, "/api/queues/other/messages", {"message": "x"})
    finally:
        web.stop()
    assert [a[0] for a in answers] == [202] * 3
    ids = [a[2]["id"] for a in answers]
    assert sorted(admin.hkeys(f"{ns}:jobs:Q")).count(ids[0]) == 1
    assert other[0] == 404 and other[2]["error"] == "queueNotFound"
    assert not admin.exists(f"{ns}:other:Q")
    output = log_file.read_text()
    assert output.count(f"queue jobs {GONE}") == 1, output
    assert "Traceback" not in output
