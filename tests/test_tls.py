"""TLS and Redis ACL users, against a redis-server that speaks only TLS, with certificates
made by the test run: the library, the CLI, realtime, a worker process and the web app."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from realtime import Subscriber
from realtime.subscriber import RESYNC
from rsmq_core import RSMQ, AsyncRSMQ, ConnectionOptions
from rsmq_core.cli import main
from rsmq_core.connection import async_client, explain, is_misconfigured, sync_client
from support.web import WebProcess
from support.workers import WorkerProcess, wait_for
from tests.handlers import done
from tests.test_web_server import statuses
from tests.tls import Certificates, TlsRedisServer, make_certificates, user_url
from web.app import create_app
from web.settings import Settings as WebSettings

# What a queue's user needs, and no more: its namespace's keys and channels, no admin command.
QUEUE_ACL = [
    "+@read",
    "+@write",
    "+@scripting",
    "+@pubsub",
    "+@transaction",
    "+@connection",
    "+time",
    "-@dangerous",
]
NONE = ConnectionOptions(tls_verify="none")


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_server(certs: Certificates) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(certs)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def admin(tls_server: TlsRedisServer) -> Iterator[redis.Redis]:
    with tls_server.client(decode_responses=True) as client:
        yield client


@pytest.fixture
def verified(certs: Certificates) -> ConnectionOptions:
    """Verifies the server against the test's CA; shows no client certificate."""
    return ConnectionOptions(tls_ca_file=str(certs.ca))


@pytest.fixture
def user(admin: redis.Redis, ns: str) -> Iterator[tuple[str, str]]:
    """An ACL user of the test's own, allowed only the test's namespace."""
    name, password = f"queue-{ns}", secrets.token_hex(12)
    admin.execute_command(
        "ACL", "SETUSER", name, "reset", "on", f">{password}", f"~{ns}:*", f"&{ns}:*", *QUEUE_ACL
    )
    yield name, password
    admin.acl_deluser(name)


@pytest.fixture
def url(tls_server: TlsRedisServer, user: tuple[str, str]) -> str:
    return user_url(tls_server, *user)


def round_trip(url: str, ns: str, options: ConnectionOptions, kind: str) -> list[Any]:
    """Create a queue, send, receive and delete over ``url``: what each step returned."""
    if kind == "sync":
        with RSMQ.from_url(url, ns=ns, realtime=True, connection=options) as q:
            q.create_queue("jobs")
            mid = q.send_message("jobs", "hello")
            msg = q.receive_message("jobs")
            assert msg is not None
            return [msg.id == mid, msg.message, q.delete_message("jobs", mid, rc=msg.rc)]

    async def steps() -> list[Any]:
        async with AsyncRSMQ.from_url(url, ns=ns, realtime=True, connection=options) as q:
            await q.create_queue("jobs")
            mid = await q.send_message("jobs", "hello")
            msg = await q.receive_message("jobs")
            assert msg is not None
            return [msg.id == mid, msg.message, await q.delete_message("jobs", mid, rc=msg.rc)]

    return asyncio.run(steps())


# The library ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_queue_operations_over_tls_as_an_acl_user(url, ns, verified, kind):
    assert round_trip(url, ns, verified, kind) == [True, "hello", True]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_verify_none_accepts_a_certificate_nobody_vouches_for(url, ns, kind):
    assert round_trip(url, ns, NONE, kind) == [True, "hello", True]


