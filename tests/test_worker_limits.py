"""A worker's time limits: JOB_TIMEOUT, and a handler's ``Retry(delay)``, in-process on the
suite's real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from tests import test_worker_inproc as inproc
from worker import Job, Retry
from worker.worker import Worker

# The in-process fixtures of test_worker_inproc, shared rather than copied.
ar, q, run = inproc.ar, inproc.q, inproc.run
until, server_ms = inproc.until, inproc.server_ms


async def events_of(w: Worker, ar: Any, ns: str, mid: str) -> list[dict[str, Any]]:
    await w.events.flush()
    entries = [json.loads(f[b"e"]) for _, f in await ar.xrange(f"{ns}:jobs:events")]
    return [e for e in entries if e["id"] == mid]


# JOB_TIMEOUT ---------------------------------------------------------------------------------


async def test_an_async_handler_past_job_timeout_is_cancelled_retried_then_dead_lettered(
    run, q, ar, ns
):
    cancelled: list[int] = []

    async def hang(job: Job) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(job.rc)
            raise

    w = await run(hang, job_timeout=0.2, max_receives=2, retry_backoff=0)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["dead"] == 1, what="dead-lettered")
    assert cancelled == [1, 2]
    c = w.counters
    assert (c["timed_out"], c["failed"], c["retried"], c["done"]) == (2, 2, 1, 0)
    said = [
        (e["status"], e["rc"], e.get("error"), e.get("retry_in"))
        for e in await events_of(w, ar, ns, mid)
        if e["status"] != "processing"
    ]
    late = "timed out after 0.2 s"
    assert said == [
        ("received", 1, None, None),
        ("failed", 1, late, None),
        ("retrying", 1, late, 0),
        ("received", 2, None, None),
        ("failed", 2, late, None),
        ("dead", 2, late, None),
    ]
    assert (await q.get_queue_attributes("jobs-dead")).msgs == 1


@pytest.mark.parametrize("then", ["returns", "asks to retry"])
async def test_a_handler_that_swallows_its_cancellation_has_still_timed_out(run, q, ar, ns, then):
    async def stubborn(job: Job) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        if then == "asks to retry":
            raise Retry(0)

    w = await run(stubborn, job_timeout=0.2, retry_backoff=60)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["retried"] == 1, what="the retry")
    assert (w.counters["done"], w.counters["timed_out"]) == (0, 1)
    # Hidden for the failure's backoff (60 s): neither deleted nor back at once.
    assert await ar.zscore(f"{ns}:jobs", mid) - await server_ms(ar) > 55_000


async def test_a_sync_handler_past_job_timeout_is_given_up_on_and_its_late_return_is_ignored(
    run, q, ar, ns, caplog
):
    release = threading.Event()

    def block(job: Job) -> None:
        if job.body == "stuck":
            release.wait(30)
            job.progress(0.9)  # from a job that already failed: not recorded

    # One slot: the thread given up on must not hold it.
    w = await run(block, job_timeout=0.2, retry_backoff=60, concurrency=1)
    mid = await q.send_message("jobs", "stuck")
    await until(lambda: w.counters["retried"] == 1, what="the retry")
    hidden_until = await ar.zscore(f"{ns}:jobs", mid)
    assert hidden_until - await server_ms(ar) > 55_000  # the backoff's 60 s, not a done
    other = await q.send_message("jobs", "fine")
    await until(lambda: w.counters["done"] == 1, what="the next job, in the freed slot")
    release.set()
    await until(lambda: "given up on returned" in caplog.text, what="the late return")
    # Still there, hidden as the retry left it: the late return deleted nothing.
    assert await ar.hexists(f"{ns}:jobs:Q", mid)
    assert await ar.zscore(f"{ns}:jobs", mid) == hidden_until
    c = w.counters
    assert (c["done"], c["failed"], c["timed_out"], c["retried"]) == (1, 1, 1, 1)
    said = [
        (e["status"], e.get("progress"), e.get("error")) for e in await events_of(w, ar, ns, mid)
    ]
    assert said == [
        ("received", None, None),
        ("processing", 0, None),
        ("failed", None, "timed out after 0.2 s"),
        ("retrying", None, "timed out after 0.2 s"),
    ]
    assert [e["status"] for e in await events_of(w, ar, ns, other)][-1] == "done"


# Retry(delay) --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_retry_hands_the_message_back_after_its_delay(run, q, ar, ns, kind):
    def later(job: Job) -> None:
        raise Retry(30)

    async def later_async(job: Job) -> None:
        raise Retry(30)

    w = await run(later_async if kind == "async" else later, retry_backoff=1)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["retried"] == 1, what="the retry")
    # Hidden 30 s, not the backoff's 1 s.
    assert 29_000 < await ar.zscore(f"{ns}:jobs", mid) - await server_ms(ar) <= 30_000
    assert (w.counters["failed"], w.counters["done"]) == (0, 0)
    said = [
        (e["status"], e.get("retry_in"), e.get("error")) for e in await events_of(w, ar, ns, mid)
    ]
    assert said[-1] == ("retrying", 30, None)
    assert "failed" not in [status for status, _, _ in said]


async def test_a_retry_still_counts_as_a_receive(run, q, ar, ns):
    receives: list[int] = []

    async def again(job: Job) -> None:
        receives.append(job.rc)
        raise Retry(0)

    w = await run(again, max_receives=3)
    mid = await q.send_message("jobs", "x")
    await until(lambda: w.counters["dead"] == 1, what="dead-lettered")
    assert receives == [1, 2, 3]
    assert w.counters["retried"] == 2
    dead = (await events_of(w, ar, ns, mid))[-1]
    assert (dead["status"], dead["error"]) == (
        "dead",
        "asked to retry in 0s at receive 3, and MAX_RECEIVES is 3",
    )


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [(0, 0), (0.2, 1), (30, 30), (2.5, 3), (Fraction(1, 3), 1), (9_999_999, 9_999_999)],
)
def test_a_retry_delay_is_whole_seconds_rounded_up(delay, seconds):
    assert Retry(delay).seconds == seconds
    assert Retry(delay).delay == delay


@pytest.mark.parametrize(
    ("delay", "error", "message"),
    [
        ("5", TypeError, "Retry(delay): delay must be a number of seconds, not '5'"),
        (Decimal(5), TypeError, "not Decimal('5')"),
        (None, TypeError, "Retry(delay): delay must be a number of seconds, not None"),
        (True, TypeError, "Retry(delay): delay must be a number of seconds, not True"),
        (-1, ValueError, "a finite number of seconds from 0 to 9999999, not -1"),
        (math.nan, ValueError, "from 0 to 9999999, not nan"),
        (math.inf, ValueError, "from 0 to 9999999, not inf"),
        (10_000_000, ValueError, "from 0 to 9999999, not 10000000"),
    ],
)
def test_a_bad_retry_delay_is_refused_where_it_is_raised(delay, error, message):
    with pytest.raises(error) as exc:
        Retry(delay)
    assert message in str(exc.value)
