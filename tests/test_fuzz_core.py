"""Hostile input for every public rsmq_core call (hypothesis), on the sync and async client.

Each call gets arguments that mix valid values with wrong types, bools, floats, huge and
negative numbers, empty and unicode strings, ids of the wrong shape and None. Whatever comes,
the call either works or raises one of the documented RSMQError subclasses with a message;
nothing else escapes (no TypeError, no redis-py or Lua error), and a refused call leaves every
key of the namespace exactly as it was.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rsmq_core
from rsmq_core import RSMQ, AsyncRSMQ, InvalidFormat, RSMQError
from rsmq_core._protocol import ID_RE, QNAME_RE
from tests.test_validation import snapshot

DOCUMENTED = {
    cls
    for name in rsmq_core.__all__
    if isinstance(cls := getattr(rsmq_core, name), type)
    and issubclass(cls, RSMQError)
    and cls is not RSMQError
}
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Word(str):
    """A str subclass, as a StrEnum member is."""


class Number(enum.IntEnum):
    TEN = 10


# Markers replaced, inside the test, by ids of real messages of the prepared queues.
LIVE_ID, RECEIVED_ID = "<live id>", "<received id>"

hostile = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=8),
    st.text(max_size=12),
    st.sampled_from(["", " ", "\x00", "\ud800", "é", "🎉", "1", "-1", "1e3", "NaN", "q\n"]),
    st.lists(st.integers(), max_size=2),
    st.just({"a": 1}),
    st.just(Word("q")),
    st.just(Number.TEN),
)
qnames = st.one_of(
    st.sampled_from(["q", "dead", "missing", Word("q"), "a" * 160, "a" * 161, "co:lon"]),
    st.from_regex(QNAME_RE, fullmatch=True),
    hostile,
)
ids = st.one_of(
    st.sampled_from([LIVE_ID, RECEIVED_ID, "a" * 31, "a" * 33, "é" * 32, ":" * 32]),
    st.from_regex(ID_RE, fullmatch=True),
    hostile,
)
seconds = st.one_of(
    st.none(), st.integers(-2, 3), st.sampled_from([0, 9_999_999, 10_000_000, Number.TEN]), hostile
)
maxsizes = st.one_of(st.sampled_from([-1, 1023, 1024, 65536, 65537, -2]), hostile)
counts = st.one_of(st.integers(-1, 3), st.sampled_from([1000, 1001]), hostile)
rcs = st.one_of(st.none(), st.integers(-1, 3), hostile)
bodies = st.one_of(
    st.text(max_size=30),
    st.text(min_size=1030, max_size=1100),  # over the "q" queue's maxsize
    hostile,
)
message_lists = st.one_of(st.lists(bodies, max_size=4), hostile)
id_lists = st.one_of(st.lists(ids, max_size=4), hostile)
announces = st.one_of(st.none(), st.text(max_size=8), hostile)
crons = st.one_of(
    st.none(),
    st.sampled_from(["* * * * *", "*/5 1 * * MON#2", "61 * * * *", "* * *", "0 0 30 2 *"]),
    st.text(max_size=16),
    hostile,
)
catch_ups = st.one_of(st.sampled_from(["once", "skip"]), hostile)


def kw(**strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword options, each either left out or drawn."""
    return st.fixed_dictionaries({}, optional=strategies)


