"""Denial of service by websocket clients (issue 10, items 1 and 2), on a real uvicorn and a
Redis of this module's own (its command counts and channels are the test's alone).

Crowds that follow many made-up queues and leave at once must cost the server what they
followed, leave nothing subscribed and never stop SIGTERM; a subscribe naming many ids is one
round trip; every limit answers an error frame that names it.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import websockets
from websockets.asyncio.client import ClientConnection

from realtime import Listener, Subscriber
from support.redis_server import RedisServer
from support.web import WebProcess
from support.workers import wait_for


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def web(own_redis: RedisServer) -> Iterator[list[WebProcess]]:
    started: list[WebProcess] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.stop()


def start(own_redis: RedisServer, web: list[WebProcess], **settings: Any) -> WebProcess:
    process = WebProcess(own_redis.url, f"a{uuid.uuid4().hex[:10]}", **settings)
    web.append(process)
    return process


def channels(own_redis: RedisServer) -> int:
    with redis.Redis.from_url(own_redis.url) as r:
        return len(r.pubsub_channels())


def calls(own_redis: RedisServer) -> dict[str, int]:
    """How many times Redis ran each command, by name."""
    with redis.Redis.from_url(own_redis.url) as r:
        stats: dict[str, Any] = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()}


def health_ms(process: WebProcess) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(process.url("/api/health"), timeout=5) as answer:
        assert answer.status == 200
    return (time.perf_counter() - t0) * 1000


async def frames(ws: ClientConnection, want: int, kind: str) -> list[dict[str, Any]]:
    """Frames up to the ``want``-th of ``kind`` (pings skipped)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while sum(f["type"] == kind for f in got) < want:
            frame = json.loads(await ws.recv())
            if frame["type"] != "ping":
                got.append(frame)
    return got


async def crowd(
    process: WebProcess, own_redis: RedisServer, clients: int, queues: int
) -> list[ClientConnection]:
    """``clients`` connections, each following ``queues`` made-up queues of its own, once
    Redis shows every channel subscribed."""

    async def one(n: int) -> ClientConnection:
        ws = await websockets.connect(f"ws://127.0.0.1:{process.port}/ws")
        for i in range(queues):
            await ws.send(json.dumps({"type": "subscribe", "queue": f"made-up-{n}-{i}"}))
        got = await frames(ws, queues, "subscribed")
        refused = [f for f in got if f["type"] != "subscribed"]
        assert not refused and len(got) == queues, refused
        return ws

    connected = list(await asyncio.gather(*(one(n) for n in range(clients))))
    want = clients * queues
    await asyncio.to_thread(
        wait_for, lambda: channels(own_redis) == want, 10, f"{want} channels subscribed"
    )
    return connected


async def leave(crowd: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in crowd))


def test_a_crowd_that_leaves_leaves_nothing_subscribed_and_health_answers(own_redis, web):
    process = start(own_redis, web)

    async def run() -> None:
        connected = await crowd(process, own_redis, clients=60, queues=100)
        await leave(connected)

    asyncio.run(run())
    # Before the fix each leaving listener scanned every channel of the process and each
    # channel was one UNSUBSCRIBE: 6000 channels took some 20 s to let go, and the event loop
    # was busy all along.
    wait_for(lambda: channels(own_redis) == 0, timeout=3, what="no channel left subscribed")
    assert health_ms(process) < 1000


def test_sigterm_during_a_mass_teardown_stops_the_process_within_5s(own_redis, web):
    process = start(own_redis, web)

    async def run() -> float:
        connected = await crowd(process, own_redis, clients=50, queues=100)
        closing = asyncio.gather(*(ws.close() for ws in connected))
        await asyncio.sleep(0)  # the closes are on their way
        process.proc.terminate()
        sent = time.monotonic()
        await closing
        return sent

    # From the SIGTERM (the crowd's arrival took more than 5 s itself on a loaded machine).
    sent = asyncio.run(run())
    try:
        process.proc.wait(5 - (time.monotonic() - sent))
    except Exception:
        process.proc.kill()
        process.proc.wait()
        raise AssertionError("the web process did not stop within 5 s of SIGTERM") from None


class Counting(dict[str, Any]):
    """A dict that counts the entries anyone looks at."""

    touched = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.touched += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.touched += 1
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.touched += 1
        return super().__contains__(key)

    def items(self) -> Any:
        self.touched += len(self)
        return super().items()

    def values(self) -> Any:
        self.touched += len(self)
        return super().values()

    def __iter__(self) -> Iterator[str]:
        self.touched += len(self)
        return super().__iter__()


async def test_leaving_costs_what_the_leaver_followed_and_unsubscribes_in_batches(own_redis):
    """200 listeners of 50 channels each: one leaving looks at its 50 channels, not at the
    10,000 of the process; all leaving send a few UNSUBSCRIBEs, not 10,000."""
    client = aioredis.Redis.from_url(own_redis.url)
    ns = f"u{uuid.uuid4().hex[:8]}"
    try:
        async with Subscriber(client) as sub:
            listeners: list[Listener] = [
                sub.listen(*(f"{ns}:{n}:{i}" for i in range(50))) for n in range(200)
            ]
            async with asyncio.timeout(10):
                while len(await client.pubsub_channels(f"{ns}:*")) < 10_000:
                    await asyncio.sleep(0.01)
            before = calls(own_redis).get("unsubscribe", 0)
            counting = Counting(sub._listeners)
            sub._listeners = counting
            sub.unlisten(listeners[0])
            assert counting.touched <= 3 * 50, counting.touched  # 10,000 before the fix
            for listener in listeners[1:]:
                sub.unlisten(listener)
            async with asyncio.timeout(10):
                while await client.pubsub_channels(f"{ns}:*"):
                    await asyncio.sleep(0.01)
            sent = calls(own_redis)["unsubscribe"] - before
            assert sent <= 50, sent  # one per channel (10,000) before the fix
    finally:
        await client.aclose()


