"""The websocket side: status events pushed to every browser that asked for them.

Protocol (JSON text frames):

- client → ``{"type": "subscribe", "queue": Q, "ids": [...]?, "after": EID?}``: events of queue
  Q (only those of ``ids`` when given). With ``after`` (the last event id the client saw), every
  event since is replayed first, so a reconnecting client misses nothing; without it, each of
  ``ids`` gets its last known status. Answered by ``{"type": "subscribed", "queue": Q}``.
- With API_TOKEN set, a connection without a login (session cookie or Bearer token) may follow
  only ids it proves it was given: ``"tickets": [...]``, one per id, from ``/submit``; a
  whole queue or ``watch`` gets an ``unauthorized`` error frame (see web.auth.ws_refusal).
- client → ``{"type": "unsubscribe", "queue": Q}``, ``{"type": "ping"}`` (→ ``pong``).
- client → ``{"type": "watch"}``: a ``{"type": "stats", "queues": {...}, "workers": [...]}``
  snapshot every second (the dashboard).
- server → ``{"type": "event", "eid": EID, "event": {...}}`` (see realtime.StatusEvent),
  ``{"type": "ping"}`` every WS_KEEPALIVE seconds, ``{"type": "error", "error", "message"}`` for
  a frame it cannot take (the connection stays open).
- A client that falls WS_BUFFER events behind is closed with code 1013 ("too slow"): it
  reconnects with its last event id and loses nothing.
- One connection follows at most MAX_QUEUES queues at once (more: a ``tooManyQueues`` error
  frame); a queue no connection follows any more is no longer read, so what the process
  holds is bounded by its connections, whatever names they have asked for.

Each web process listens to a queue's events once (one pub/sub connection, see
realtime.Subscriber) and fans them out; after any reconnect it replays from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime import EventLog, StatusEvent, Subscriber
from realtime.events import parse_published
from realtime.subscriber import CONNECTION_LOST
from rsmq_core import _protocol

from .dashboard import Stats

log = logging.getLogger(__name__)

EID_RE = re.compile(r"\d{1,20}-\d{1,20}")
MAX_EID_PART = 2**64 - 1  # Redis stream ids are two unsigned 64-bit numbers
MAX_IDS = 1000
MAX_FRAME = 64 * 1024
MAX_QUEUES = 100  # queues one connection may follow at once
# Why a subscribe or watch frame of this connection is refused (None: allowed); see web.auth
Authorize = Callable[[WebSocket, dict[str, Any]], str | None]


def eid_key(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq)


def valid_after(value: object) -> bool:
    """A stream id Redis can read on from: both parts in range, and not the very last id
    (nothing comes after it; Redis refuses it as the exclusive start of a range)."""
    if not isinstance(value, str) or not EID_RE.fullmatch(value):
        return False
    ms, seq = eid_key(value)
    return ms <= MAX_EID_PART and seq <= MAX_EID_PART and (ms, seq) != (MAX_EID_PART,) * 2


class TooSlow(Exception):
    """The client's buffer is full."""


