"""Periodic schedules: the library (sync and async), the worker's SCHEDULES, and worker
processes firing them together."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
import redis

from realtime import Wakeup
from rsmq_core import (
    RSMQ,
    AsyncRSMQ,
    InvalidFormat,
    InvalidValue,
    MessageNotString,
    MessageTooLong,
    MissingParameter,
    QueueNotFound,
    RSMQError,
    Schedule,
    cli,
)
from rsmq_core import schedules as sched
from rsmq_core._protocol import sent_ms
from support.web import WebProcess
from support.workers import WorkerProcess, wait_for
from tests.test_actions import BEARER, TOKEN, logged_in
from tests.test_browser import CHROMIUM, dashboard
from worker import scheduler
from worker.settings import SettingError, Settings


def keys_of(r: redis.Redis, ns: str) -> set[str]:
    return set(r.scan_iter(f"{ns}:*", count=10_000))


def due_now(r: redis.Redis, ns: str, name: str, ago_ms: int = 0) -> int:
    """Make a schedule's next tick due (``ago_ms`` in the past, by the server's clock)."""
    s, us = r.time()
    tick = s * 1000 + us // 1000 - ago_ms
    r.zadd(f"{ns}:@schedules:next", {name: tick})
    return tick


def heard(sub: redis.client.PubSub, timeout: float = 5.0) -> str | None:
    """The next message published on the subscribed channel, waited for up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sub.get_message(timeout=0.1)
        if got is not None and got["type"] == "message":
            return str(got["data"])
    return None


def test_add_list_remove(rsmq, r) -> None:
    rsmq.create_queue("jobs")
    before = time.time() * 1000
    added = rsmq.add_schedule("tick", "jobs", "hello", every=30)
    assert added == Schedule("tick", "jobs", "hello", None, 30, "once", added.next_fire)
    assert added.next_fire % 30_000 == 0 and before < added.next_fire <= before + 31_000
    cron = rsmq.add_schedule("nightly", "jobs", "{}", cron="0  3 * * *", catch_up="skip")
    assert cron.cron == "0 3 * * *" and cron.next_fire % 86_400_000 == 3 * 3_600_000
    assert [s.name for s in rsmq.list_schedules()] == ["nightly", "tick"]
    assert rsmq.list_schedules()[1] == added
    # RSMQ's queue list (and Node's listQueues, which reads the same set) sees no schedule.
    assert rsmq.list_queues() == ["jobs"]
    assert rsmq.remove_schedule("tick") is True
    assert rsmq.remove_schedule("tick") is False
    assert [s.name for s in rsmq.list_schedules()] == ["nightly"]
    rsmq.remove_schedule("nightly")
    assert keys_of(r, rsmq.ns) == {f"{rsmq.ns}:jobs:Q", f"{rsmq.ns}:QUEUES"}


def test_add_again_keeps_the_next_tick_unless_the_timing_changes(rsmq, r) -> None:
    rsmq.create_queue("jobs")
    rsmq.add_schedule("tick", "jobs", "a", every=60)
    tick = due_now(r, rsmq.ns, "tick", ago_ms=5000)  # a tick missed while no worker ran
    again = rsmq.add_schedule("tick", "jobs", "b", every=60, catch_up="skip")
    assert again.next_fire == tick and again.message == "b" and again.catch_up == "skip"
    moved = rsmq.add_schedule("tick", "jobs", "b", every=120)
    assert moved.next_fire != tick and moved.next_fire % 120_000 == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"cron": "* * *"}, InvalidFormat, "5 fields"),
        ({"cron": "61 * * * *"}, InvalidFormat, "Bad minute"),
        ({"cron": "* * * * * *"}, InvalidFormat, "5 fields"),
        ({"cron": 5}, InvalidFormat, "got int"),
        ({"every": 0}, InvalidValue, "every must be between 1"),
        ({"every": True}, InvalidValue, "not a whole number"),
        ({"every": "30s"}, InvalidValue, "not a whole number"),
        ({}, MissingParameter, "cron or every"),
        ({"cron": "* * * * *", "every": 5}, MissingParameter, "not both"),
        ({"every": 5, "catch_up": "all"}, InvalidValue, "catch_up"),
        ({"every": 5, "name": "a b"}, InvalidFormat, "schedule name"),
        ({"every": 5, "name": ""}, MissingParameter, "schedule name"),
        ({"every": 5, "qname": "no such"}, InvalidFormat, "qname"),
        ({"every": 5, "qname": "missing"}, QueueNotFound, "'missing'"),
        ({"every": 5, "message": 7}, MessageNotString, "int"),
        ({"every": 5, "message": "x" * 70_000}, MessageTooLong, ""),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(rsmq, r, kwargs, error, text) -> None:
    rsmq.create_queue("jobs")
    before = keys_of(r, rsmq.ns)
    args = {"name": "s", "qname": "jobs", "message": "m", **kwargs}
    with pytest.raises(error) as raised:
        rsmq.add_schedule(args.pop("name"), args.pop("qname"), args.pop("message"), **args)
    assert text in raised.value.explain()
    assert keys_of(r, rsmq.ns) == before
    assert rsmq.list_schedules() == []