# method -> a strategy for (positional arguments, keyword arguments)
CALLS: dict[str, st.SearchStrategy[tuple[tuple[Any, ...], dict[str, Any]]]] = {
    "create_queue": st.tuples(
        st.tuples(qnames), kw(vt=seconds, delay=seconds, maxsize=maxsizes, retention=seconds)
    ),
    "list_queues": st.just(((), {})),
    "delete_queue": st.tuples(st.tuples(qnames), st.just({})),
    "get_queue_attributes": st.tuples(st.tuples(qnames), st.just({})),
    "set_queue_attributes": st.tuples(
        st.tuples(qnames), kw(vt=seconds, delay=seconds, maxsize=maxsizes, retention=seconds)
    ),
    "send_message": st.tuples(st.tuples(qnames, bodies), kw(delay=seconds)),
    "send_messages": st.tuples(st.tuples(qnames, message_lists), kw(delay=seconds)),
    "receive_message": st.tuples(st.tuples(qnames), kw(vt=seconds)),
    "receive_messages": st.tuples(st.tuples(qnames, counts), kw(vt=seconds)),
    "receive_batch": st.tuples(st.tuples(qnames, counts), kw(vt=seconds, announce=announces)),
    "pop_message": st.tuples(st.tuples(qnames), st.just({})),
    "pop_messages": st.tuples(st.tuples(qnames, counts), st.just({})),
    "delete_message": st.tuples(st.tuples(qnames, ids), kw(rc=rcs)),
    "delete_messages": st.tuples(st.tuples(qnames, id_lists), st.just({})),
    "change_message_visibility": st.tuples(st.tuples(qnames, ids, seconds), kw(rc=rcs)),
    "next_visible_in": st.tuples(st.tuples(qnames), st.just({})),
    "move_message": st.tuples(st.tuples(qnames, ids, qnames), kw(rc=rcs)),
    "redrive_messages": st.tuples(st.tuples(qnames, qnames), kw(count=counts)),
    "purge_queue": st.tuples(st.tuples(qnames), st.just({})),
    "keys": st.tuples(st.tuples(qnames), st.just({})),
    "notify": st.tuples(st.tuples(qnames), st.just({})),
    "peek_messages": st.tuples(st.tuples(qnames), kw(offset=counts, count=counts)),
    "make_visible": st.tuples(st.tuples(qnames, ids), st.just({})),
    "move_messages": st.tuples(st.tuples(qnames, id_lists, qnames), st.just({})),
    "pause_queue": st.tuples(st.tuples(qnames), st.just({})),
    "resume_queue": st.tuples(st.tuples(qnames), st.just({})),
    "is_paused": st.tuples(st.tuples(qnames), st.just({})),
    "add_schedule": st.tuples(
        st.tuples(qnames, qnames, bodies), kw(cron=crons, every=seconds, catch_up=catch_ups)
    ),
    "list_schedules": st.just(((), {})),
    "remove_schedule": st.tuples(st.tuples(qnames), st.just({})),
    "fire_schedules": st.just(((), {})),
    "sweep_expired": st.tuples(st.tuples(qnames), kw(cursor=counts, count=counts)),
}


def test_every_public_call_is_fuzzed():
    public = {n for n in dir(AsyncRSMQ) if not n.startswith("_")}
    lifecycle = {"aclose", "from_url"}
    assert public - lifecycle == set(CALLS)


def prepare(q: Any) -> dict[str, str]:
    """Queues "q" (maxsize 1024, a visible and a received message) and "dead"; ids of both."""
    for name in q.list_queues():
        q.delete_queue(name)
    q.create_queue("q", maxsize=1024)
    q.create_queue("dead")
    live, received = q.send_messages("q", ["live", "received"])
    got = q.receive_messages("q", 2, vt=3600)
    q.change_message_visibility("q", live, 0)
    assert {m.id for m in got} == {live, received}
    return {LIVE_ID: live, RECEIVED_ID: received}


