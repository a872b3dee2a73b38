"""Who may do what: the API token, the pages' session cookie, CSRF and websocket tickets.

- The API authenticates with ``Authorization: Bearer <API_TOKEN>`` only: a cookie would make
  every API call forgeable from another site. Pages (the dashboard) use a session cookie that
  the login form sets; without API_TOKEN everything is open, as before.
- Django's CSRF model: a state-changing request whose Origin is present and foreign is refused
  (403), whatever it carries; a body must be ``application/json`` (415) on the API, since a
  page of another origin can send ``text/plain`` or a form without asking (no CORS preflight).
  The example page's own form also carries a CSRF token minted and signed here.
- The example page is public: its visitor may follow only the messages it sent, each proved
  by a ticket (an HMAC of queue and id) that ``/submit`` hands out with the id.

Every cookie, ticket and token is an HMAC-SHA256 under one secret (:class:`Keys`): several web
processes agree when they share SESSION_SECRET, or API_TOKEN (the secret is derived from it),
or else Redis (a random secret stored once, see :func:`shared_secret`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from rsmq_core import AsyncRSMQ
from rsmq_core.connection import explain

from .settings import Settings

log = logging.getLogger(__name__)

CSRF_COOKIE = "csrftoken"
SESSION_COOKIE = "session"
SESSION_AGE = 12 * 3600  # seconds a login lasts
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Keys:
    """Signs and checks what the server hands out; ``token`` is API_TOKEN (None: open)."""

    def __init__(self, secret: bytes, token: str | None) -> None:
        self._secret = secret
        self.token = token

    def mac(self, purpose: str, *parts: str) -> str:
        text = "\x00".join((purpose, *parts))
        return _b64(hmac.new(self._secret, text.encode(), hashlib.sha256).digest())

    def _check(self, given: str, purpose: str, *parts: str) -> bool:
        return hmac.compare_digest(given.encode(), self.mac(purpose, *parts).encode())

    # The CSRF token: a nonce and its MAC, so a value the client made up is refused.
    def new_csrf(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self.mac('csrf', nonce)}"

    def csrf_valid(self, value: str) -> bool:
        nonce, _, mac = value.partition(".")
        return bool(nonce) and self._check(mac, "csrf", nonce)

    # The session: when it was issued, bound to the token (a new token ends every login).
    def new_session(self, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        return f"{issued}.{self.mac('session', issued, self.token or '')}"

    def session_valid(self, value: str) -> bool:
        issued, _, mac = value.partition(".")
        if not issued.isdigit() or not self._check(mac, "session", issued, self.token or ""):
            return False
        return 0 <= time.time() - int(issued) < SESSION_AGE

    def ticket(self, queue: str, mid: str) -> str:
        return self.mac("ticket", queue, mid)

    def ticket_valid(self, queue: str, mid: str, ticket: object) -> bool:
        return isinstance(ticket, str) and self._check(ticket, "ticket", queue, mid)

    def bearer_valid(self, header: str | None) -> bool:
        """``Bearer <token>``: the scheme in any case (RFC 7235), one or more spaces."""
        if header is None:
            return False
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and self.token_valid(given.strip(" "))

    def token_valid(self, given: str) -> bool:
        if self.token is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())


def keys_of(conn: HTTPConnection) -> Keys:
    keys: Keys = conn.app.state.keys
    return keys


SECRET_KEY = "{ns}:@web-secret"  # beside the worker registry's {ns}:@workers


async def shared_secret(settings: Settings, rsmq: AsyncRSMQ) -> bytes:
    """SESSION_SECRET, else one derived from API_TOKEN, else a random one kept in Redis (the
    first process to start stores it; the others read it). Redis down: this process's own,
    which other processes reject (a visitor reloads the page)."""
    if settings.session_secret is not None:
        return settings.session_secret.encode()
    if settings.api_token is not None:
        return hmac.new(
            settings.api_token.encode(), b"rsmq-realtime web secret", hashlib.sha256
        ).digest()
    key, mine = SECRET_KEY.format(ns=rsmq.ns), secrets.token_hex(32)
    try:
        await rsmq.redis.set(key, mine, nx=True)
        stored = await rsmq.redis.get(key)
    except Exception as exc:
        log.warning("could not share the signing secret through Redis: %s", explain(exc))
        stored = None
    if stored is None:
        return mine.encode()
    return stored.encode() if isinstance(stored, str) else bytes(stored)


# Who the connection is --------------------------------------------------------------------


def authenticated(conn: HTTPConnection, *, cookie: bool) -> bool:
    """No API_TOKEN: anyone. Else the Bearer token, or (``cookie``: pages and their
    websocket) a valid session cookie."""
    keys = keys_of(conn)
    if keys.token is None or keys.bearer_valid(conn.headers.get("authorization")):
        return True
    return cookie and keys.session_valid(conn.cookies.get(SESSION_COOKIE, ""))


def https(conn: HTTPConnection) -> bool:
    """Behind a proxy uvicorn trusts (FORWARDED_ALLOW_IPS), the scheme the browser used."""
    return conn.url.scheme in ("https", "wss")


def origin_allowed(conn: HTTPConnection) -> bool:
    """No Origin (curl, a server), the app's own (same scheme, host and port), or one of
    ALLOWED_ORIGINS ("*": any)."""
    origin = conn.headers.get("origin")
    allowed: tuple[str, ...] = conn.app.state.settings.allowed_origins
    if origin is None or "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    scheme = "https" if https(conn) else "http"
    return parts.scheme == scheme and parts.netloc == conn.headers.get("host", "")


JSON_TYPE = "application/json"


def has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length != "0")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


# Cookies ----------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The visitor's CSRF token if the server minted it, else a new one."""
    given = request.cookies.get(CSRF_COOKIE, "")
    return given if keys_of(request).csrf_valid(given) else keys_of(request).new_csrf()