def test_remove_checks_the_name(rsmq) -> None:
    with pytest.raises(InvalidFormat, match="schedule name"):
        rsmq.remove_schedule("a:b")


def test_a_cluster_client_is_refused_with_a_reason() -> None:
    with pytest.raises(RSMQError, match="standalone Redis") as raised:
        sched.check_cluster(True)
    assert "slots" in raised.value.explain()


def test_a_fired_tick_stores_what_a_send_stores_and_wakes_subscribers(rsmq, r) -> None:
    rsmq.create_queue("jobs", delay=2)
    rsmq.add_schedule("tick", "jobs", "héllo", every=3600)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(rsmq.keys("jobs").channel)
    tick = due_now(r, rsmq.ns, "tick")
    firing = rsmq.fire_schedules()
    (fired,) = firing.fired
    assert (fired.name, fired.queue, fired.tick, fired.outcome) == ("tick", "jobs", tick, "sent")
    sent_id = rsmq.send_message("jobs", "héllo")
    q = rsmq.keys("jobs")
    for mid in (fired.id, sent_id):  # the same fields, the queue's delay, the same counters
        assert len(mid) == 32 and r.hget(q.hash, mid) == "héllo"
        assert r.zscore(q.zset, mid) == pytest.approx(sent_ms(mid) + 2000, abs=2)
    assert rsmq.get_queue_attributes("jobs").totalsent == 2
    assert heard(sub) == "1"  # the queue's size, as a send says
    sub.close()
    # The tick moved on to the next hour, and is not fired again.
    next_fire = rsmq.list_schedules()[0].next_fire
    assert next_fire % 3_600_000 == 0 and next_fire > tick
    assert firing.wait == pytest.approx((next_fire - tick) / 1000, abs=1)  # asleep until then
    again = rsmq.fire_schedules()
    assert again.fired == [] and 0 < again.wait <= 3600


def test_one_tick_is_claimed_once(rsmq, r) -> None:
    rsmq.create_queue("jobs")
    rsmq.add_schedule("tick", "jobs", "m", every=60)
    tick = due_now(r, rsmq.ns, "tick")
    text = r.hget(f"{rsmq.ns}:@schedules", "tick")
    assert len(rsmq.fire_schedules().fired) == 1
    # A second worker that read the same due tick before the first claimed it: its claim
    # finds the tick moved on, and sends nothing.
    q = rsmq.keys("jobs")
    call = sched._call(
        rsmq.ns,
        "fire",
        "tick",
        text,
        tick,
        tick + 60_000,
        "1",
        "",
        "x" * 22,
        "m",
        more=[q.zset, q.hash],
    )
    assert rsmq._call(call) == [b"taken"]
    assert r.zcard(q.zset) == 1