@pytest.mark.parametrize("ca", ["system", "other"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_certificate_from_an_unknown_ca_is_refused_saying_why(url, ns, certs, ca, kind):
    options = ConnectionOptions(tls_ca_file=str(certs.other_ca) if ca == "other" else None)
    with pytest.raises(redis.ConnectionError) as caught:
        round_trip(url, ns, options, kind)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert is_misconfigured(caught.value)
    hint = explain(caught.value)
    assert "TLS certificate could not be verified" in hint
    assert "REDIS_TLS_CA_FILE" in hint and "REDIS_TLS_VERIFY=none" in hint


def test_the_host_name_is_checked_too(url, ns, verified):
    # The certificate names 127.0.0.1 only; the same server as "localhost" is refused.
    other_name = url.replace("@127.0.0.1:", "@localhost:")
    with pytest.raises(redis.ConnectionError, match="Hostname mismatch") as caught:
        round_trip(other_name, ns, verified, "sync")
    assert is_misconfigured(caught.value)
    assert round_trip(other_name, ns, NONE, "sync") == [True, "hello", True]


def test_a_plain_connection_to_a_tls_port_fails(tls_server, ns):
    with pytest.raises(redis.ConnectionError):
        round_trip(tls_server.url.replace("rediss://", "redis://"), ns, NONE, "sync")


def test_a_client_certificate_when_the_server_asks_for_one(certs, verified, ns):
    server = TlsRedisServer(certs, client_certificates=True)
    server.start()
    try:
        with pytest.raises(redis.ConnectionError):
            round_trip(server.url, ns, verified, "sync")
        assert round_trip(server.url, ns, server.options, "async") == [True, "hello", True]
    finally:
        server.cleanup()


def test_the_acl_user_is_kept_to_its_namespace(url, ns, verified):
    with sync_client(url, verified) as r:
        r.set(f"{ns}:mine", "1")
        for step in (
            lambda: r.get("elsewhere"),
            lambda: r.publish("elsewhere", "x"),
            lambda: r.keys("*"),
            lambda: r.flushall(),
            lambda: r.config_get("*"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                step()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_wrong_password_is_refused_saying_why(tls_server, user, ns, verified, kind):
    wrong = user_url(tls_server, user[0], "not-" + user[1])
    with pytest.raises(redis.AuthenticationError) as caught:
        round_trip(wrong, ns, verified, kind)
    assert is_misconfigured(caught.value)
    assert "check the user name and password in the URL" in explain(caught.value)


async def test_realtime_notifications_over_tls(url, ns, verified):
    client = async_client(url, verified)
    try:
        async with Subscriber(client) as sub:
            listener = sub.listen(f"{ns}:rt:jobs")
            async with asyncio.timeout(10):
                assert await listener.get() is RESYNC  # subscribed
                q = AsyncRSMQ(client, ns=ns, realtime=True)
                await q.create_queue("jobs")
                await q.send_message("jobs", "hi")
                assert await listener.get() == (f"{ns}:rt:jobs", b"1")
    finally:
        await client.aclose()


# The CLI -------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_over_tls(capsys, monkeypatch, url, ns, certs, user):
    monkeypatch.delenv("REDIS_TLS_VERIFY", raising=False)
    monkeypatch.delenv("REDIS_TLS_CA_FILE", raising=False)
    args = ("--url", url, "--ns", ns)
    assert cli(capsys, *args, "--tls-ca-file", str(certs.ca), "create", "jobs") == (0, "true\n", "")
    code, out, err = cli(capsys, *args, "list")
    assert code == 3 and out == ""
    assert "certificate verify failed" in err and "REDIS_TLS_CA_FILE" in err
    assert user[1] not in err and ":***@" in err
    monkeypatch.setenv("REDIS_TLS_VERIFY", "none")  # as on Heroku: the worker's setting
    assert cli(capsys, *args, "list") == (0, '["jobs"]\n', "")
    # The option wins over the environment.
    assert cli(capsys, *args, "--tls-verify", "required", "list")[0] == 3


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--tls-ca-file", "/no/such.pem"], {}, "--tls-ca-file='/no/such.pem': no such file"),
        ([], {"REDIS_TLS_CERT_FILE": "/no/c.pem"}, "REDIS_TLS_CERT_FILE='/no/c.pem': no such"),
        ([], {"REDIS_TLS_VERIFY": "maybe"}, "REDIS_TLS_VERIFY='maybe': use 'required'"),
        (["--tls-key-file", "__file__"], {}, "--tls-key-file is set without --tls-cert-file"),
    ],
)
def test_cli_bad_tls_options_are_usage_errors(capsys, monkeypatch, argv, env, message):
    for name in ("REDIS_TLS_VERIFY", "REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = [__file__ if a == "__file__" else a for a in argv]
    code, out, err = cli(capsys, "--url", "rediss://127.0.0.1:1/0", *argv, "list")
    assert (code, out) == (2, "")
    assert message in err


def test_cli_refuses_a_ca_file_for_a_plain_url(capsys, certs):
    code, _, err = cli(
        capsys, "--url", "redis://127.0.0.1:1/0", "--tls-ca-file", str(certs.ca), "list"
    )
    assert code == 2 and "use rediss://" in err


# The worker and the web app as real processes ------------------------------------------------


def test_a_worker_process_over_tls_as_an_acl_user(tls_server, admin, url, ns, certs, verified):
    worker = WorkerProcess(url, ns, admin=tls_server.client, redis_tls_ca_file=str(certs.ca))
    try:
        worker.start()
        with RSMQ.from_url(url, ns=ns, realtime=True, connection=verified) as q:
            ids = q.send_messages("jobs", [json.dumps({"n": i}) for i in range(5)])
        wait_for(lambda: len(done(admin, ns)) == 5, what="5 messages done over TLS")
        assert sorted(d["id"] for d in done(admin, ns)) == sorted(ids)
    finally:
        worker.cleanup()


@pytest.mark.parametrize("fault", ["password", "certificate", "permission"])
def test_a_worker_that_cannot_use_redis_exits_saying_why(tls_server, admin, user, ns, certs, fault):
    password = "wrong-password" if fault == "password" else user[1]
    settings: dict[str, Any] = {}
    if fault != "certificate":
        settings["redis_tls_ca_file"] = str(certs.ca)
    if fault == "permission":  # an ACL user that may not run scripts
        admin.execute_command("ACL", "SETUSER", user[0], "-@scripting")
    worker = WorkerProcess(user_url(tls_server, user[0], password), ns, **settings)
    try:
        worker.start(ready=False)
        assert worker.proc is not None
        assert worker.proc.wait(30) == (2 if fault == "permission" else 1)
        output, worker_stderr = worker.stdout(), worker.stderr()
    finally:
        worker.cleanup()
    assert f"cannot use Redis at rediss://{user[0]}:***@127.0.0.1:" in output
    assert password not in output
    assert worker_stderr == "", "one line on stdout, no traceback"
    if fault == "password":
        assert "check the user name and password in the URL" in output
    elif fault == "permission":
        # Found by the check at start (see realtime.preflight), before any script runs.
        assert f"the Redis ACL user '{user[0]}' may not run what the worker needs: EVAL;" in output
    else:
        assert "certificate verify failed" in output and "REDIS_TLS_CA_FILE" in output


def test_the_web_app_and_a_worker_over_tls(tls_server, url, ns, certs):
    # The web app as on Heroku (accepting the server's certificate), the worker verifying it.
    web = WebProcess(url, ns, REDIS_TLS_VERIFY="none")
    worker = WorkerProcess(url, ns, admin=tls_server.client, redis_tls_ca_file=str(certs.ca))
    try:
        worker.start()
        sent: list[str] = []

        def send() -> None:
            sent.append(web.post("/api/queues/jobs/messages", {"message": "{}"})["id"])

        events = asyncio.run(statuses(web.port, send, want=4))
    finally:
        worker.cleanup()
        web.stop()
    assert [e["status"] for e in events] == ["queued", "received", "processing", "done"]
    assert {e["id"] for e in events} == set(sent)


def test_the_web_apps_health_says_which_setting_to_look_at(url, ns, user):
    with TestClient(
        create_app(WebSettings(redis_url=url, ns=ns, allowed_hosts=("testserver",)))
    ) as client:
        answer = client.get("/api/health")
    assert answer.status_code == 503
    message = answer.json()["message"]
    assert message.startswith("ConnectionError: ") and "certificate verify failed" in message
    assert "REDIS_TLS_CA_FILE" in message and "REDIS_TLS_VERIFY=none" in message
    assert user[1] not in answer.text
