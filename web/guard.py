"""The door: pure ASGI middlewares that check a request before the app spends anything on it.

- ``SecurityHeaders`` adds the browser hardening headers to every response, the 500s of
  Starlette's ServerErrorMiddleware and websocket refusals included, so it wraps the whole
  stack (see ``web.app.App``); HSTS only on requests that came over https.
- ``TrustedHosts`` answers 400 to a Host that is not one of ALLOWED_HOSTS: a page of another
  site whose name was rebound to this server's address (DNS rebinding) cannot talk to it.
- ``BodyLimit`` reads a request body before the app sees it: 400 to one framed both by
  Content-Length and Transfer-Encoding (request smuggling), 413 at once on a declared
  Content-Length over the limit (before the client sends it), 413 as soon as a chunked body
  passes it, 408 when the body takes longer than its deadline, and one INFO line (no app, no
  traceback) when the client goes away mid-body. The app then gets the body in one piece.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
# A year, without includeSubDomains: the app owns its own name, not the names under it.
HSTS = (b"strict-transport-security", b"max-age=31536000")
SECURE_SCHEMES = ("https", "wss")


def error(status: int, error: str, message: str, *, close: bool = False) -> JSONResponse:
    """Our JSON error; ``close`` asks uvicorn to drop the connection after it (a client
    still sending a body we refused gets no more of our time)."""
    headers = {"connection": "close"} if close else None
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        extra = (*HEADERS, HSTS) if scope.get("scheme") in SECURE_SCHEMES else HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(header: str) -> str | None:
    """The name in a Host header, lowercased, without its port; IPv6 literals keep their
    brackets (``[::1]``). None when the header is not a host."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]") + 1
        name, rest = (header[:end], header[end:]) if end else ("", "")
    else:
        name, colon, port = header.partition(":")
        rest = colon + port
    if not name or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
        return None
    return name


def host_allowed(name: str, patterns: Iterable[str]) -> bool:
    """``*`` admits any name, ``*.example.com`` the names under example.com (not itself)."""
    for pattern in patterns:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class TrustedHosts:
    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = Headers(scope=scope).get("host", "")
            name = host_name(header)
            if name is None or not host_allowed(name, self.allowed_hosts):
                response = error(
                    400, "invalidHost", f"Host {header!r} is not a name this app answers to"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int, timeout: float) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout = timeout

    def too_large(self) -> JSONResponse:
        # Made when needed: one for every request was a twenty-fifth of a POST's CPU.
        limit = f"the request body may have at most {self.max_body} bytes"
        return error(413, "bodyTooLarge", limit, close=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (HTTP/1.1: neither header, none)
            return
        if declared is not None and "transfer-encoding" in headers:
            # h11 reads the chunks and keeps the connection; a proxy in front that reads the
            # length would take the rest for another request (request smuggling).
            both = "a request may not have both Content-Length and Transfer-Encoding"
            await error(400, "badFraming", both, close=True)(scope, receive, send)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            # before reading: uvicorn sends no 100-continue
            await self.too_large()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        log.info(
                            "client left mid-body: %s %s after %d bytes",
                            scope["method"],
                            scope["path"],
                            size,
                        )
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self.too_large()(scope, receive, send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await error(
                408,
                "bodyTimeout",
                f"the request body must arrive within {self.timeout:g} s",
                close=True,
            )(scope, receive, send)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect, when it comes

        await self.app(scope, replay, send)