@pytest.mark.parametrize(("catch_up", "sent"), [("once", 1), ("skip", 0)])
def test_missed_ticks(rsmq, r, catch_up, sent) -> None:
    rsmq.create_queue("jobs")
    rsmq.add_schedule("tick", "jobs", "m", every=1, catch_up=catch_up)
    due_now(r, rsmq.ns, "tick", ago_ms=10_000)  # ten ticks missed while no worker ran
    (fired,) = rsmq.fire_schedules().fired
    assert fired.outcome == ("sent" if sent else "skipped")
    assert rsmq.get_queue_attributes("jobs").msgs == sent
    s, _ = r.time()
    assert rsmq.list_schedules()[0].next_fire > s * 1000  # moved past now, not one tick on


def test_a_tick_merely_late_is_sent_under_skip(rsmq, r) -> None:
    rsmq.create_queue("jobs")
    rsmq.add_schedule("tick", "jobs", "m", every=60, catch_up="skip")
    due_now(r, rsmq.ns, "tick", ago_ms=500)
    assert [f.outcome for f in rsmq.fire_schedules().fired] == ["sent"]


def test_a_deleted_queue_moves_the_tick_on(rsmq, r) -> None:
    rsmq.create_queue("jobs")
    rsmq.add_schedule("tick", "jobs", "m", every=60)
    rsmq.delete_queue("jobs")
    tick = due_now(r, rsmq.ns, "tick")
    (fired,) = rsmq.fire_schedules().fired
    assert (fired.outcome, fired.id) == ("queueNotFound", None)
    assert rsmq.list_schedules()[0].next_fire > tick  # not due again at once: no spin
    assert rsmq.fire_schedules().fired == []
    assert not r.exists(rsmq.keys("jobs").zset)


def test_a_message_longer_than_a_lowered_maxsize(rsmq, r) -> None:
    rsmq.create_queue("jobs")
    rsmq.add_schedule("tick", "jobs", "m" * 2000, every=60)
    rsmq.set_queue_attributes("jobs", maxsize=1024)
    due_now(r, rsmq.ns, "tick")
    assert [f.outcome for f in rsmq.fire_schedules().fired] == ["messageTooLong"]
    assert rsmq.get_queue_attributes("jobs").msgs == 0


def test_next_fire_is_utc() -> None:
    # 2026-03-29 01:30 UTC: Europe's clocks change that night; UTC's do not.
    at = 1_774_747_800_000
    assert sched.next_fire({"cron": "0 2 * * *"}, at) == at + 30 * 60_000
    assert sched.next_fire({"every": 7}, 7_000) == 14_000
    assert sched.next_fire({"every": 7}, 6_999) == 7_000


# The CLI ---------------------------------------------------------------------------------------