def set_cookie(response: Response, request: Request, name: str, value: str, **kw: Any) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="strict", secure=https(request), path="/", **kw
    )


def csrf_matches(request: Request, given: str) -> bool:
    """The token sent (header or form field) is the cookie's, and the server minted it."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return keys_of(request).csrf_valid(cookie) and hmac.compare_digest(
        cookie.encode(), given.encode()
    )


# The websocket ----------------------------------------------------------------------------


def ws_refusal(conn: HTTPConnection, frame: dict[str, Any]) -> str | None:
    """Why a ``subscribe`` or ``watch`` frame is refused, or None. Without auth, a socket may
    follow only ids it holds a ticket of (``tickets``: one per id, in order)."""
    if authenticated(conn, cookie=True):
        return None
    if frame.get("type") == "watch":
        return "the dashboard's feed needs a login (API_TOKEN is set)"
    queue, ids, tickets = frame.get("queue"), frame.get("ids"), frame.get("tickets")
    if ids is None:
        return "following a whole queue needs a login (API_TOKEN is set); give ids and tickets"
    if ids == []:
        # Every one of no ids has its ticket: without this, a queue of any name, followed
        # for nothing (a channel each, up to WS_MAX_CHANNELS for everyone).
        return (
            "name the ids /submit answered with, each with its ticket (following no id, or a "
            "whole queue, needs a login: API_TOKEN is set)"
        )
    if not isinstance(ids, list) or not isinstance(queue, str):
        return None  # malformed: the subscription's own checks say what is wrong
    keys = keys_of(conn)
    if (
        not isinstance(tickets, list)
        or len(tickets) != len(ids)
        or not all(keys.ticket_valid(queue, str(i), t) for i, t in zip(ids, tickets, strict=True))
    ):
        return "each id needs the ticket /submit answered with it (tickets, in the order of ids)"
    return None
