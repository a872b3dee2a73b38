"""A worker's lifecycle: the handler module's ``startup`` and ``shutdown`` and the context
they share with every job, in-process and as a real process, on the suite's real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from realtime import live_workers
from rsmq_core import RSMQ
from support.workers import WorkerProcess, wait_for
from tests import test_worker_inproc as inproc
from tests.lifecycle import recorded
from worker import Job, example_lifecycle
from worker.__main__ import load_hooks, main
from worker.settings import Settings
from worker.worker import StartupFailed, Worker

# The in-process fixtures of test_worker_inproc, shared rather than copied.
ar, q, run = inproc.ar, inproc.q, inproc.run
until, server_ms = inproc.until, inproc.server_ms


# startup and shutdown ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_startup_and_shutdown_run_once_around_every_job_which_reaches_the_context(
    run, q, ns, redis_url, caplog, kind
):
    class Pool:  # stands for a database pool or an HTTP client
        closed = False

    calls: list[tuple[str, Any]] = []
    seen: list[Pool] = []
    finished: list[str] = []
    release = asyncio.Event()

    def open_pool(ctx: dict[str, Any]) -> None:
        with redis.Redis.from_url(redis_url) as r:  # nothing received before startup is over
            calls.append(("startup", int(r.hget(f"{ns}:jobs:Q", "totalrecv") or 0)))
        ctx["pool"] = Pool()

    def close_pool(ctx: dict[str, Any]) -> None:
        calls.append(("shutdown", len(finished)))
        ctx["pool"].closed = True

    async def open_async(ctx: dict[str, Any]) -> None:
        open_pool(ctx)

    async def close_async(ctx: dict[str, Any]) -> None:
        close_pool(ctx)

    async def handle(job: Job) -> None:
        assert not job.context["pool"].closed
        seen.append(job.context["pool"])
        if job.body == "last":
            await release.wait()
        finished.append(job.id)

    await q.send_message("jobs", "before the worker")
    startup, shutdown = (open_async, close_async) if kind == "async" else (open_pool, close_pool)
    w = await run(handle, startup=startup, shutdown=shutdown)
    await q.send_messages("jobs", ["a", "b"])
    await until(lambda: w.counters["done"] == 3, what="three jobs done")
    await q.send_message("jobs", "last")
    await until(lambda: len(seen) == 4, what="the last job in flight")
    caplog.set_level(logging.INFO, logger="worker.worker")
    w.stop()
    await until(lambda: "waiting up to" in caplog.text, what="the stop to wait for the job")
    assert calls == [("startup", 0)]  # not while a job is in flight
    release.set()
    await until(lambda: len(calls) == 2, what="the shutdown")
    assert calls == [("startup", 0), ("shutdown", 4)]
    assert w.counters["failed"] == 0
    assert all(pool is w.context["pool"] for pool in seen) and w.context["pool"].closed


async def test_a_startup_that_raises_stops_the_worker_before_any_receive(redis_url, ns, q, ar):
    shut: list[dict[str, Any]] = []

    async def no_database(ctx: dict[str, Any]) -> None:
        raise ConnectionRefusedError("the database is down")

    await q.send_message("jobs", "x")
    w = Worker(
        Settings(redis_url=redis_url, ns=ns),
        lambda job: None,
        startup=no_database,
        shutdown=shut.append,
    )
    with pytest.raises(StartupFailed) as exc:
        async with asyncio.timeout(10):
            await w.run()
    assert str(exc.value) == (
        "tests.test_worker_lifecycle.test_a_startup_that_raises_stops_the_worker_before_any_"
        "receive.<locals>.no_database raised ConnectionRefusedError: the database is down"
    )
    assert (await q.get_queue_attributes("jobs")).totalrecv == 0
    assert await live_workers(ar, ns) == []
    assert shut == []  # what startup half set up is its own to undo


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """An importable module ``fake_lifecycle`` with a handler, for hooks to be added to."""
    module = types.ModuleType("fake_lifecycle")
    module.handle = lambda job: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_lifecycle", module)
    yield module


def test_hooks_are_found_in_the_handlers_module(fake_module):
    assert load_hooks("fake_lifecycle:handle") == (None, None)
    fake_module.shutdown = lambda ctx: None
    assert load_hooks("fake_lifecycle:handle") == (None, fake_module.shutdown)


@pytest.mark.parametrize(
    ("name", "hook", "message"),
    [
        ("startup", "postgres://db", "fake_lifecycle.startup is not a function (str)"),
        (
            "startup",
            lambda: None,
            "fake_lifecycle.startup must take one argument, the context dict: def startup(ctx)",
        ),
        (
            "shutdown",
            lambda ctx, pool: None,
            "fake_lifecycle.shutdown must take one argument, the context dict: def shutdown(ctx)",
        ),
    ],
)
def test_a_hook_that_cannot_be_called_is_a_bad_setting(
    fake_module, monkeypatch, capsys, name, hook, message
):
    setattr(fake_module, name, hook)
    monkeypatch.setenv("HANDLER", "fake_lifecycle:handle")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    assert main([]) == 2
    assert capsys.readouterr().err == (
        f"worker: bad setting: HANDLER='fake_lifecycle:handle': {message}\n"
    )


@pytest.fixture
def spawn(redis_url: str, ns: str) -> Iterator[Any]:
    procs: list[WorkerProcess] = []

    def make(**settings: Any) -> WorkerProcess:
        w = WorkerProcess(redis_url, ns, handler="tests.lifecycle:handle", **settings)
        procs.append(w)
        return w

    yield make
    for w in procs:
        w.cleanup()


def test_a_worker_process_runs_its_modules_startup_and_shutdown_once(spawn, r, ns, redis_url):
    w = spawn().start()
    with RSMQ.from_url(redis_url, ns=ns, realtime=True) as client:
        ids = client.send_messages("jobs", ["a", "b", "c"])
    wait_for(lambda: len(recorded(r, ns)) == 4, what="startup and three jobs")
    assert w.stop() == 0, w.output()  # SIGTERM
    (startup, *jobs, shutdown) = recorded(r, ns)
    token = startup[1]
    assert startup == ["startup", token] and shutdown == ["shutdown", token]
    assert sorted(jobs) == sorted(["job", mid, token] for mid in ids)
    assert " raised " not in w.output()


def test_a_shutdown_that_raises_is_logged_and_the_worker_still_stops(spawn, r, ns):
    w = spawn(shutdown_fail="the pool would not close").start()
    assert w.stop() == 0
    assert [call[0] for call in recorded(r, ns)] == ["startup", "shutdown"]
    said = "tests.lifecycle.shutdown raised RuntimeError: the pool would not close"
    assert said in w.output()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_a_startup_that_raises_stops_the_process_with_one_line(spawn, r, ns, redis_url, level):
    with RSMQ.from_url(redis_url, ns=ns) as client:
        client.create_queue("jobs")
        client.send_message("jobs", "x")
        w = spawn(startup_fail="no database", log_level=level).start(ready=False)
        assert w.proc.wait(30) == 1
        assert client.get_queue_attributes("jobs").totalrecv == 0
    out = w.output()
    said = [line for line in out.splitlines() if "cannot start" in line]
    assert len(said) == 1, out
    assert said[0].endswith(
        "cannot start: tests.lifecycle.startup raised RuntimeError: no database"
    )
    # The traceback only when asked for.
    assert ("Traceback" in out) == (level == "DEBUG"), out
    assert recorded(r, ns) == []


# The example module ----------------------------------------------------------------------------


async def test_the_example_lifecycle_module_works_as_documented(
    run, q, ar, ns, redis_url, monkeypatch
):
    monkeypatch.setenv("REDIS_URL", redis_url)
    startup, shutdown = load_hooks("worker.example_lifecycle:handle")
    w = await run(example_lifecycle.handle, startup=startup, shutdown=shutdown)
    counted = await q.send_message("jobs", "three little words")
    busy = await q.send_message("jobs", json.dumps({"busy": 20}))
    await until(lambda: (w.counters["done"], w.counters["retried"]) == (1, 1), what="both")
    assert await ar.hget(example_lifecycle.RESULTS, counted) == b"3"
    await ar.hdel(example_lifecycle.RESULTS, counted)
    assert 19_000 < await ar.zscore(f"{ns}:jobs", busy) - await server_ms(ar) <= 20_000
    w.stop()
    await until(lambda: "results" not in w.context, what="the pool closed by shutdown")