def rsmq_cli(capsys, redis_url: str, ns: str, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--url", redis_url, "--ns", ns, "schedule", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_add_list_remove(capsys, redis_url, ns) -> None:
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("jobs")
        code, out, err = rsmq_cli(
            capsys,
            redis_url,
            ns,
            "add",
            "nightly",
            "jobs",
            "{}",
            "--cron",
            "0 3 * * *",
            "--catch-up",
            "skip",
        )
        assert (code, err) == (0, "")
        added = json.loads(out)
        assert added == q.list_schedules()[0].to_json()
        assert (added["cron"], added["catch_up"], added["every"]) == ("0 3 * * *", "skip", None)
        code, out, _ = rsmq_cli(capsys, redis_url, ns, "add", "tick", "jobs", "hi", "--every", "5")
        assert code == 0 and json.loads(out)["next_fire"] % 5000 == 0
        code, out, _ = rsmq_cli(capsys, redis_url, ns, "list")
        assert [s["name"] for s in json.loads(out)] == ["nightly", "tick"]
        assert rsmq_cli(capsys, redis_url, ns, "remove", "tick")[:2] == (0, "true\n")
        assert rsmq_cli(capsys, redis_url, ns, "remove", "tick")[:2] == (0, "false\n")
        assert [s.name for s in q.list_schedules()] == ["nightly"]


@pytest.mark.parametrize(
    ("argv", "err"),
    [
        (["--cron", "* *"], "rsmq: invalidFormat: Invalid cron format (a cron expression has 5"),
        (["--every", "0"], "rsmq: invalidValue: every must be between 1 and 9999999 (got 0)"),
        (["--every", "1", "--catch-up", "all"], "rsmq: invalidValue: catch_up must be"),
    ],
)
def test_cli_refuses_bad_schedules(capsys, redis_url, ns, argv, err) -> None:
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("jobs")
        code, out, got = rsmq_cli(capsys, redis_url, ns, "add", "s", "jobs", "m", *argv)
        assert (code, out) == (1, "") and got.startswith(err), got
        assert q.list_schedules() == []
    code, _, got = rsmq_cli(capsys, redis_url, ns, "add", "s", "nope", "m", "--every", "1")
    assert code == 1 and got.startswith("rsmq: queueNotFound: No queue 'nope' to schedule for")
    with pytest.raises(SystemExit):  # argparse: neither --cron nor --every
        rsmq_cli(capsys, redis_url, ns, "add", "s", "jobs", "m")
    assert "one of the arguments --cron --every is required" in capsys.readouterr().err


# The REST API and the dashboard's routes ----------------------------------------------------------


def test_api_add_list_remove_with_the_token(make_client, redis_url, ns) -> None:
    api = make_client(api_token=TOKEN)
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("rep")
        body = {"name": "tick", "queue": "rep", "message": "hi", "every": 60}
        assert api.post("/api/schedules", json=body).status_code == 401  # no token
        added = api.post("/api/schedules", json=body, headers=BEARER)
        assert added.status_code == 201, added.text
        assert added.json() == q.list_schedules()[0].to_json()
        listed = api.get("/api/schedules", headers=BEARER).json()["schedules"]
        assert [(s["name"], s["every"], s["catch_up"]) for s in listed] == [("tick", 60, "once")]
        assert api.delete("/api/schedules/tick").status_code == 401
        gone = api.delete("/api/schedules/tick", headers=BEARER)
        assert gone.json() == {"removed": True}
        assert api.delete("/api/schedules/tick", headers=BEARER).json() == {"removed": False}
        assert q.list_schedules() == []


@pytest.mark.parametrize(
    ("body", "status", "error", "text"),
    [
        ({"queue": "rep", "message": "m", "every": 1}, 400, "missingParameter", "name"),
        (
            {"name": "s", "queue": "rep", "message": "m", "cron": "* *"},
            400,
            "invalidFormat",
            "Invalid cron format",
        ),
        ({"name": "s", "queue": "rep", "message": "m", "every": 0}, 400, "invalidValue", "every"),
        ({"name": "s", "queue": "rep", "message": "m"}, 400, "missingParameter", "cron or every"),
        (
            {"name": "s", "queue": "rep", "message": "m", "every": 1, "at": 2},
            400,
            "unknownField",
            "at",
        ),
        (
            {"name": "s", "queue": "rep", "message": "m", "every": 1, "catch_up": None},
            400,
            "invalidValue",
            "catch_up may not be null",
        ),
        ({"name": "s", "queue": "nope", "message": "m", "every": 1}, 404, "queueNotFound", ""),
        # Refused as the API's send refuses it: an empty job every tick is a slip of a form.
        (
            {"name": "s", "queue": "rep", "message": "", "every": 1},
            400,
            "emptyMessage",
            "the message is empty",
        ),
        (
            {"name": "s", "queue": "rep", "message": "x" * 70_000, "every": 1},
            413,
            "messageTooLong",
            "",
        ),
    ],
)
def test_api_refuses_bad_schedules(make_client, redis_url, ns, body, status, error, text) -> None:
    api = make_client(api_token=TOKEN, max_body=1_000_000)
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("rep")
        answer = api.post("/api/schedules", json=body, headers=BEARER)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"] == error
        assert text in answer.json()["message"] + answer.json().get("detail", "")
        assert q.list_schedules() == []


def test_the_dashboard_removes_a_schedule_with_its_login_and_csrf_token(
    make_client, redis_url, ns
) -> None:
    closed = make_client(api_token=TOKEN)
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("rep")
        q.add_schedule("tick", "rep", "m", every=60)
        assert closed.delete("/dashboard/api/schedules/tick").status_code == 401
        csrf = logged_in(closed)
        refused = closed.delete("/dashboard/api/schedules/tick", headers={"x-csrf-token": "x.y"})
        assert (refused.status_code, refused.json()["error"]) == (403, "csrf")
        listed = closed.get("/dashboard/api/schedules").json()["schedules"]
        assert [s["name"] for s in listed] == ["tick"]
        gone = closed.delete("/dashboard/api/schedules/tick", headers={"x-csrf-token": csrf})
        assert gone.json() == {"removed": True}
        assert q.list_schedules() == []


# The worker's SCHEDULES ------------------------------------------------------------------------


def test_schedules_setting() -> None:
    raw = json.dumps(
        [
            {"queue": "jobs", "every": 30, "message": "hi"},
            {
                "name": "five",
                "queue": "jobs",
                "cron": "*/5 * * * *",
                "message": "{}",
                "catch_up": "skip",
            },
        ]
    )
    got = Settings.from_env({"HANDLER": "a:b", "SCHEDULES": raw}).schedules
    assert got == (
        Schedule("jobs-every-30", "jobs", "hi", None, 30, "once", None),
        Schedule("five", "jobs", "{}", "*/5 * * * *", None, "skip", None),
    )
    assert Settings.from_env({"HANDLER": "a:b"}).schedules == ()
    # Unnamed for a queue of the longest name: a name of at most 160 characters all the same
    raw = json.dumps([{"queue": "q" * 160, "cron": "0 3 * * *", "message": "m"}])
    (long,) = Settings.from_env({"HANDLER": "a:b", "SCHEDULES": raw}).schedules
    assert len(long.name) == 160 and long.name.startswith("q" * 100)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("every 30s", "SCHEDULES is not JSON"),
        ('{"queue": "jobs"}', "SCHEDULES must be a JSON list"),
        ("[1]", "SCHEDULES entry 0 (1): a schedule is a JSON object"),
        (
            '[{"queue": "jobs", "every": 30}]',
            'entry 0 ({"queue": "jobs", "every": 30}): no \'message\'',
        ),
        ('[{"every": 30, "message": "m"}]', "no 'queue'"),
        ('[{"queue": "jobs", "every": 30, "message": "m", "at": 1}]', "unknown field 'at'"),
        (
            '[{"queue": "jobs", "cron": "61 * * * *", "message": "m"}]',
            "Invalid cron format (Bad minute in '61 * * * *')",
        ),
        ('[{"queue": "jobs", "every": "30", "message": "m"}]', "every must be between 1"),
        ('[{"queue": "jobs", "message": "m"}]', "A schedule needs cron or every"),
        ('[{"queue": "a b", "every": 1, "message": "m"}]', "Invalid qname format"),
        (
            '[{"name": "x y", "queue": "jobs", "every": 1, "message": "m"}]',
            "Invalid schedule name format",
        ),
        ('[{"queue": "jobs", "every": 1, "message": "m", "catch_up": "all"}]', "catch_up must be"),
        (
            '[{"queue": "jobs", "every": 1, "message": "a"}, {"queue": "jobs", "every": 1, '
            '"message": "b"}]',
            "SCHEDULES entry 1: a second schedule named 'jobs-every-1'",
        ),
    ],
)
def test_schedules_setting_errors_name_the_entry(raw, error) -> None:
    with pytest.raises(SettingError) as raised:
        Settings.from_env({"HANDLER": "a:b", "SCHEDULES": raw})
    assert error in str(raised.value)


