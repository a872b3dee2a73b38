"""The websocket under attack, on a real uvicorn: hostile frames, oversize frames, floods.

Whatever a client sends, the server answers it (an error frame for what it cannot take) or
closes that one connection with a clear code; it stays up, a well-behaved client subscribed
meanwhile still gets its events, and the server's memory (RSS, from /proc) stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from support.redis_server import RedisServer
from support.web import WebProcess
from support.workers import wait_for
from web.live import MAX_QUEUES

# What the server may send a client that asked for nothing else.
ANSWERS = {"error", "pong", "subscribed", "event", "ping", "stats"}


class Server:
    """A uvicorn process of the web app, with its own namespace."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.ns = f"w{uuid.uuid4().hex[:10]}"
        self.web = WebProcess(redis_url, self.ns)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.web.port}/ws"

    def rss_mb(self) -> float:
        with open(f"/proc/{self.web.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS line")

    def channels(self) -> set[bytes]:
        """The Redis channels the server's pub/sub connection holds for this namespace."""
        with redis.Redis.from_url(self.redis_url) as r:
            found: list[bytes] = r.pubsub_channels(f"{self.ns}:*")
            return set(found)


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[Server]:
    s = Server(redis_server.url)
    yield s
    s.web.stop()


@contextmanager
def peak_rss(server: Server) -> Iterator[list[float]]:
    """Samples the server's RSS every 20 ms while the block runs: [before, peak]."""
    seen = [server.rss_mb()] * 2
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            seen[1] = max(seen[1], server.rss_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


def until_pong(ws: Any) -> list[dict[str, Any]]:
    """Ping, then every frame up to the pong: the server answered all that came before."""
    ws.send(json.dumps({"type": "ping"}))
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=10))
        assert frame["type"] in ANSWERS, frame
        if frame["type"] == "pong":
            return frames
        frames.append(frame)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "ping", "watch", "dance", "", None])},
    optional={
        "queue": st.sampled_from(["jobs", "a b", "", "x" * 161]) | json_values,
        "ids": st.lists(st.sampled_from(["a" * 32, "short"]), max_size=3) | json_values,
        "after": st.sampled_from(["0-0", "9" * 20 + "-0", "later", "1-"]) | json_values,
    },
).map(json.dumps)
frames = shaped | json_values.map(json.dumps) | st.text(max_size=40) | st.binary(max_size=40)


@settings(max_examples=60, deadline=None)
@given(st.lists(frames, min_size=1, max_size=5))
def test_any_frames_are_answered_and_the_connection_stays(server, sent):
    with connect(server.ws_url) as ws:
        for frame in sent:
            ws.send(frame)
        answers = until_pong(ws)
        errors = [a for a in answers if a["type"] == "error"]
        assert len(errors) <= len(sent)
        assert all(e["error"] and e["message"] for e in errors)


def test_oversize_and_deep_frames(server):
    with connect(server.ws_url, max_size=None) as ws:
        ws.send("[" * 32_000 + "]" * 32_000)  # deeper than Python recurses, within 64 KiB
        ws.send(b"\x00" * 1000)
        errors = [f["error"] for f in until_pong(ws) if f["type"] == "error"]
        assert errors == ["invalidJson", "badFrame"]
    # Past 64 KiB (the app's MAX_FRAME, uvicorn's ws_max_size) the server closes that one
    # connection as "message too big", from the frame's header. The close may come while the
    # frame is still being sent, or even as a reset before the close frame is read (a busy
    # machine): the server ending that connection is the point.
    for frame in ("x" * 70_000, b"\x00" * 100_000, "y" * (17 << 20)):
        with pytest.raises((websockets.ConnectionClosed, ConnectionResetError)) as closed:
            with connect(server.ws_url, max_size=None) as ws:
                ws.send(frame)
                until_pong(ws)
        if isinstance(closed.value, websockets.ConnectionClosed) and closed.value.rcvd is not None:
            assert closed.value.rcvd.code == 1009
    with connect(server.ws_url) as ws:
        assert until_pong(ws) == []  # the server is up and answers


