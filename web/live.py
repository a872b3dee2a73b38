"""The websocket side: status events pushed to every browser that asked for them.

Protocol (JSON text frames):

- client → ``{"type": "subscribe", "queue": Q, "ids": [...]?, "after": EID?}``: events of queue
  Q (only those of ``ids`` when given). With ``after`` (the last event id the client saw), every
  event since is replayed first, so a reconnecting client misses nothing; without it, each of
  ``ids`` gets its last known status, as an event frame with ``"eid": null`` and ``"mark"``:
  the stream id to give as ``after`` to resume from that status (what came later is replayed).
  Answered by ``{"type": "subscribed", "queue": Q}``.
- With API_TOKEN set, a connection without a login (session cookie or Bearer token) may follow
  only ids it proves it was given: ``"tickets": [...]``, one per id, from ``/submit``; a
  whole queue or ``watch`` gets an ``unauthorized`` error frame (see web.auth.ws_refusal).
- client → ``{"type": "unsubscribe", "queue": Q}``, ``{"type": "ping"}`` (→ ``pong``).
- client → ``{"type": "watch"}``: a ``{"type": "stats", "queues": {...}, "workers": [...]}``
  snapshot every second (the dashboard).
- server → ``{"type": "event", "eid": EID, "event": {...}}`` (see realtime.StatusEvent; a
  "done" one has the handler's ``result``, any JSON, untrusted),
  ``{"type": "ping"}`` every WS_KEEPALIVE seconds, ``{"type": "error", "error", "message"}`` for
  a frame it cannot take (the connection stays open).
- A client that falls WS_BUFFER events behind is closed with code 1013 ("too slow"): it
  reconnects with its last event id and loses nothing.
- ``/ws?batch=1`` (or ``true``): every server message is a JSON array of one or more of these
  frames (the pages use it); a value other than 1/0, true/false, yes/no or on/off is refused
  (close 1008, naming it). Under load, what piled up for a connection since its last write
  goes in one message: one socket write for many events instead of one each, which was most
  of the cost of a fan-out to many tabs.
- Limits, each refused with an error frame naming it (the frame is not taken, nothing else is
  lost, the connection stays open):

  - one connection follows at most MAX_QUEUES queues at once (``tooManyQueues``);
  - a subscribe names at most WS_MAX_IDS ids (``tooManyIds``);
  - a connection's subscribes that make the server work (a queue to follow, ids to look up,
    events to replay) pass at WS_SUBSCRIBE_RATE a second after a burst of WS_SUBSCRIBE_BURST,
    each IDS_PER_SUBSCRIBE ids counting as one subscribe more (``rateLimited``: send it again
    later). A connection refused so is not read again until it could have passed: a client
    that sends faster than the limit is slowed down, it cannot make the server parse more;
  - the process follows at most WS_MAX_CHANNELS queues for all its connections together
    (``tooManyChannels``: try again later, or another process);
  - every frame, whatever it asks (a ping, a refusal, bad JSON), costs its parsing: a unit
    per READ_UNIT bytes, at READ_RATE units a second after a burst of READ_BURST. A
    connection past it is closed with 1013 (no page sends that much; a flood it had queued
    is not read at all, so it costs nothing after).

  A queue no connection follows any more is no longer read, and letting go costs what the
  leaver followed, so what the process holds and does is bounded by its connections, whatever
  names they have asked for. A subscribe's statuses and starting mark are read in one round
  trip, on a Redis pool of its own (WS_REDIS_CONNECTIONS): websockets never take the
  connections the REST API needs.

Each web process listens to a queue's events once (one pub/sub connection, see
realtime.Subscriber) and fans them out; after any reconnect it replays from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, NoReturn

from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime import EventLog, StatusEvent, Subscriber
from realtime.events import parse_published
from realtime.subscriber import CONNECTION_LOST, Listener, TooManyChannels
from rsmq_core import _protocol

from .dashboard import Stats

log = logging.getLogger(__name__)

EID_RE = re.compile(r"\d{1,20}-\d{1,20}")
MAX_EID_PART = 2**64 - 1  # Redis stream ids are two unsigned 64-bit numbers
MAX_QUEUES = 100  # queues one connection may follow at once
# Why a subscribe or watch frame of this connection is refused (None: allowed); see web.auth
Authorize = Callable[[WebSocket, dict[str, Any]], str | None]
MAX_IDS = 1000  # ids one subscribe may name (WS_MAX_IDS)
SUBSCRIBE_RATE = 10.0  # subscribes a second per connection, after a burst (WS_SUBSCRIBE_RATE)
SUBSCRIBE_BURST = 2 * MAX_QUEUES  # follow them all, and change its mind (WS_SUBSCRIBE_BURST)
IDS_PER_SUBSCRIBE = 20  # ids that cost as much as one subscribe more (their CPU and Redis)
MAX_PAUSE = 1.0  # seconds a rate-limited connection is left unread (well within SIGTERM's 2)
MAX_FRAME = 64 * 1024
READ_UNIT = 1024  # bytes of a frame that cost one unit of reading
READ_RATE = 64.0  # units a second a connection is read at, after...
READ_BURST = 256  # ...a burst of this many: four frames of MAX_FRAME, or 256 small ones
TOO_MANY_FRAMES = f"too many frames: {READ_RATE:g} KiB a second after {READ_BURST} KiB"


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


@dataclass
class Budget:
    """A token bucket: ``burst`` at once, then ``rate`` a second."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, cost: float = 1.0) -> float:
        """Takes ``cost`` tokens: 0.0 if they were there, else the seconds until they will be
        (and nothing is taken)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return (cost - self.tokens) / self.rate
        self.tokens -= cost
        return 0.0


@dataclass(eq=False)  # one per connection: hashed by identity
class Client:
    ws: WebSocket
    buffer: int
    batch: bool = False  # /ws?batch=1: each message a JSON array of frames
    budget: Budget = field(default_factory=lambda: Budget(SUBSCRIBE_RATE, SUBSCRIBE_BURST))
    reading: Budget = field(default_factory=lambda: Budget(READ_RATE, READ_BURST))
    # frames serialized once for every client (an event goes to many); CLOSE closes
    outbox: asyncio.Queue[str] = field(init=False)
    # queue -> ids wanted (None: every event of the queue)
    wants: dict[str, set[str] | None] = field(default_factory=dict)
    last_eid: dict[str, str] = field(default_factory=dict)
    # queue -> live events held back while that queue's history is being replayed
    replaying: dict[str, list[tuple[str, StatusEvent, str]]] = field(default_factory=dict)
    # queues whose replay must read once more (a catch-up asked for while one ran)
    again: set[str] = field(default_factory=set)
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
        if held is None:
            if self._new(queue, eid):
                self.put(text)
        elif len(held) < self.buffer:
            held.append((eid, event, text))
        else:
            self.cut()  # as for a full outbox: what waits is bounded, whatever holds it

    async def deliver(self, queue: str, eid: str, text: str) -> None:
        """A replayed event: waits for room (the sender drains meanwhile), so a replay of any
        length fits a bounded outbox; only a client that reads nothing for REPLAY_WAIT
        seconds is cut."""
        if self._new(queue, eid):
            await self.wait_put(text)

    async def wait_put(self, text: str) -> None:
        """Waits for room (up to REPLAY_WAIT) rather than cutting the client at once."""
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
            self.cut()

    def cut(self) -> NoReturn:
        """Never grow: drop what waits and close. The client resumes from its last eid."""
        self.too_slow = True
        self.replaying.clear()
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait(CLOSE)
        raise TooSlow() from None


CLOSE = "_close"
PING = json.dumps({"type": "ping"})
# /ws?batch=...: what a query string may say for yes and no.
BATCH_VALUES = {"1": True, "true": True, "yes": True, "on": True}
BATCH_VALUES |= {"0": False, "false": False, "no": False, "off": False, "": False}
MAX_BATCH = 100  # frames in one message of a batching connection (about 30 KB of events)
# and bytes, about (one frame may pass it): events with results of 64 KiB each would
# otherwise make one message of megabytes, for the server to build and a phone to parse.
MAX_BATCH_BYTES = 64 * 1024
REPLAY_WAIT = 10.0  # seconds a replay waits for room in a client's outbox


def event_frame(eid: str | None, event: StatusEvent, mark: str | None = None) -> str:
    # An action's origin keeps only its kind ("dashboard", not the operator's address): a
    # websocket may be a visitor's following a ticket. The timeline API, behind the login, has
    # all of it.
    if event.by:
        event = replace(event, by=event.by.split(" ", 1)[0])
    marked = "" if mark is None else f', "mark": {json.dumps(mark)}'
    return f'{{"type": "event", "eid": {json.dumps(eid)}{marked}, "event": {event.to_json()}}}'


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
        max_ids: int = MAX_IDS,
        subscribe_rate: float = SUBSCRIBE_RATE,
        subscribe_burst: int = SUBSCRIBE_BURST,
        redis_connections: int = 10,
    ) -> None:
        # The reads of subscribes queue here, first come first served, for the events pool's
        # connections. Left to redis-py's blocking pool, a newcomer could take a connection
        # freed for an older waiter: under a crowd of subscribes, one waited past the pool's
        # 10 s and got "unavailable" while Redis was fine.
        self._reads = asyncio.Semaphore(redis_connections)
        self._stats = stats
        self._authorize = authorize
        self._subscriber = subscriber
        self._events = events
        self._keepalive = keepalive
        self._buffer = buffer
        self._max_ids = max_ids
        self._rate = (subscribe_rate, subscribe_burst)
        self._clients: set[Client] = set()
        # queue -> what hears its events and fans them out, in the subscriber's read loop (no
        # task per queue: thousands of queues cost no more than their channels)
        self._readers: dict[str, Listener] = {}
        # queue -> connections that follow it: an event costs its followers, not everyone
        self._followers: dict[str, set[Client]] = {}
        self._replays: set[asyncio.Task[None]] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def queues(self) -> int:
        """How many queues this process reads events of (each a pub/sub channel)."""
        return len(self._readers)

    async def aclose(self) -> None:
        for listener in self._readers.values():
            self._subscriber.unlisten(listener)
        self._readers.clear()

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        batch = BATCH_VALUES.get(ws.query_params.get("batch", "").lower())
        if batch is None:
            # A client that asked for something else would misread every message: it is told.
            got = ws.query_params["batch"][:40]
            reason = f"batch must be 1 or 0 (true or false), got {got!r}"
            # A close frame has room for 123 bytes of reason: one longer (control characters
            # spelt out, emoji) could not be sent, and the client heard of no reason at all.
            reason = reason.encode()[:123].decode(errors="ignore")
            await ws.close(code=1008, reason=reason)
            return
        client = Client(ws, self._buffer, budget=Budget(*self._rate), batch=batch)
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
        outbox = client.outbox
        try:
            while True:
                if outbox.empty():
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
                    # cancellation that ends this task, leaving a sender that pings forever.
                    # Only when there is nothing to send: a timer per frame cost a tenth of
                    # a fan-out's CPU.
                    try:
                        async with asyncio.timeout(self._keepalive):
                            text = await outbox.get()
                    except TimeoutError:
                        text = PING
                else:
                    text = outbox.get_nowait()
                if text == CLOSE:
                    await client.ws.close(code=1013, reason="too slow: resume from your last eid")
                    return
                if not client.batch:
                    await client.ws.send_text(text)
                    continue
                texts, size = [text], len(text)
                while len(texts) < MAX_BATCH and size < MAX_BATCH_BYTES and not outbox.empty():
                    texts.append(outbox.get_nowait())
                    size += len(texts[-1])
                # put() empties the outbox before it puts CLOSE in: CLOSE comes alone, first.
                await client.ws.send_text(f"[{','.join(texts)}]")
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    async def _receive(self, client: Client) -> None:
        while True:
            message = await client.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            # The subscribe budget alone left pings, refusals and bad JSON free: a flood of
            # 63 KB frames from one connection took the API's p50 from 2.6 to 31 ms.
            cost = 1 + len(message.get("text") or message.get("bytes") or "") // READ_UNIT
            if client.reading.take(cost):
                await client.ws.close(code=1013, reason=TOO_MANY_FRAMES)
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
        if ids is not None and not isinstance(ids, list):
            self._error(client, "invalidFormat", "ids must be a list of message ids")
            return
        if ids is not None and len(ids) > self._max_ids:
            text = f"a subscribe names at most {self._max_ids} ids; split them across subscribes"
            self._error(client, "tooManyIds", text)
            return
        if after is not None and not valid_after(after):
            self._error(client, "invalidFormat", "after must be an event id like 1700000-0")
            return
        new = queue not in client.wants
        if new and len(client.wants) >= MAX_QUEUES:
            text = f"a connection follows at most {MAX_QUEUES} queues; unsubscribe one"
            self._error(client, "tooManyQueues", text)
            return
        # Charged before the work a subscribe costs (checking its ids, reading Redis), after
        # the cheap refusals above; saying again "all of a queue I follow" costs nothing.
        works = new or bool(ids) or after is not None or queue not in client.last_eid
        # Never more than the burst: a bucket that small must still let the largest through.
        cost = min(1 + len(ids or ()) // IDS_PER_SUBSCRIBE, self._rate[1])
        if works and (wait := client.budget.take(cost)):
            rate, burst = self._rate
            text = (
                f"at most {rate:g} subscribes a second per connection (after a burst of "
                f"{burst}; each {IDS_PER_SUBSCRIBE} ids count as one more): this one was "
                "not taken; send it again later"
            )
            self._error(client, "rateLimited", text)
            # Read nothing more from it meanwhile: what it sends waits in its socket.
            await asyncio.sleep(min(wait, MAX_PAUSE))
            return
        well_formed = (isinstance(i, str) and _protocol.ID_RE.fullmatch(i) for i in ids or ())
        if not all(well_formed):
            self._error(client, "invalidFormat", "ids must be a list of message ids")
            return
        try:
            self._reader(queue)
        except TooManyChannels as exc:
            text = (
                f"this server follows as many queues as it may ({exc.limit}, for all its "
                "connections); try again later"
            )
            self._error(client, "tooManyChannels", text)
            return
        if new:
            self._followers.setdefault(queue, set()).add(client)
        # Live events from here on reach the client (held back during a replay, which fills
        # in what came before; push() drops what both deliver).
        client.wants[queue] = None if ids is None else set(ids)
        if after is not None:
            # Its place in the stream from now: should Redis confirm the channel after the
            # replay found nothing past ``after``, the catch-up then reads on from here.
            client.last_eid.setdefault(queue, after)
            client.put({"type": "subscribed", "queue": queue})
            await self._replay(client, queue, after)
            return
        if not works:
            client.put({"type": "subscribed", "queue": queue})
            return
        # "subscribed" promises every event after it, so it waits for the mark: sent first, a
        # client's send could land before the mark and before Redis confirmed the channel,
        # and be in neither the live feed nor the catch-up (seen in CI, a lost "queued").
        # Meanwhile live events wait: delivered before the mark, they would move the
        # client's place in the stream past what a catch-up must still fill in.
        holding = queue not in client.replaying and queue not in client.last_eid
        if holding:
            client.replaying[queue] = []
        try:
            # The mark to replay from, should this process's pub/sub connection drop or not
            # yet hear the channel, and the ids' statuses: one round trip.
            async with self._reads:
                mark, statuses = await self._events.snapshot(queue, ids or ())
        except BaseException:
            if holding:  # still followed: what comes from here on flows, as before
                for eid, event, text in client.replaying.pop(queue, []):
                    client.offer(queue, eid, event, text)
            raise
        client.last_eid.setdefault(queue, mark)
        client.put({"type": "subscribed", "queue": queue})
        if statuses and not holding and queue not in client.replaying:
            holding = True  # live events wait behind the statuses, as they would have
            client.replaying[queue] = []
        for last in statuses.values():
            # Waiting for room, as a replay does: up to WS_MAX_IDS statuses, more than the
            # outbox holds, are no reason to cut the client.
            await client.wait_put(event_frame(None, last, mark))
        if holding and queue in client.again:
            # Redis confirmed the channel while the mark was read: that catch-up found no
            # mark and was left to this one.
            await self._replay(client, queue, client.last_eid[queue], holding=True)
        elif holding:  # what was held is all there is, live as it came
            for eid, event, text in client.replaying.pop(queue, []):
                client.offer(queue, eid, event, text)

    async def _replay(
        self, client: Client, queue: str, after: str, *, holding: bool = False
    ) -> None:
        """Sends the client the queue's events after ``after``, live ones held meanwhile
        (``holding``: by the caller already)."""
        if queue in client.replaying and not holding:
            # One replay at a time: the one running reads once more before it ends, as it
            # may have read its last rows before what this one was asked for.
            client.again.add(queue)
            return
        client.replaying.setdefault(queue, [])
        try:
            while True:
                more = True
                while more or queue in client.again:
                    client.again.discard(queue)
                    async with self._reads:
                        rows = await self._events.history(queue, after=after, count=500)
                    for eid, event in rows:
                        if client.wanted(queue, event):
                            await client.deliver(queue, eid, event_frame(eid, event))
                    if rows:
                        after = rows[-1][0]
                    more = len(rows) == 500
                # What was held goes out still held: a live event that came while one of
                # these waited for room would go ahead of the rest and move the client's
                # place past them (they would be dropped as sent).
                held = client.replaying.get(queue, [])
                while held:
                    eid, _, text = held.pop(0)
                    await client.deliver(queue, eid, text)
                if queue not in client.again:  # asked for while the held ones went out
                    break
        finally:
            client.replaying.pop(queue, None)

    def _unfollow(self, client: Client, queue: str) -> None:
        """The client no longer follows the queue; stop reading a queue nobody follows."""
        del client.wants[queue]
        client.last_eid.pop(queue, None)
        followers = self._followers[queue]
        followers.discard(client)
        if not followers:
            del self._followers[queue]
            reader = self._readers.pop(queue, None)
            if reader is not None:
                self._subscriber.unlisten(reader)  # the channel goes in the next batch

    def _reader(self, queue: str) -> None:
        """Reads the queue's events unless already done; TooManyChannels past the process's
        limit."""
        if queue not in self._readers:
            channel = self._events.channel(queue)
            self._readers[queue] = self._subscriber.listen(
                channel, handle=partial(self._hear, queue)
            )

    def _hear(self, queue: str, item: tuple[str, bytes] | None) -> None:
        """One delivery of the queue's channel (None: RESYNC)."""
        if item is None:
            # (Re)subscribed, or events were dropped: replay from each client's mark.
            for client in list(self._followers.get(queue, ())):
                mark = client.last_eid.get(queue)
                if queue in client.wants and mark is None and queue in client.replaying:
                    client.again.add(queue)  # its mark is being read: that subscribe catches up
                elif queue in client.wants and mark is not None:
                    # Each in a task of its own: one slow client's replay must not
                    # hold up the live events of all the others.
                    task = asyncio.create_task(
                        self._safely(client, self._replay(client, queue, mark))
                    )
                    self._replays.add(task)
                    task.add_done_callback(self._replays.discard)
            return
        eid, event = parse_published(item[1])
        text = event_frame(eid, event)  # once, for every client
        for client in list(self._followers.get(queue, ())):
            if client.wanted(queue, event):
                with contextlib.suppress(TooSlow):
                    client.offer(queue, eid, event, text)

    @staticmethod
    async def _safely(client: Client, call: Any) -> None:
        with contextlib.suppress(TooSlow, *CONNECTION_LOST):
            await call