def test_a_schedules_setting_deeper_than_json_goes_is_a_bad_setting() -> None:
    """Python 3.11 and 3.12's json.loads raise RecursionError on it (then: "SCHEDULES is not
    JSON"); 3.13's reads it (then: entry 0 is not an object). A sentence either way."""
    with pytest.raises(
        SettingError, match=r"^SCHEDULES (is not JSON|entry 0 .*: a schedule is a JSON object)"
    ):
        Settings.from_env({"HANDLER": "a:b", "SCHEDULES": "[" * 5000 + "]" * 5000})


def test_schedules_setting_on_a_cluster_is_refused() -> None:
    env = {
        "HANDLER": "a:b",
        "REDIS_CLUSTER": "1",
        "SCHEDULES": '[{"queue": "jobs", "every": 1, "message": "m"}]',
    }
    with pytest.raises(SettingError, match="standalone Redis"):
        Settings.from_env(env)


# The worker's loop -----------------------------------------------------------------------------


async def test_a_schedule_whose_queue_was_deleted_is_logged_and_moved_on(
    redis_url, ns, r, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="worker.scheduler")
    declared = Schedule("gone", "jobs", "m", None, 1, "once", None)
    missing = Schedule("never", "nowhere", "m", None, 1, "once", None)
    async with AsyncRSMQ.from_url(redis_url, ns=ns) as q:
        await q.create_queue("jobs")
        stopping, wake = asyncio.Event(), Wakeup()
        loop = asyncio.create_task(scheduler.run(q, (declared, missing), stopping, wake, 60))
        try:
            await wait_async(lambda: "schedule gone: sent" in caplog.text, "a tick sent")
            await q.delete_queue("jobs")
            await wait_async(lambda: "queue jobs does not exist" in caplog.text, "the warning")
            before = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
            await asyncio.sleep(1.5)  # what the loop does with a gone queue for 1.5 s
            after = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        finally:
            stopping.set()
            wake.set()  # as Worker.stop() sets every wakeup
            await asyncio.wait_for(loop, 5)
    assert "schedule never not declared: there is no queue nowhere" in caplog.text
    assert after - before < 20  # a call or two a tick (shared server: others' calls count)
    assert not loop.exception()