def resolve(value: Any, real: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [resolve(v, real) for v in value]
    return real.get(value, value) if type(value) is str else value


def check_refusal(exc: RSMQError) -> None:
    assert type(exc) in DOCUMENTED, repr(exc)
    assert exc.name and exc.message and str(exc) == exc.message


def call_hostile(
    q: Any, r: redis.Redis, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    real = prepare(q)
    args = tuple(resolve(a, real) for a in args)
    kwargs = {k: resolve(v, real) for k, v in kwargs.items()}
    before = snapshot(r, q.ns)
    try:
        getattr(q, method)(*args, **kwargs)
    except RSMQError as exc:
        check_refusal(exc)
        assert snapshot(r, q.ns) == before, f"{method}{args}{kwargs} refused but wrote"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", sorted(CALLS))
def test_hostile_arguments_work_or_are_refused_cleanly(rsmq, r, method):
    @FUZZ
    @given(CALLS[method])
    def run(call: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
        call_hostile(rsmq, r, method, *call)

    run()


namespaces = st.one_of(st.text(min_size=1, max_size=20), hostile)


@FUZZ
@given(ns=namespaces, kind=st.sampled_from(["sync", "async"]))
def test_any_namespace_works_or_is_refused(redis_url, ns, kind):
    """A namespace is any non-empty text: its keys all live under it, or it is refused."""
    if isinstance(ns, str):
        ns += uuid.uuid4().hex[:8]  # never one another example or test has used
    client: Any
    try:
        if kind == "sync":
            client = RSMQ.from_url(redis_url, ns=ns)
        else:
            client = AsyncRSMQ.from_url(redis_url, ns=ns)
    except RSMQError as exc:
        check_refusal(exc)
        assert isinstance(exc, InvalidFormat)
        return
    with redis.Redis.from_url(redis_url) as raw:
        if kind == "sync":
            with client:
                round_trip(client)
        else:

            async def go() -> None:
                async with client:
                    await round_trip_async(client)

            asyncio.run(go())
        prefix = f"{ns}:".encode()
        keys = [k for k in raw.scan_iter(match=b"*", count=10_000) if k.startswith(prefix)]
        # and the retry markers of the sends (rsmq_core/scripts/send.lua), which expire
        markers = [k for k in keys if k.startswith(prefix + b"q:sent:")]
        assert len(markers) in (1, 2)  # a send or two, in one span or two
        assert sorted(set(keys) - set(markers)) == sorted([prefix + b"QUEUES", prefix + b"q:Q"])
        raw.delete(*keys)


def round_trip(q: RSMQ) -> None:
    q.create_queue("q")
    mid = q.send_message("q", "body")
    got = q.pop_message("q")
    assert got is not None and (got.id, got.message) == (mid, "body")
    assert q.list_queues() == ["q"]


async def round_trip_async(q: AsyncRSMQ) -> None:
    await q.create_queue("q")
    mid = await q.send_message("q", "body")
    got = await q.pop_message("q")
    assert got is not None and (got.id, got.message) == (mid, "body")
    assert await q.list_queues() == ["q"]


# Concurrent hostile calls: the async client coalesces them, and each must get its own answer.


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["q", "missing", "bad name"]), bodies), max_size=12))
def test_concurrent_sends_each_get_their_own_answer(redis_url, ns, sends):
    async def go() -> None:
        async with AsyncRSMQ.from_url(redis_url, ns=ns) as q:
            for name in await q.list_queues():
                await q.delete_queue(name)
            await q.create_queue("q", maxsize=1024)
            results = await asyncio.gather(
                *(q.send_message(name, body) for name, body in sends), return_exceptions=True
            )
            sent: dict[str, Any] = {}
            for (name, body), result in zip(sends, results, strict=True):
                expected = expected_send(name, body)
                if expected is None:
                    assert isinstance(result, str) and ID_RE.fullmatch(result), result
                    sent[result] = body
                else:
                    assert type(result) is expected, (name, body, result)
            stored = {m.id: m.message for m in await q.pop_messages("q", 1000)}
            assert stored == sent

    asyncio.run(go())


def expected_send(name: str, body: Any) -> type[RSMQError] | None:
    """What a send of ``body`` to queue ``name`` must raise (None: it must work)."""
    if name == "bad name":
        return rsmq_core.InvalidFormat
    if not isinstance(body, str):
        return rsmq_core.MessageNotString
    try:
        size = len(body.encode())
    except UnicodeEncodeError:
        return rsmq_core.MessageNotString
    if name == "missing":
        return rsmq_core.QueueNotFound
    return rsmq_core.MessageTooLong if size > 1024 else None