def test_a_subscribe_reads_its_statuses_in_one_round_trip(own_redis, web):
    process = start(own_redis, web)
    sent = [process.post("/api/queues/jobs/messages", {"message": str(i)})["id"] for i in range(5)]
    made_up = [uuid.uuid4().hex for _ in range(995)]
    before = calls(own_redis)

    async def run() -> list[dict[str, Any]]:
        async with websockets.connect(f"ws://127.0.0.1:{process.port}/ws") as ws:
            frame = {"type": "subscribe", "queue": "jobs", "ids": sent + made_up}
            await ws.send(json.dumps(frame))
            return await frames(ws, 5, "event")

    events = asyncio.run(run())
    assert sorted(e["event"]["id"] for e in events if e["type"] == "event") == sorted(sent)
    after = calls(own_redis)
    # Before the fix: a GET per id, one after another, each holding an API connection.
    assert after.get("get", 0) - before.get("get", 0) == 0
    assert after["mget"] - before.get("mget", 0) == 1


async def exchange(process: WebProcess, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send the frames, then a ping: every answer up to the pong."""
    async with websockets.connect(f"ws://127.0.0.1:{process.port}/ws") as ws:
        for frame in sent:
            await ws.send(json.dumps(frame))
        await ws.send(json.dumps({"type": "ping"}))
        return [f for f in await frames(ws, 1, "pong") if f["type"] != "pong"]


def test_subscribes_past_the_rate_are_refused_by_name_and_slowed_down(own_redis, web):
    """A burst of 12 then one a second; each 20 ids count as one subscribe more. The refused
    connection is read again once a subscribe could pass: the last one is taken."""
    process = start(own_redis, web, WS_SUBSCRIBE_RATE="1", WS_SUBSCRIBE_BURST="12")

    def subscribe(ids: int) -> dict[str, Any]:
        return {"type": "subscribe", "queue": "jobs", "ids": [uuid.uuid4().hex for _ in range(ids)]}

    sent = [subscribe(200), subscribe(40), subscribe(1)]  # 11, 3 (one left: refused), 1
    answers = asyncio.run(exchange(process, sent))
    assert [a["type"] for a in answers] == ["subscribed", "error", "subscribed"]
    assert answers[1] == {
        "type": "error",
        "error": "rateLimited",
        "message": "at most 1 subscribes a second per connection (after a burst of 12; each"
        " 20 ids count as one more): this one was not taken; send it again later",
    }


def test_too_many_ids_in_a_subscribe_are_refused_by_name(own_redis, web):
    process = start(own_redis, web, WS_MAX_IDS="10")
    ok = {"type": "subscribe", "queue": "jobs", "ids": [uuid.uuid4().hex for _ in range(10)]}
    too_many = {**ok, "ids": [uuid.uuid4().hex for _ in range(11)]}
    answers = asyncio.run(exchange(process, [too_many, ok]))
    assert answers == [
        {
            "type": "error",
            "error": "tooManyIds",
            "message": "a subscribe names at most 10 ids; split them across subscribes",
        },
        {"type": "subscribed", "queue": "jobs"},
    ]


def test_the_process_follows_at_most_its_channels_and_refuses_by_name(own_redis, web):
    process = start(own_redis, web, WS_MAX_CHANNELS="3")

    def subscribe(queue: str) -> dict[str, Any]:
        return {"type": "subscribe", "queue": queue}

    answers = asyncio.run(exchange(process, [subscribe(q) for q in ("a", "b", "c", "d", "a")]))
    assert answers == [
        {"type": "subscribed", "queue": "a"},
        {"type": "subscribed", "queue": "b"},
        {"type": "subscribed", "queue": "c"},
        {
            "type": "error",
            "error": "tooManyChannels",
            "message": "this server follows as many queues as it may (3, for all its "
            "connections); try again later",
        },
        {"type": "subscribed", "queue": "a"},
    ]
    # The first connection is gone: its queues no longer count.
    wait_for(lambda: channels(own_redis) == 0, what="the queues let go")
    answers = asyncio.run(exchange(process, [subscribe("d")]))
    assert answers == [{"type": "subscribed", "queue": "d"}]


async def test_a_handler_that_raises_is_logged_and_its_channel_still_heard(own_redis, caplog):
    """The websockets' queues are heard by handlers run in the subscriber's read loop: one
    that fails on a message (say, garbage published on an events channel) must not end it."""
    client = aioredis.Redis.from_url(own_redis.url)
    channel = f"h{uuid.uuid4().hex[:8]}"
    heard: list[Any] = []

    def handle(item: Any) -> None:
        if item is not None and item[1] == b"garbage":
            raise ValueError("not an event")
        heard.append(item)

    try:
        async with Subscriber(client) as sub:
            sub.listen(channel, handle=handle)
            async with asyncio.timeout(10):
                while (await client.pubsub_numsub(channel))[0][1] != 1:
                    await asyncio.sleep(0.01)
                await client.publish(channel, "garbage")
                await client.publish(channel, "event")
                while (channel, b"event") not in heard:
                    await asyncio.sleep(0.01)
    finally:
        await client.aclose()
    assert f"a pub/sub handler failed on ('{channel}', b'garbage')" in caplog.text