@dataclass(eq=False)  # one per connection: hashed by identity
class Client:
    ws: WebSocket
    buffer: int
    # frames serialized once for every client (an event goes to many); CLOSE closes
    outbox: asyncio.Queue[str] = field(init=False)
    # queue -> ids wanted (None: every event of the queue)
    wants: dict[str, set[str] | None] = field(default_factory=dict)
    last_eid: dict[str, str] = field(default_factory=dict)
    # queue -> live events held back while that queue's history is being replayed
    replaying: dict[str, list[tuple[str, StatusEvent, str]]] = field(default_factory=dict)
    too_slow: bool = False

    def __post_init__(self) -> None:
        self.outbox = asyncio.Queue(maxsize=self.buffer)

    def wanted(self, queue: str, event: StatusEvent) -> bool:
        if queue not in self.wants:
            return False
        ids = self.wants[queue]
        return ids is None or event.id in ids

    def offer(self, queue: str, eid: str, event: StatusEvent, text: str) -> None:
        """A live event: held back while a replay of the queue runs, else sent."""
        held = self.replaying.get(queue)
        if held is not None:
            held.append((eid, event, text))
        elif self._new(queue, eid):
            self.put(text)

    async def deliver(self, queue: str, eid: str, text: str) -> None:
        """A replayed event: waits for room (the sender drains meanwhile), so a replay of any
        length fits a bounded outbox; only a client that reads nothing for REPLAY_WAIT
        seconds is cut."""
        if not self._new(queue, eid):
            return
        if self.too_slow:
            raise TooSlow()
        try:
            await asyncio.wait_for(self.outbox.put(text), REPLAY_WAIT)
        except TimeoutError:
            self.put(text)  # full: cut, as for a live event

    def _new(self, queue: str, eid: str) -> bool:
        last = self.last_eid.get(queue)
        if last is not None and eid_key(eid) <= eid_key(last):
            return False  # already sent (a replay and the live feed overlap)
        self.last_eid[queue] = eid
        return True

    def push(self, queue: str, eid: str, event: StatusEvent) -> None:
        if self._new(queue, eid):
            self.put(event_frame(eid, event))

    def stats(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(TooSlow):
            self.put(json.dumps(frame))

    def put(self, frame: str | dict[str, Any]) -> None:
        if self.too_slow:
            raise TooSlow()
        text = frame if isinstance(frame, str) else json.dumps(frame)
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            # Never grow: drop what waits and close. The client resumes from its last eid.
            self.too_slow = True
            while not self.outbox.empty():
                self.outbox.get_nowait()
            self.outbox.put_nowait(CLOSE)
            raise TooSlow() from None


CLOSE = "_close"
PING = json.dumps({"type": "ping"})
REPLAY_WAIT = 10.0  # seconds a replay waits for room in a client's outbox


def event_frame(eid: str | None, event: StatusEvent) -> str:
    return f'{{"type": "event", "eid": {json.dumps(eid)}, "event": {event.to_json()}}}'


class Hub:
    """Fans the events of each queue out to the websockets that asked for them."""

    def __init__(
        self,
        subscriber: Subscriber,
        events: EventLog,
        *,
        keepalive: float,
        buffer: int,
        stats: Stats | None = None,
        authorize: Authorize | None = None,
    ) -> None:
        self._stats = stats
        self._authorize = authorize
        self._subscriber = subscriber
        self._events = events
        self._keepalive = keepalive
        self._buffer = buffer
        self._clients: set[Client] = set()
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._followers: dict[str, int] = {}  # queue -> connections that follow it
        self._replays: set[asyncio.Task[None]] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def queues(self) -> int:
        """How many queues this process reads events of (each a pub/sub channel)."""
        return len(self._readers)

    async def aclose(self) -> None:
        for task in self._readers.values():
            task.cancel()
        for task in self._readers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._readers.clear()

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        client = Client(ws, self._buffer)
        self._clients.add(client)
        sender = asyncio.create_task(self._send(client))
        try:
            await self._receive(client)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._clients.discard(client)
            for queue in list(client.wants):
                self._unfollow(client, queue)
            if self._stats is not None:
                self._stats.unwatch(client.stats)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _send(self, client: Client) -> None:
        try:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
                # cancellation that ends this task, leaving a sender that pings forever.
                try:
                    async with asyncio.timeout(self._keepalive):
                        text = await client.outbox.get()
                except TimeoutError:
                    text = PING
                if text == CLOSE:
                    await client.ws.close(code=1013, reason="too slow: resume from your last eid")
                    return
                await client.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    async def _receive(self, client: Client) -> None:
        while True:
            message = await client.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self._error(client, "badFrame", "frames must be JSON text")
                continue
            try:
                await self._handle(client, text)
            except TooSlow:
                continue  # the sender closes the connection
            except CONNECTION_LOST as exc:
                self._error(client, "unavailable", f"Redis is unavailable: {exc}; try again")

    def _error(self, client: Client, error: str, message: str) -> None:
        with contextlib.suppress(TooSlow):
            client.put({"type": "error", "error": error, "message": message})

    async def _handle(self, client: Client, text: str) -> None:
        # In bytes, as the error says: a character is up to 4 (encode only when that matters).
        if len(text) > MAX_FRAME or (len(text) > MAX_FRAME // 4 and len(text.encode()) > MAX_FRAME):
            self._error(client, "frameTooLarge", f"frames may have at most {MAX_FRAME} bytes")
            return
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            self._error(client, "invalidJson", "a frame must be a JSON object")
            return
        if not isinstance(frame, dict):
            self._error(client, "invalidJson", "a frame must be a JSON object")
            return
        kind = frame.get("type")
        if kind in ("subscribe", "watch") and self._authorize is not None:
            refusal = self._authorize(client.ws, frame)
            if refusal is not None:
                self._error(client, "unauthorized", refusal)
                return
        if kind == "ping":
            client.put({"type": "pong"})
        elif kind == "subscribe":
            await self._subscribe(client, frame)
        elif kind == "watch" and self._stats is not None:
            self._stats.watch(client.stats)
        elif kind == "unsubscribe":
            queue = frame.get("queue")
            if isinstance(queue, str) and queue in client.wants:
                self._unfollow(client, queue)
        else:
            self._error(client, "unknownType", f"unknown frame type {kind!r}")

    async def _subscribe(self, client: Client, frame: dict[str, Any]) -> None:
        queue, ids, after = frame.get("queue"), frame.get("ids"), frame.get("after")
        if not isinstance(queue, str) or not _protocol.QNAME_RE.fullmatch(queue):
            self._error(client, "invalidFormat", "queue must be a queue name")
            return
        if ids is not None and (
            not isinstance(ids, list)
            or len(ids) > MAX_IDS
            or not all(isinstance(i, str) and _protocol.ID_RE.fullmatch(i) for i in ids)
        ):
            self._error(client, "invalidFormat", f"ids must be a list of up to {MAX_IDS} ids")
            return
        if after is not None and not valid_after(after):
            self._error(client, "invalidFormat", "after must be an event id like 1700000-0")
            return
        if queue not in client.wants:
            if len(client.wants) >= MAX_QUEUES:
                text = f"a connection follows at most {MAX_QUEUES} queues; unsubscribe one"
                self._error(client, "tooManyQueues", text)
                return
            self._followers[queue] = self._followers.get(queue, 0) + 1
        self._reader(queue)
        # Live events from here on reach the client (held back during a replay, which fills
        # in what came before; push() drops what both deliver).
        client.wants[queue] = None if ids is None else set(ids)
        client.put({"type": "subscribed", "queue": queue})
        if after is not None:
            await self._replay(client, queue, after)
            return
        # A mark to replay from should this process's pub/sub connection drop later.
        client.last_eid.setdefault(queue, await self._events.last_id(queue))
        for mid in ids or ():
            last = await self._events.last_status(queue, mid)
            if last is not None:
                client.put(event_frame(None, last))

    async def _replay(self, client: Client, queue: str, after: str) -> None:
        if queue in client.replaying:
            return  # one replay at a time; the one running reaches the end of the stream
        client.replaying[queue] = []
        try:
            while True:
                rows = await self._events.history(queue, after=after, count=500)
                for eid, event in rows:
                    if client.wanted(queue, event):
                        await client.deliver(queue, eid, event_frame(eid, event))
                if len(rows) < 500:
                    break
                after = rows[-1][0]
        finally:
            held = client.replaying.pop(queue)
        for eid, _, text in held:
            await client.deliver(queue, eid, text)

    def _unfollow(self, client: Client, queue: str) -> None:
        """The client no longer follows the queue; stop reading a queue nobody follows."""
        del client.wants[queue]
        client.last_eid.pop(queue, None)
        self._followers[queue] -= 1
        if self._followers[queue] == 0:
            del self._followers[queue]
            task = self._readers.pop(queue, None)
            if task is not None:
                task.cancel()  # its finally unlistens, which unsubscribes the channel

    def _reader(self, queue: str) -> None:
        if queue not in self._readers:
            self._readers[queue] = asyncio.create_task(self._read(queue))

    async def _read(self, queue: str) -> None:
        listener = self._subscriber.listen(self._events.channel(queue), maxsize=10_000)
        try:
            while True:
                item = await listener.get()
                if item is None:
                    # (Re)subscribed, or events were dropped: replay from each client's mark.
                    for client in list(self._clients):
                        mark = client.last_eid.get(queue)
                        if queue in client.wants and mark is not None:
                            # Each in a task of its own: one slow client's replay must not
                            # hold up the live events of all the others.
                            task = asyncio.create_task(
                                self._safely(client, self._replay(client, queue, mark))
                            )
                            self._replays.add(task)
                            task.add_done_callback(self._replays.discard)
                    continue
                eid, event = parse_published(item[1])
                text = event_frame(eid, event)  # once, for every client
                for client in list(self._clients):
                    if client.wanted(queue, event):
                        with contextlib.suppress(TooSlow):
                            client.offer(queue, eid, event, text)
        finally:
            self._subscriber.unlisten(listener)

    @staticmethod
    async def _safely(client: Client, call: Any) -> None:
        with contextlib.suppress(TooSlow, *CONNECTION_LOST):
            await call