async def test_a_definition_that_is_not_ours_is_logged_and_the_loop_lives_on(
    redis_url, ns, r, caplog
) -> None:
    r.hset(f"{ns}:@schedules", "bad", "not json")  # written by hand, by someone else
    r.zadd(f"{ns}:@schedules:next", {"bad": 0})
    async with AsyncRSMQ.from_url(redis_url, ns=ns) as q:
        stopping, wake = asyncio.Event(), Wakeup()
        loop = asyncio.create_task(scheduler.run(q, (), stopping, wake, 60))
        try:
            await wait_async(lambda: "schedule bad: its stored definition" in caplog.text, "it")
            await q.create_queue("jobs")
            await q.add_schedule("good", "jobs", "m", every=3600)
            assert not loop.done()
        finally:
            stopping.set()
            wake.set()
            await asyncio.wait_for(loop, 5)


async def test_a_definition_that_is_not_ours_stops_no_other_schedule(
    redis_url, ns, r, caplog
) -> None:
    """Due first (its tick 0), it made every round fail: no schedule fired at all."""
    r.hset(f"{ns}:@schedules", "bad", "not json")
    r.hset(f"{ns}:@schedules", "odd", '{"queue": "jobs", "every": 1}')  # no message
    r.zadd(f"{ns}:@schedules:next", {"bad": 0, "odd": 0})
    async with AsyncRSMQ.from_url(redis_url, ns=ns) as q:
        await q.create_queue("jobs")
        await q.add_schedule("good", "jobs", "m", every=1)
        stopping, wake = asyncio.Event(), Wakeup()
        loop = asyncio.create_task(scheduler.run(q, (), stopping, wake, 60))
        try:
            sent = lambda: int(r.hget(f"{ns}:jobs:Q", "totalsent") or 0)  # noqa: E731
            await wait_async(lambda: sent() >= 1, "a tick sent")
            assert "schedule bad: its stored definition is not one this worker reads" in caplog.text
            assert "schedule odd: its stored definition" in caplog.text
            assert "could not fire the due ticks" not in caplog.text
            # Listed without them (they were a 500 and a traceback), and removable.
            assert [s.name for s in await q.list_schedules()] == ["good"]
            assert await q.remove_schedule("bad") and await q.remove_schedule("odd")
            assert not r.hexists(f"{ns}:@schedules", "bad")
        finally:
            stopping.set()
            wake.set()
            await asyncio.wait_for(loop, 5)


