"""The web process: the example app, the REST API and the websocket.

``uvicorn --factory web.app:create_app`` (the Procfile's ``web:``). Everything a request needs
lives on ``app.state``, made by the lifespan: no module globals, so two apps in one process
(tests) never share anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from redis import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime import EventLog, Subscriber, queued_on_send
from rsmq_core import AsyncRSMQ, QueueExists, QueueNotFound
from rsmq_core.client import connect
from rsmq_core.connection import explain, scrub

from . import api, guard
from . import auth as access
from .dashboard import Stats
from .live import Hub
from .metrics import metrics
from .openapi import openapi
from .outage import UNAVAILABLE, Outage, is_outage
from .settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
FORM_TYPE = "application/x-www-form-urlencoded"
FORM_LIMIT = 4096  # bytes: the login form holds a token and a CSRF token
REDIS_CONNECTIONS = 50


class App(Starlette):
    """Starlette with the security headers outside its ServerErrorMiddleware, which answers
    the 500s and sits outside every middleware of the list."""

    def build_middleware_stack(self) -> ASGIApp:
        return guard.SecurityHeaders(super().build_middleware_stack())


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
            {}
            if settings.redis_cluster
            else {"pool_class": aioredis.BlockingConnectionPool, "timeout": 10}
        )
        client = connect(
            settings.redis_url,
            cluster=settings.redis_cluster,
            connection=settings.connection,
            max_connections=REDIS_CONNECTIONS,
            **blocking,
        )
        app.state.settings = settings
        app.state.outage = Outage(settings.redis_url)
        app.state.rsmq = AsyncRSMQ(client, ns=settings.ns, realtime=True)
        # The API's sends record "queued" first, then wake the workers, in the send's own
        # script call: no worker's "received" can come before it.
        app.state.sender = AsyncRSMQ(
            client,
            ns=settings.ns,
            realtime=False,
            min_replicas=settings.send_min_replicas,
            replica_timeout=settings.send_replica_timeout,
            send_events=queued_on_send(),
        )
        app.state.events = EventLog(client, settings.ns)
        # The websockets' reads go through a pool of their own: however many clients ask for
        # however much, the API's connections stay free.
        ws_client = connect(
            settings.redis_url,
            cluster=settings.redis_cluster,
            connection=settings.connection,
            max_connections=settings.ws_redis_connections,
            **blocking,
        )
        subscriber = Subscriber(client, max_channels=settings.ws_max_channels)
        subscriber.start()
        app.state.keys = access.Keys(
            await access.shared_secret(settings, app.state.rsmq), settings.api_token
        )
        app.state.stats = Stats(app.state.rsmq)
        app.state.hub = Hub(
            subscriber,
            EventLog(ws_client, settings.ns),
            keepalive=settings.ws_keepalive,
            buffer=settings.ws_buffer,
            stats=app.state.stats,
            max_ids=settings.ws_max_ids,
            subscribe_rate=settings.ws_subscribe_rate,
            subscribe_burst=settings.ws_subscribe_burst,
            redis_connections=settings.ws_redis_connections,
            authorize=access.ws_refusal,
        )
        try:
            await create_example_queue(app.state.rsmq)
        except Exception as exc:  # Redis down: serve anyway; /api/health says what is wrong
            log.warning(
                "could not create queue %s: %s",
                settings.queue,
                scrub(explain(exc), settings.redis_url),
            )
        try:
            yield
        finally:
            await app.state.hub.aclose()
            await app.state.stats.aclose()
            await subscriber.aclose()
            await app.state.events.flush()
            await client.aclose()  # and its pool
            await ws_client.aclose()

    async def index(request: Request) -> Response:
        token = access.csrf_token(request)
        response = templates.TemplateResponse(
            request, "index.html", {"csrf": token, "queue": settings.queue}
        )
        access.set_cookie(response, request, access.CSRF_COOKIE, token)
        return response

    async def dashboard(request: Request) -> Response:
        if not access.authenticated(request, cookie=True):
            return RedirectResponse("/login?next=/dashboard", status_code=303)
        token = access.csrf_token(request)
        response = templates.TemplateResponse(
            request, "dashboard.html", {"csrf": token, "login": settings.api_token is not None}
        )
        access.set_cookie(response, request, access.CSRF_COOKIE, token)
        return response

    @api.endpoint(auth=False)  # the page's own form: CSRF guards it, not the API token
    async def submit(request: Request) -> Response:
        """The example app's button: put an application on the queue, answer with its id and
        the ticket that lets this visitor follow it over the websocket."""
        if not access.csrf_matches(request, request.headers.get("x-csrf-token", "")):
            return api.error_response(403, "csrf", "missing or wrong CSRF token; reload the page")
        data = await api.read_json(request)
        request.path_params["qname"] = settings.queue
        body = {"message": data.get("message", "")}
        try:
            answer = await api.send(request, body)
        except QueueNotFound:
            # The page's own queue, gone with Redis's data (a restart without persistence, a
            # FLUSHALL): made again, as at start. Nothing was stored, so the send is tried anew.
            if await create_example_queue(request.app.state.rsmq):
                log.warning(
                    "queue %s was gone (Redis lost its data, or it was deleted); created it again",
                    settings.queue,
                )
            answer = await api.send(request, body)
        if answer.status_code != 202:
            return answer
        mid = json.loads(bytes(answer.body))["id"]
        ticket = access.keys_of(request).ticket(settings.queue, mid)
        return JSONResponse({"id": mid, "ticket": ticket}, status_code=202)

    async def login(request: Request) -> Response:
        """The dashboard's login: a form (no script needed) posting the API token."""
        goal = request.query_params.get("next", "/dashboard")
        if not goal.startswith("/") or goal.startswith("//") or "\\" in goal:
            goal = "/dashboard"  # only a path of this site: never a redirect elsewhere
        if settings.api_token is None:
            return RedirectResponse(goal, status_code=303)  # nothing to log in to
        error, status = "", 200
        if request.method == "POST":
            if not access.origin_allowed(request):
                return api.error_response(403, "foreignOrigin", "log in from this site's page")
            form = await read_form(request)
            if isinstance(form, Response):
                return form
            if not access.csrf_matches(request, form.get("csrf", "")):
                error, status = "The form expired: log in again.", 403
            elif not access.keys_of(request).token_valid(form.get("token", "")):
                error, status = "Wrong token: give the server's API_TOKEN.", 401
            else:
                done = RedirectResponse(goal, status_code=303)
                session = access.keys_of(request).new_session()
                access.set_cookie(
                    done, request, access.SESSION_COOKIE, session, max_age=access.SESSION_AGE
                )
                return done
        token = access.csrf_token(request)
        response = templates.TemplateResponse(
            request, "login.html", {"csrf": token, "error": error, "next": goal}, status_code=status
        )
        access.set_cookie(response, request, access.CSRF_COOKIE, token)
        return response

    async def logout(request: Request) -> Response:
        form = await read_form(request)
        if isinstance(form, Response):
            return form
        if not access.origin_allowed(request) or not access.csrf_matches(
            request, form.get("csrf", "")
        ):
            return api.error_response(403, "csrf", "missing or wrong CSRF token; reload the page")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            access.SESSION_COOKIE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=access.https(request),
        )
        return response

    async def websocket(ws: WebSocket) -> None:
        if not access.origin_allowed(ws):
            # A response, not a bare close: it says why, with the security headers.
            why = f"Origin {ws.headers.get('origin')!r} may not open the websocket"
            await ws.send_denial_response(api.error_response(403, "foreignOrigin", why))
            return
        await ws.app.state.hub.serve(ws)

    async def openapi_json(request: Request) -> Response:
        if not access.authenticated(request, cookie=True):
            return api.error_response(401, "unauthorized", "a valid API token is required")
        return JSONResponse(openapi())

    async def favicon(request: Request) -> Response:
        # An SVG under the name every browser asks for: no page's visit logs a 404.
        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")

    routes = [
        *api.ROUTES,  # the API first: its sends are most of the requests
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/dashboard", dashboard),
        Route("/submit", submit, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/openapi.json", openapi_json),
        Route("/metrics", metrics),
        WebSocketRoute("/ws", websocket),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        # Host first: a rebound name gets nothing, not even a body read.
        Middleware(guard.TrustedHosts, allowed_hosts=settings.served_hosts()),
        Middleware(guard.BodyLimit, max_body=settings.max_body, timeout=settings.body_timeout),
    ]
    handlers: dict[Any, Any] = {RedisError: redis_error}  # one handler for HTTP and websocket
    return App(routes=routes, lifespan=lifespan, middleware=middleware, exception_handlers=handlers)


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


async def read_form(request: Request) -> dict[str, str] | Response:
    """A small urlencoded form (the login's): the first value of each field, or the refusal."""
    if access.media_type(request) != FORM_TYPE:
        return api.error_response(415, "unsupportedMediaType", f"send the form as {FORM_TYPE}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            return api.error_response(413, "bodyTooLarge", f"a form may have {FORM_LIMIT} bytes")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
