"""The web process: the example app, the REST API and the websocket.

``uvicorn --factory web.app:create_app`` (the Procfile's ``web:``). Everything a request needs
lives on ``app.state``, made by the lifespan: no module globals, so two apps in one process
(tests) never share anything.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime import EventLog, Subscriber
from rsmq_core import AsyncRSMQ, QueueExists, QueueNotFound
from rsmq_core.client import connect
from rsmq_core.connection import explain, scrub

from . import api
from .dashboard import Stats
from .live import Hub
from .openapi import openapi
from .outage import UNAVAILABLE, Outage, is_outage
from .settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
CSRF_COOKIE = "csrftoken"
REDIS_CONNECTIONS = 50
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescapes HTML

    async def create_example_queue(rsmq: AsyncRSMQ) -> bool:
        """Create QUEUE unless it exists; whether this call created it."""
        try:
            await rsmq.create_queue(settings.queue)
        except QueueExists:
            return False
        return True

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A blocking pool: a burst of requests waits for a free connection instead of failing
        # with "Too many connections" (redis-py's default pool raises at its limit). A cluster
        # client keeps a pool per node and has no blocking variant. Either retries a call whose
        # connection dropped, as the worker's does (see rsmq_core.client.connect).
        blocking: dict[str, Any] = (
            {} if settings.redis_cluster
            else {"pool_class": aioredis.BlockingConnectionPool, "timeout": 10}
        )  # fmt: skip
        client = connect(settings.redis_url, cluster=settings.redis_cluster,
                         connection=settings.connection, max_connections=REDIS_CONNECTIONS,
                         **blocking)  # fmt: skip
        app.state.settings = settings
        app.state.outage = Outage(settings.redis_url)
        app.state.rsmq = AsyncRSMQ(client, ns=settings.ns, realtime=True)
        # Sends publish nothing themselves: the API records "queued" first, then wakes the
        # workers (see api.send), so no worker's "received" can come before it.
        app.state.sender = AsyncRSMQ(client, ns=settings.ns, realtime=False)
        app.state.events = EventLog(client, settings.ns)
        subscriber = Subscriber(client)
        subscriber.start()
        app.state.stats = Stats(app.state.rsmq)
        app.state.hub = Hub(subscriber, app.state.events, keepalive=settings.ws_keepalive,
                            buffer=settings.ws_buffer, stats=app.state.stats)  # fmt: skip
        try:
            await create_example_queue(app.state.rsmq)
        except Exception as exc:  # Redis down: serve anyway; /api/health says what is wrong
            log.warning("could not create queue %s: %s", settings.queue,
                        scrub(explain(exc), settings.redis_url))  # fmt: skip
        try:
            yield
        finally:
            await app.state.hub.aclose()
            await app.state.stats.aclose()
            await subscriber.aclose()
            await app.state.events.flush()
            await client.aclose()  # and its pool

    async def index(request: Request) -> Response:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = templates.TemplateResponse(
            request, "index.html", {"csrf": token, "queue": settings.queue}
        )
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
        return response

    async def dashboard(request: Request) -> Response:
        return templates.TemplateResponse(request, "dashboard.html", {})

    @api.endpoint(write=False)  # the page's own form: CSRF guards it, not the API token
    async def submit(request: Request) -> Response:
        """The example app's button: put an application on the queue, answer with its id."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        header = request.headers.get("x-csrf-token", "")
        if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
            return api.error_response(403, "csrf", "missing or wrong CSRF token; reload the page")
        data = await api.read_json(request)
        request.path_params["qname"] = settings.queue
        body = {"message": data.get("message", "")}
        try:
            return await api.send(request, body)
        except QueueNotFound:
            # The page's own queue, gone with Redis's data (a restart without persistence, a
            # FLUSHALL): made again, as at start. Nothing was stored, so the send is tried anew.
            if await create_example_queue(request.app.state.rsmq):
                log.warning("queue %s was gone (Redis lost its data, or it was deleted); "
                            "created it again", settings.queue)  # fmt: skip
            return await api.send(request, body)

    async def websocket(ws: WebSocket) -> None:
        if not origin_allowed(ws, settings):
            await ws.close(code=1008, reason="origin not allowed")
            return
        await ws.app.state.hub.serve(ws)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi())

    routes = [
        Route("/", index),
        Route("/dashboard", dashboard),
        Route("/submit", submit, methods=["POST"]),
        Route("/openapi.json", openapi_json),
        WebSocketRoute("/ws", websocket),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        *api.ROUTES,
    ]
    handlers: dict[Any, Any] = {RedisError: redis_error}  # one handler for HTTP and websocket
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)],
                     exception_handlers=handlers)  # fmt: skip


async def redis_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    """A Redis outage met outside the API's own handling (the websocket, a page): a 503, or
    for a websocket an error frame and a close saying why, instead of a dropped connection."""
    if not is_outage(exc):
        raise exc
    outage: Outage = conn.app.state.outage
    if not isinstance(conn, WebSocket):
        return outage.refuse(exc)
    frame = {"type": "error", **outage.report(exc)}
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await conn.send_text(json.dumps(frame))
        await conn.close(code=1011, reason=UNAVAILABLE)  # "server error": try again later
    return None


def origin_allowed(ws: WebSocket, settings: Settings) -> bool:
    """A browser's websocket must come from this app's own pages (or an allowed origin);
    non-browser clients send no Origin."""
    origin = ws.headers.get("origin")
    if origin is None or "*" in settings.allowed_origins or origin in settings.allowed_origins:
        return True
    return urlsplit(origin).netloc == ws.headers.get("host", "")