async def wait_async(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# Worker processes -------------------------------------------------------------------------------


def test_three_workers_send_each_tick_once_and_a_kill_changes_nothing(redis_url, ns, r) -> None:
    every_second = json.dumps([{"name": "tick", "queue": "ticks", "every": 1, "message": "t"}])
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("ticks")  # no worker consumes it: what was sent stays to be counted
        workers = [WorkerProcess(redis_url, ns, schedules=every_second) for _ in range(3)]
        try:
            for w in workers:  # all three declare the schedule at once
                w.start(ready=False)
            for w in workers:
                w.wait_ready()
            start = server_ms(r)
            wait_for(lambda: server_ms(r) >= start + 3000, 5, "three seconds")
            workers[0].kill()
            wait_for(lambda: server_ms(r) >= start + 6000, 5, "three seconds more")
            end = server_ms(r)
            # Every tick of the window is sent, wherever it was: the last one too.
            wait_for(lambda: any(sent_ms(i) >= end for i in ids(r, q)), 5, "a tick after")
        finally:
            for w in workers:
                w.cleanup()
        sent = sorted(sent_ms(i) for i in ids(r, q))
        assert [s.name for s in q.list_schedules()] == ["tick"]  # declared thrice, stored once
    in_window = [t for t in sent if start <= t < start + 6000]
    assert 5 <= len(in_window) <= 7, in_window
    per_tick = Counter(int(t // 1000) for t in sent)
    assert max(per_tick.values()) == 1, per_tick  # never two for one tick
    first, last = min(per_tick), max(per_tick)
    assert set(per_tick) == set(range(first, last + 1))  # and none lost, the kill included


def server_ms(r: redis.Redis) -> float:
    s, us = r.time()
    return s * 1000 + us / 1000


def ids(r: redis.Redis, q: RSMQ) -> list[str]:
    return [str(i) for i in r.zrange(q.keys("ticks").zset, 0, -1)]


# The dashboard, in a real Chromium ----------------------------------------------------------------


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: install Debian's chromium")
@pytest.mark.timeout(120)
def test_the_dashboard_lists_schedules_with_their_next_fire_time_and_removes_one(
    redis_url, ns
) -> None:
    from playwright.sync_api import expect

    token = "browser-token-browser-token"
    web = WebProcess(redis_url, ns, API_TOKEN=token)
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("reports")
        nightly = q.add_schedule("nightly", "reports", "{}", cron="0 3 * * *")
        q.add_schedule("tick", "reports", "hi", every=30, catch_up="skip")
        try:
            with dashboard(web, token) as (page, errors):
                rows = page.locator("#schedules tbody tr")
                expect(rows).to_have_count(2, timeout=10_000)
                first = page.locator('#schedules tr[data-name="nightly"]')
                expect(first).to_contain_text("cron 0 3 * * * (UTC)")
                assert nightly.next_fire is not None
                iso = datetime.fromtimestamp(nightly.next_fire / 1000, UTC)
                stamp = iso.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                expect(first.locator("time")).to_have_attribute("datetime", stamp)
                tick = page.locator('#schedules tr[data-name="tick"]')
                expect(tick).to_contain_text("every 30 s")
                expect(tick).to_contain_text("skip")
                tick.get_by_role("button", name="Remove").click()
                expect(page.locator("#schedules-status")).to_have_text("Remove tick: removed")
                expect(rows).to_have_count(1)
                assert [s.name for s in q.list_schedules()] == ["nightly"]
                assert errors == []
        finally:
            web.stop()


def test_an_idle_realtime_worker_hears_a_schedule_added_and_removed(redis_url, ns, r) -> None:
    """With no schedule it sends Redis no script call; one added later (by another process)
    wakes it at once, and its removal stops the sends."""
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("ticks")
        worker = WorkerProcess(redis_url, ns).start()
        try:
            q.add_schedule("tick", "ticks", "t", every=1)
            wait_for(lambda: ids(r, q), 5, "the first tick")
            q.remove_schedule("tick")
            sent = len(ids(r, q))  # a fire call after the remove finds no definition: no send
            deadline = server_ms(r) + 2500
            wait_for(lambda: server_ms(r) >= deadline, 5, "two ticks' time")
            assert len(ids(r, q)) == sent
            assert "schedule tick: sent" in worker.stdout() + worker.stderr()
        finally:
            worker.cleanup()
