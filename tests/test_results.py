"""Job results: a handler's return value kept with "done", and read back by the library
(get_status, wait_for_result; async and sync), the REST API, the websocket and the CLI."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from realtime import AsyncResults, JobFailed, Results, ResultTimeout, StatusEvent, Subscriber
from realtime.events import _SCRIPT, MAXLEN, TTL, EventLog, _write_args, events_channel
from rsmq_core import (
    RSMQ,
    AsyncRSMQ,
    InvalidFormat,
    InvalidValue,
    Message,
    MissingParameter,
    QueueNotFound,
)
from tests import test_worker_inproc as inproc
from tests.test_cli import run as cli  # noqa: F401  (the CLI fixture, shared)
from tests.test_web import ORIGIN, next_frame
from worker import Job
from worker.settings import MAX_RESULT_BYTES
from worker.worker import Worker

ar, q, run, until = inproc.ar, inproc.q, inproc.run, inproc.until
ID = "a" * 32
# What Lua's cjson would have changed, had the script decoded and re-encoded the event.
FAITHFUL = {
    "float": 0.1 + 0.2,
    "big": 2**60 + 1,
    "empty": [],
    "obj": {},
    "text": "é ☃ \udc80",
    "html": "<b>x</b>",
    "nested": [[1, [2, {"3": None}]]],
}


def record(r: redis.Redis, ns: str, event: StatusEvent) -> None:
    """Record an event as a worker does, from sync test code."""
    keys, args = _write_args(RSMQ(r, ns=ns).keys(event.queue), [event], MAXLEN, TTL)
    r.register_script(_SCRIPT)(keys=keys, args=args)


async def done_events(w: Worker, ar: Any, ns: str) -> list[dict[str, Any]]:
    await w.events.flush()
    entries = [json.loads(f[b"e"]) for _, f in await ar.xrange(f"{ns}:jobs:events")]
    return [e for e in entries if e["status"] in ("done", "failed", "dead")]


# The worker ------------------------------------------------------------------------------------


async def test_an_async_handlers_result_is_kept_with_done_byte_for_byte(run, q, ar, ns):
    async def handle(job: Job) -> Any:
        return FAITHFUL

    w = await run(handle)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["done"] == 1, what="done")
    (done,) = await done_events(w, ar, ns)
    assert done["result"] == FAITHFUL
    async with AsyncResults(q) as results:
        status = await results.get_status("jobs", mid)
    assert status is not None and (status.status, status.result) == ("done", FAITHFUL)
    assert status.ts is not None and status.worker == w.id


async def test_a_sync_handlers_result_and_a_none_result(run, q, ar, ns):
    def handle(job: Job) -> Any:
        return None if job.body == "none" else [job.body, 1]

    w = await run(handle)
    some = await q.send_message("jobs", "some")
    none = await q.send_message("jobs", "none")
    await until(lambda: w.counters["done"] == 2, what="both done")
    by_id = {e["id"]: e for e in await done_events(w, ar, ns)}
    assert by_id[some]["result"] == ["some", 1]
    assert "result" not in by_id[none]  # as before results existed
    status = await AsyncResults(q).get_status("jobs", none)
    assert status is not None and status.status == "done" and status.result is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, "the handler returned a value that is not JSON-serialisable (Object of type set"),
        (math.nan, "not JSON-serialisable (Out of range float values"),
        ("x" * 99, "the handler's result is 101 bytes as JSON, over RESULT_MAX_BYTES (100)"),
    ],
)
async def test_a_result_that_cannot_be_kept_fails_the_job_then_dead_letters_it(
    run, q, ar, ns, value, error
):
    async def handle(job: Job) -> Any:
        return value

    w = await run(handle, result_max_bytes=100, max_receives=2, retry_backoff=0)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["dead"] == 1, what="dead-lettered")
    said = [(e["status"], e["rc"], e["error"]) for e in await done_events(w, ar, ns)]
    assert [s[:2] for s in said] == [("failed", 1), ("failed", 2), ("dead", 2)]
    assert all(error in e for _, _, e in said), said
    assert w.counters["done"] == 0
    assert (await q.get_queue_attributes("jobs-dead")).msgs == 1
    with pytest.raises(JobFailed, match=r"is dead, with no result: the handler"):
        await AsyncResults(q).wait_for_result("jobs", mid, timeout=5)


async def test_a_result_of_exactly_result_max_bytes_is_kept(run, q, ar, ns):
    async def handle(job: Job) -> Any:
        return "x" * 98  # 100 bytes with its quotes

    w = await run(handle, result_max_bytes=100)
    await q.send_message("jobs", "x")
    await until(lambda: w.counters["done"] == 1, what="done")
    assert (await done_events(w, ar, ns))[0]["result"] == "x" * 98


async def test_a_deeply_nested_result_is_kept_as_json_takes_it(run, q, ar, ns):
    """json.dumps takes a list nested 600 deep; the event's encoding must too (a recursive
    copy of it ran out of stack after the message was deleted: the "done" and every event
    batched with it were lost)."""
    deep: list[Any] = []
    for _ in range(600):
        deep = [deep]

    async def handle(job: Job) -> Any:
        return deep

    w = await run(handle)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["done"] == 1, what="done")
    (done,) = await done_events(w, ar, ns)
    assert done["result"] == deep and w.events.failures == 0
    status = await AsyncResults(q).get_status("jobs", mid)
    assert status is not None and status.result == deep


async def test_the_result_kept_is_the_value_returned_not_what_it_became(run, q, ar, ns):
    """The value was kept by reference until its event was written, after the delete: a
    handler that goes on changing what it returned (a shared dict) had something else
    recorded, or, changed into what JSON cannot hold, every event of that batch lost."""
    shared: dict[str, Any] = {"n": 1}

    async def handle(job: Job) -> Any:
        asyncio.get_running_loop().call_soon(shared.update, {"n": 2, "later": {1, 2}})
        return shared

    w = await run(handle)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["done"] == 1, what="done")
    (done,) = await done_events(w, ar, ns)
    assert done["result"] == {"n": 1} and w.events.failures == 0
    status = await AsyncResults(q).get_status("jobs", mid)
    assert status is not None and status.result == {"n": 1}


def test_the_example_handler_returns_a_small_result(monkeypatch):
    import worker.example as example

    monkeypatch.setattr(example, "STEP_SECONDS", 0)
    job = Job("jobs", Message(ID, '{"applicant": "Ada"}', 1, 0, 0), "w", lambda _: None)
    result = asyncio.run(example.handle(job))
    assert result == {"accepted": True, "applicant": "Ada", "steps": 4}
    assert len(json.dumps(result)) < 1000 < MAX_RESULT_BYTES


# The library -----------------------------------------------------------------------------------


@pytest.fixture(params=["sync", "async"])
def results(request: pytest.FixtureRequest, redis_url: str, ns: str) -> Iterator[Any]:
    """get_status and wait_for_result of Results, or of AsyncResults driven from sync code."""
    with RSMQ.from_url(redis_url, ns=ns) as client:
        client.create_queue("jobs")
        if request.param == "sync":
            yield Results(client)
            return
    with asyncio.Runner() as runner:
        aclient = AsyncRSMQ.from_url(redis_url, ns=ns)
        driven = Driven(AsyncResults(aclient), runner)
        yield driven
        runner.run(driven.inner.aclose())
        runner.run(aclient.aclose())


class Driven:
    """An AsyncResults (``inner``) called from sync test code."""

    def __init__(self, inner: AsyncResults, runner: asyncio.Runner) -> None:
        self.inner, self._runner = inner, runner

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: self._runner.run(getattr(self.inner, name)(*a, **k))


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def test_get_status_returns_the_last_status_with_its_result(results, raw, ns):
    assert results.get_status("jobs", ID) is None
    record(raw, ns, StatusEvent("processing", "jobs", ID, rc=1, progress=0.5))
    assert results.get_status("jobs", ID).progress == 0.5
    record(raw, ns, StatusEvent("done", "jobs", ID, rc=1, result={"ok": [1]}))
    status = results.get_status("jobs", ID)
    assert (status.status, status.result, status.queue, status.id) == (
        "done",
        {"ok": [1]},
        "jobs",
        ID,
    )


def test_wait_for_result_returns_a_result_already_there(results, raw, ns):
    record(raw, ns, StatusEvent("done", "jobs", ID, result=7))
    assert results.wait_for_result("jobs", ID, timeout=5).result == 7


def test_wait_for_result_hears_a_result_recorded_while_it_waits(results, raw, ns):
    record(raw, ns, StatusEvent("processing", "jobs", ID))
    later = threading.Timer(0.2, record, (raw, ns, StatusEvent("done", "jobs", ID, result="yes")))
    later.start()
    try:
        assert results.wait_for_result("jobs", ID, timeout=10).result == "yes"
    finally:
        later.join()


@pytest.mark.parametrize("timeout", [3e6, 1e308])  # 35 days; as long as a float goes
def test_wait_for_result_takes_a_long_timeout(results, raw, ns, timeout):
    """The sync one's socket read took the whole timeout: over 24.8 days it raised
    OverflowError (a traceback from ``rsmq status --wait 3000000``)."""
    record(raw, ns, StatusEvent("processing", "jobs", ID))
    later = threading.Timer(0.2, record, (raw, ns, StatusEvent("done", "jobs", ID, result=1)))
    later.start()
    try:
        assert results.wait_for_result("jobs", ID, timeout=timeout).result == 1
    finally:
        later.join()


def test_wait_for_result_misses_no_result_landing_right_after_its_first_read(
    results, raw, ns, monkeypatch
):
    """The result lands after wait_for_result read the status (none yet) and before it waits:
    only a subscription made before that read hears it."""
    first: list[bool] = []

    def land() -> None:
        if not first:
            first.append(True)
            record(raw, ns, StatusEvent("done", "jobs", ID, result="raced"))

    inner: Any = getattr(results, "inner", results)
    read = inner.get_status
    if isinstance(inner, AsyncResults):
        # The process already hears the queue's channel (another waiter, the web app's hub),
        # so no RESYNC would make up for a subscription made after the read; and the event
        # is delivered before the read returns (``other`` hears it).
        channel = events_channel(inner._rsmq.keys("jobs"))

        async def hear_already() -> Any:
            sub = inner._subscriber = Subscriber(inner._rsmq.redis)
            sub.start()
            other = sub.listen(channel)
            await until(lambda: sub._heard(channel), what="subscribed")
            assert await other.get() is None  # its RESYNC
            return other

        other = results._runner.run(hear_already())

        async def then_land(*args: Any) -> Any:
            found = await read(*args)
            land()
            async with asyncio.timeout(5):
                assert (await other.get()) is not None
            return found

        monkeypatch.setattr(inner, "get_status", then_land)
    else:

        def then_land_sync(*args: Any) -> Any:
            found = read(*args)
            land()
            return found

        monkeypatch.setattr(inner, "get_status", then_land_sync)
    assert results.wait_for_result("jobs", ID, timeout=5).result == "raced"
    assert first


def test_wait_for_result_raises_job_failed_when_the_message_died(results, raw, ns):
    record(raw, ns, StatusEvent("dead", "jobs", ID, rc=5, error="RuntimeError: no"))
    with pytest.raises(JobFailed, match=f"jobs/{ID} is dead, with no result: RuntimeError: no"):
        results.wait_for_result("jobs", ID, timeout=5)
    record(raw, ns, StatusEvent("deleted", "jobs", ID, by="api 10.0.0.1"))
    with pytest.raises(JobFailed) as failed:
        results.wait_for_result("jobs", ID, timeout=5)
    assert failed.value.event.by == "api 10.0.0.1"


def test_wait_for_result_raises_job_failed_when_the_message_expired(results, raw, ns):
    """Dropped past its queue's retention: it will never have a result, so no waiting out the
    timeout (it waited the whole of it, then said "last status: expired")."""
    record(raw, ns, StatusEvent("expired", "jobs", ID))
    with pytest.raises(JobFailed, match=f"jobs/{ID} is expired, with no result"):
        results.wait_for_result("jobs", ID, timeout=5)
    other = "c" * 32
    record(raw, ns, StatusEvent("retrying", "jobs", other, rc=1))
    later = threading.Timer(0.2, record, (raw, ns, StatusEvent("expired", "jobs", other)))
    later.start()
    try:
        with pytest.raises(JobFailed, match="is expired"):
            results.wait_for_result("jobs", other, timeout=5)
    finally:
        later.join()


def test_wait_for_result_times_out_with_a_clear_error(results, raw, ns):
    record(raw, ns, StatusEvent("processing", "jobs", ID))
    with pytest.raises(
        ResultTimeout,
        match=rf"no result for jobs/{ID} within 0.2 s "
        r"\(last status: processing\)",
    ) as late:
        results.wait_for_result("jobs", ID, timeout=0.2)
    assert isinstance(late.value, TimeoutError) and late.value.last.status == "processing"
    with pytest.raises(ResultTimeout, match=r"last status: none known"):
        results.wait_for_result("jobs", "b" * 32, timeout=0.1)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True, "5", None])
def test_a_bad_timeout_is_refused(results, timeout):
    with pytest.raises(InvalidValue, match="timeout must be a number of seconds above 0"):
        results.wait_for_result("jobs", ID, timeout=timeout)


@pytest.mark.parametrize(
    ("qname", "id", "error"),
    [
        ("bad:name", ID, InvalidFormat),
        ("jobs", "short", InvalidFormat),
        ("", ID, MissingParameter),
        ("jobs", "", MissingParameter),
        (None, ID, MissingParameter),
        ("nosuchqueue", ID, QueueNotFound),
    ],
)
def test_bad_names_are_refused_by_both_calls(results, raw, ns, qname, id, error):
    before = sorted(raw.scan_iter(f"{ns}:*"))
    with pytest.raises(error):
        results.get_status(qname, id)
    with pytest.raises(error):
        results.wait_for_result(qname, id, timeout=1)
    assert sorted(raw.scan_iter(f"{ns}:*")) == before  # a refused call writes nothing


def test_sync_and_async_have_the_same_calls():
    import inspect

    def calls(cls: type) -> dict[str, list[str]]:
        return {
            n: list(inspect.signature(f).parameters)
            for n, f in vars(cls).items()
            if not n.startswith("_") and callable(f) and n != "aclose"
        }

    assert calls(Results) == calls(AsyncResults)


async def test_async_waiters_share_a_given_subscriber(redis_url, ns):
    async with AsyncRSMQ.from_url(redis_url, ns=ns) as client:
        await client.create_queue("jobs")
        log = EventLog(client.redis, ns)
        async with Subscriber(client.redis) as sub:
            results = AsyncResults(client, subscriber=sub)
            waits = [
                asyncio.create_task(results.wait_for_result("jobs", i * 32, timeout=10))
                for i in "ab"
            ]
            await until(lambda: len(sub._channels()) == 1, what="one channel for both")
            for i in "ab":
                await log.record(StatusEvent("done", "jobs", i * 32, result=i))
            assert [(await w).result for w in waits] == ["a", "b"]
            await results.aclose()  # leaves the given subscriber alone
            assert sub._task is not None


# The REST API, the websocket and the CLI --------------------------------------------------------


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


HOSTILE = "<img src=x onerror=alert(1)>"


def test_the_status_endpoint_and_the_websocket_give_the_result_as_data(client, raw, ns):
    mid = client.post("/api/queues/jobs/messages", json={"message": "x"}).json()["id"]
    with client.websocket_connect("/ws", headers=ORIGIN) as ws:
        ws.send_json({"type": "subscribe", "queue": "jobs", "ids": [mid]})
        next_frame(ws, "subscribed")
        assert next_frame(ws, "event")["event"]["status"] == "queued"
        record(raw, ns, StatusEvent("done", "jobs", mid, rc=1, result={"html": HOSTILE}))
        pushed = next_frame(ws, "event")["event"]
    assert (pushed["status"], pushed["result"]) == ("done", {"html": HOSTILE})
    answer = client.get(f"/api/queues/jobs/messages/{mid}/status")
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["result"] == {"html": HOSTILE}  # a JSON string, as given
    timeline = client.get(f"/api/queues/jobs/messages/{mid}/timeline").json()["events"]
    assert timeline[-1]["result"] == {"html": HOSTILE}


def test_the_status_endpoint_refuses_a_bad_id_as_the_timeline_does(client):
    """It answered 404 statusNotFound, as for a good id with no status yet."""
    for what in ("status", "timeline"):
        answer = client.get(f"/api/queues/jobs/messages/not-an-id/{what}")
        assert (answer.status_code, answer.json()["error"]) == (400, "invalidFormat"), what


def test_cli_status_prints_the_result_and_waits_for_it(cli, raw, ns):  # noqa: F811
    assert cli("create", "jobs").code == 0
    none = cli("status", "jobs", ID)
    assert (none.code, none.json) == (0, None)
    record(raw, ns, StatusEvent("processing", "jobs", ID, rc=1))
    late = cli("status", "jobs", ID, "--wait", "0.2")
    assert (late.code, late.out) == (1, "")
    assert late.err == f"rsmq: no result for jobs/{ID} within 0.2 s (last status: processing)\n"
    threading.Timer(0.2, record, (raw, ns, StatusEvent("done", "jobs", ID, result=[1]))).start()
    done = cli("status", "jobs", ID, "--wait", "10")
    assert (done.code, done.json["status"], done.json["result"]) == (0, "done", [1])
    assert cli("status", "jobs", ID).json["result"] == [1]


@pytest.mark.parametrize("wait", ["0", "-1", "soon", "nan", "inf"])
def test_cli_status_refuses_a_bad_wait(cli, wait):  # noqa: F811
    with pytest.raises(SystemExit) as exc:
        cli("status", "jobs", ID, "--wait", wait)
    assert exc.value.code == 2


def test_cli_status_of_a_missing_queue_or_bad_id(cli):  # noqa: F811
    assert cli("status", "nosuch", ID).err == "rsmq: queueNotFound: Queue not found\n"
    assert cli("status", "nosuch", "x").err.startswith("rsmq: invalidFormat: Invalid id format")


# A Redis Cluster: the events channel is SPUBLISHed on the queue's master ----------------------


@pytest.mark.parametrize("backend", ["cluster"], indirect=True)
def test_both_wait_for_a_result_on_a_cluster(backend, ns):
    event = StatusEvent("done", "jobs", ID, result={"on": "cluster"})

    async def in_async(client: AsyncRSMQ) -> Any:
        async with AsyncResults(client) as results:
            waiting = asyncio.create_task(results.wait_for_result("jobs", ID, timeout=10))
            await asyncio.sleep(0)  # subscribed or not, it must hear it or read it after
            await EventLog(client.redis, ns).record(event)
            return (await waiting).result

    with RSMQ.from_url(backend.url, ns=ns, cluster=True) as client:
        client.create_queue("jobs")
        later = threading.Timer(0.3, lambda: asyncio.run(_record_on(backend.url, ns, event)))
        later.start()
        try:
            assert Results(client).wait_for_result("jobs", ID, timeout=10).result == {
                "on": "cluster"
            }
        finally:
            later.join()
        client.delete_queue("jobs")
        client.create_queue("jobs")

    async def main() -> Any:
        async with AsyncRSMQ.from_url(backend.url, ns=ns, cluster=True) as aclient:
            found = await in_async(aclient)
            await aclient.delete_queue("jobs")
            return found

    assert asyncio.run(main()) == {"on": "cluster"}


async def _record_on(url: str, ns: str, event: StatusEvent) -> None:
    async with AsyncRSMQ.from_url(url, ns=ns, cluster=True) as client:
        await EventLog(client.redis, ns).record(event)