async def flood(server: Server, count: int) -> int | None:
    """Send ``count`` frames as fast as possible, reading nothing; the close code, if any."""
    junk = [
        json.dumps({"type": "ping"}),
        "{not json",
        json.dumps({"type": "dance"}),
        json.dumps({"type": "subscribe", "queue": "jobs"}),
    ]
    try:
        async with websockets.connect(server.ws_url) as ws:
            for i in range(count):
                if i % 7 == 0:  # distinct names too: only MAX_QUEUES of them are followed
                    await ws.send(json.dumps({"type": "subscribe", "queue": f"f{i}"}))
                else:
                    await ws.send(junk[i % len(junk)])
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None
    return None


def test_a_flood_leaves_the_server_and_other_clients_unharmed(server):
    before = server.channels()
    subscribed, stop = threading.Event(), threading.Event()
    seen: dict[str, str] = {}  # message id -> last status the well-behaved client got

    def watcher() -> None:
        async def run() -> None:
            async with websockets.connect(server.ws_url) as ws:
                await ws.send(json.dumps({"type": "subscribe", "queue": "jobs"}))
                while not stop.is_set():
                    try:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                    except TimeoutError:
                        continue
                    if frame["type"] == "subscribed":
                        subscribed.set()
                    elif frame["type"] == "event":
                        seen[frame["event"]["id"]] = frame["event"]["status"]

        asyncio.run(run())

    thread = threading.Thread(target=watcher)
    thread.start()
    try:
        assert subscribed.wait(10)
        with peak_rss(server) as rss:
            t0 = time.monotonic()
            codes = asyncio.run(flood_many(server, connections=4, frames=5000))
            flood_s = time.monotonic() - t0
            mid = server.web.post("/api/queues/jobs/messages", {"message": "hi"})["id"]
            wait_for(lambda: seen.get(mid) == "queued", what="the watcher's event")
    finally:
        stop.set()
        thread.join(10)
    assert all(code in (None, 1013) for code in codes), codes  # 1013: too slow, resume later
    assert rss[1] - rss[0] < 32, f"RSS {rss[0]:.0f} -> {rss[1]:.0f} MB in {flood_s:.1f}s"
    wait_for(
        lambda: server.channels() <= before | {f"{server.ns}:rt:jobs:events".encode()},
        what="the flooders' queues let go",
    )
    with connect(server.ws_url) as ws:
        assert until_pong(ws) == []


async def flood_many(server: Server, *, connections: int, frames: int) -> list[int | None]:
    return list(await asyncio.gather(*(flood(server, frames) for _ in range(connections))))


def test_many_connections_asking_for_many_queues_hold_nothing_afterwards(server):
    """Each connection follows MAX_QUEUES distinct names; once they leave, the server reads
    none of them and its memory is back where it was."""
    with connect(server.ws_url) as ws:
        until_pong(ws)  # warm: the first connection allocates what every later one reuses
    start, base_channels = server.rss_mb(), server.channels()

    async def one(n: int) -> None:
        async with websockets.connect(server.ws_url) as ws:
            for i in range(MAX_QUEUES + 5):
                await ws.send(json.dumps({"type": "subscribe", "queue": f"c{n}x{i}"}))
            kinds: list[str] = []
            while len(kinds) < MAX_QUEUES + 5:
                kind = json.loads(await ws.recv())["type"]
                if kind != "ping":
                    kinds.append(kind)
            assert kinds.count("error") == 5 and kinds.count("subscribed") == MAX_QUEUES

    async def all_of_them() -> None:
        for batch in range(6):
            await asyncio.gather(*(one(batch * 5 + k) for k in range(5)))

    t0 = time.monotonic()
    asyncio.run(all_of_them())
    elapsed = time.monotonic() - t0
    wait_for(lambda: server.channels() == base_channels, what="every followed queue let go")
    grown = server.rss_mb() - start
    assert grown < 8, f"RSS grew {grown:.1f} MB after 30 x {MAX_QUEUES} queues ({elapsed:.1f}s)"
