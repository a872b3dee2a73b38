"""The web app as a real server (uvicorn), with the websockets client and a real worker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from support.web import WebProcess
from support.workers import WorkerProcess

# The statuses of a message handled at once, with its handler's one progress report.
QUEUED_TO_DONE = ["queued", "received", "processing", "processing", "done"]


@pytest.fixture
def web(redis_url: str, ns: str) -> Iterator[list[WebProcess]]:
    started: list[WebProcess] = []
    yield started
    for w in started:
        w.stop()


async def statuses(port: int, after_subscribe: Any, want: int) -> list[dict[str, Any]]:
    """Subscribe to the jobs queue, run ``after_subscribe``, collect ``want`` events."""
    got: list[dict[str, Any]] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(json.dumps({"type": "subscribe", "queue": "jobs"}))
        async with asyncio.timeout(20):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "subscribed":
                    await asyncio.to_thread(after_subscribe)
                elif frame["type"] == "event":
                    got.append(frame["event"])
                    if len(got) >= want:
                        return got


def test_a_message_goes_queued_to_done_over_a_real_websocket(web, redis_url, ns):
    web.append(WebProcess(redis_url, ns))
    worker = WorkerProcess(redis_url, ns, handler="tests.handlers:record")
    try:
        worker.start()
        sent: list[str] = []
        body = {"message": json.dumps({"sleep": 0.05})}

        def send() -> None:
            sent.append(web[0].post("/api/queues/jobs/messages", body)["id"])

        events = asyncio.run(statuses(web[0].port, send, want=5))
    finally:
        worker.cleanup()
    assert [e["status"] for e in events] == QUEUED_TO_DONE
    assert {e["id"] for e in events} == set(sent)
    assert events[-1]["worker"] and events[-1]["ts"] >= events[0]["ts"]


def test_two_web_processes_each_deliver_every_event(web, redis_url, ns):
    web.extend([WebProcess(redis_url, ns), WebProcess(redis_url, ns)])

    subscribed = threading.Barrier(2)

    def send_when_both_listen() -> None:
        if subscribed.wait(timeout=10) == 0:  # one of the two sends, once both listen
            for i in range(3):  # through the first process only
                web[0].post("/api/queues/jobs/messages", {"message": str(i)})

    async def both() -> list[list[dict[str, Any]]]:
        return list(
            await asyncio.gather(
                statuses(web[0].port, send_when_both_listen, want=3),
                statuses(web[1].port, send_when_both_listen, want=3),
            )
        )

    first, second = asyncio.run(both())
    assert [e["id"] for e in first] == [e["id"] for e in second]
    assert len({e["id"] for e in first}) == 3


@pytest.mark.parametrize("batch", [False, True])
def test_a_burst_of_events_arrives_whole_and_in_order_batched_or_not(web, redis_url, ns, batch):
    """/ws?batch=1 (the pages): each message an array of frames, a burst in few messages;
    plain /ws: one frame a message, as before."""
    web.append(WebProcess(redis_url, ns))
    path = "/ws?batch=1" if batch else "/ws"
    count = 300

    sent: list[str] = []

    async def burst() -> tuple[list[Any], list[str]]:
        messages: list[Any] = []
        queued: list[str] = []
        async with websockets.connect(f"ws://127.0.0.1:{web[0].port}{path}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "queue": "jobs"}))
            async with asyncio.timeout(20):
                while len(queued) < count:
                    messages.append(json.loads(await ws.recv()))
                    frames = messages[-1] if batch else [messages[-1]]
                    for frame in frames:
                        if frame["type"] == "subscribed":
                            body = {"messages": [str(i) for i in range(count)]}
                            answer = await asyncio.to_thread(
                                web[0].post, "/api/queues/jobs/messages", body
                            )
                            sent.extend(answer["ids"])
                        elif frame["type"] == "event":
                            queued.append(frame["event"]["id"])
        return messages, queued

    messages, queued = asyncio.run(burst())
    assert queued == sent  # every one, in order, none twice
    if batch:
        assert all(isinstance(m, list) and m for m in messages)
        assert len(messages) < count // 2  # the burst came in few writes
    else:
        assert all(isinstance(m, dict) for m in messages)
        assert len(messages) == count + 1


def test_keepalive_pings_flow_on_an_idle_socket(web, redis_url, ns):
    web.append(WebProcess(redis_url, ns))  # WS_KEEPALIVE=1

    async def idle() -> float:
        async with websockets.connect(f"ws://127.0.0.1:{web[0].port}/ws") as ws:
            start = time.monotonic()
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert frame == {"type": "ping"}
            return time.monotonic() - start

    assert asyncio.run(idle()) < 3


def test_a_response_leaves_in_one_write_and_a_close_sends_what_waits():
    """uvicorn writes a response's head and body apart: the transport the protocol gets
    sends what one turn of the loop wrote as one, and never drops it on a close."""
    from web.protocol import Coalescing

    class Transport:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

    async def main() -> tuple[list[bytes], list[bytes], bool]:
        raw = Transport()
        transport = Coalescing(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
        transport.write(b'{"id": "x"}')
        transport.write(b"")
        assert raw.writes == [] and not transport.is_closing()  # the rest goes through
        await asyncio.sleep(0)
        first = list(raw.writes)
        transport.write(b"bye")
        transport.close()
        return first, raw.writes[1:], raw.closed

    first, then, closed = asyncio.run(main())
    assert first == [b'HTTP/1.1 202 Accepted\r\n\r\n{"id": "x"}']
    assert then == [b"bye"] and closed


@pytest.mark.parametrize(
    "value", ["\x00" * 40, "\U0001f600" * 40, "%" * 1000], ids=["control", "emoji", "long"]
)
def test_a_refused_batch_value_is_named_in_a_close_frame_that_fits(web, redis_url, ns, value):
    """A close frame's reason has room for 123 bytes: a refused /ws?batch= value named as it
    came (40 control characters, which repr spells out at 4 each, or 40 emoji at 4 bytes each)
    made one too long, and the client heard no reason, only an abnormal close."""
    from urllib.parse import quote

    web.append(WebProcess(redis_url, ns))

    async def closed() -> websockets.frames.Close | None:
        url = f"ws://127.0.0.1:{web[0].port}/ws?batch={quote(value)}"
        async with websockets.connect(url) as ws:
            async with asyncio.timeout(10):
                with pytest.raises(websockets.ConnectionClosed) as exc:
                    await ws.recv()
        return exc.value.rcvd

    close = asyncio.run(closed())
    assert close is not None and close.code == 1008
    assert close.reason.startswith("batch must be") and len(close.reason.encode()) <= 123
