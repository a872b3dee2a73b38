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

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .guard import HEADERS
from .settings import Settings

_BODY = b"the request head did not arrive in time"
TIMED_OUT = b"".join(
    [
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n",
        *(name + b": " + value + b"\r\n" for name, value in HEADERS),
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_BODY),
        _BODY,
    ]
)


@functools.cache
def head_timeout() -> float:
    return Settings.from_env().head_timeout


class GuardedH11(H11Protocol):
    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the upgrade began)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request's head has the same deadline

    def _arm(self) -> None:
        self._disarm()
        self.head_timer = self.loop.call_later(head_timeout(), self._timed_out)

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        pending, _ = self.conn.trailing_data
        if pending:  # half a request: say why; an idle connection just goes
            self.transport.write(TIMED_OUT)
        self.transport.close()
