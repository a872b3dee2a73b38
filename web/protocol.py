"""uvicorn's h11 protocol with a deadline for the request head (slowloris).

uvicorn times out only an idle keep-alive connection (``timeout_keep_alive``, and only until
its first byte): a client that opens a connection and sends half a request head, or a byte now
and then, holds it for ever. Here the whole head must arrive within ``HEAD_TIMEOUT`` seconds of
the connection opening or of the previous response ending; otherwise the client gets a 408 (if
it sent anything) and the connection is closed. The body's own deadline is the ASGI
``guard.BodyLimit``'s. A module-level class reading HEAD_TIMEOUT through the settings, as
``create_app`` does: each of uvicorn's worker processes imports it afresh.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .guard import HEADERS
from .settings import Settings


def canned(status: bytes, body: bytes) -> bytes:
    """A whole plain-text answer written by the protocol itself (no app runs), with the
    security headers every answer carries, after which the connection is closed."""
    return b"".join(
        [
            b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n",
            *(name + b": " + value + b"\r\n" for name, value in HEADERS),
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        ]
    )


TIMED_OUT = canned(b"408 Request Timeout", b"the request head did not arrive in time")
BUSY = canned(b"503 Service Unavailable", b"too many connections (MAX_CONNECTIONS); try again")


def websocket_limit(max_connections: int) -> int:
    """Websockets one process keeps open at most: MAX_CONNECTIONS less a tenth kept for HTTP
    requests (at least one: uvicorn counts the request's own connection, so one more)."""
    return max_connections - 1 - max(1, max_connections // 10)


@functools.cache
def head_timeout() -> float:
    return Settings.from_env().head_timeout


class Coalescing:
    """A connection's transport whose writes of one turn of the loop leave as one: uvicorn
    writes a response's head and its body apart, two system calls for every small answer
    (a tenth of a POST's CPU, with the rest of the syscalls it costs anyway)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.raw = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            if not self.raw.is_closing():
                self.raw.write(data)

    def close(self) -> None:
        self.flush()
        self.raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class GuardedH11(H11Protocol):
    head_timer: asyncio.TimerHandle | None = None
    # When the head being awaited is due (None: none is). The timer is not moved at every
    # request: a busy connection's timer, firing early, sets itself again for the deadline
    # then (a new timer and a cancel for each request were a twentieth of a POST's CPU).
    head_deadline: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, Coalescing(transport, self.loop))
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        # The head is in (or the upgrade began). Not the rest of a body left unread by an
        # answer given early (a refused Host): that and the next head keep the deadline.
        if self.conn.their_state is not h11.IDLE and not self._answered():
            self._disarm()

    def _answered(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (
            self.conn.their_state is h11.IDLE or self._answered()
        ):
            self._arm()  # the next request's head has the same deadline

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own answer to a request h11 cannot parse, which no middleware sees.
        self.transport.write(canned(b"400 Bad Request", msg.encode()))
        self.transport.close()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # uvicorn upgrades before it checks limit_concurrency: websockets would be taken
        # past MAX_CONNECTIONS, without end, while every HTTP request got 503.
        # And websockets stay under their own share of it, so that however many one client
        # holds open, HTTP requests (health checks, the API) still find a free slot.
        limit = self.limit_concurrency
        if limit is not None and (
            len(self.connections) >= limit
            or sum(1 for c in self.connections if not isinstance(c, H11Protocol))
            >= websocket_limit(limit)
        ):
            self.logger.warning("Exceeded concurrency limit.")
            self.transport.write(BUSY)
            self.transport.close()
            return
        # The websocket gets the connection's own transport: its frames leave as they come.
        if isinstance(coalescing := cast(Any, self.transport), Coalescing):
            coalescing.flush()
            self.transport = coalescing.raw
        super().handle_websocket_upgrade(event)

    def _arm(self) -> None:
        self.head_deadline = self.loop.time() + head_timeout()
        if self.head_timer is None:
            self.head_timer = self.loop.call_at(self.head_deadline, self._timed_out)

    def _disarm(self) -> None:
        self.head_deadline = None

    def _timed_out(self) -> None:
        self.head_timer = None
        if self.head_deadline is None or self.transport.is_closing():
            return
        if self.head_deadline > self.loop.time():  # armed again since: not due yet
            self.head_timer = self.loop.call_at(self.head_deadline, self._timed_out)
            return
        if self._answered():  # the rest of an answered request's body, trickled: go
            self.transport.close()
            return
        if self.conn.their_state is not h11.IDLE:
            return
        pending, _ = self.conn.trailing_data
        if pending:  # half a request: say why; an idle connection just goes
            self.transport.write(TIMED_OUT)
        self.transport.close()
