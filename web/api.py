"""The REST API: queues and messages as JSON, with RSMQ's errors.

Errors are ``{"error": <RSMQ error name or our own>, "message": ..., "detail": ...}`` (message
RSMQ's text, detail only when there is more to say) with 400 (bad input), 401 (token), 403 (a
foreign Origin), 404 (no such queue or status), 409 (queue exists), 413 (too large), 415 (not
JSON) — never a 500 for bad input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from realtime import EventLog, StatusEvent, events_json
from rsmq_core import AsyncRSMQ, Message, MessageTooLong, NotReplicated, RSMQError
from rsmq_core._protocol import QNAME_RE, check_dedup_id, check_id
from rsmq_core.connection import explain

from . import auth as access
from .outage import Outage, is_outage

log = logging.getLogger(__name__)

STATUS_BY_ERROR = {
    "queueNotFound": 404,
    "queueExists": 409,
    "messageTooLong": 413,
    "indexConflict": 409,  # {ns}:QUEUES is someone else's key: no request of ours can fix it
}

Endpoint = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """A refusal of ours (not RSMQ's), with its HTTP status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def error_response(
    status: int, error: str, message: str, detail: str | None = None
) -> JSONResponse:
    """``detail`` (RSMQError.detail: what was refused, and why) only when there is one, so
    ``message`` stays RSMQ's text byte for byte."""
    body = {"error": error, "message": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body, at most MAX_BODY bytes, {} when there is none."""
    limit: int = request.app.state.settings.max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "bodyTooLarge", f"the request body may have at most {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "bodyTooLarge", f"the request body may have at most {limit} bytes")
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python goes
        raise ApiError(400, "invalidJson", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalidJson", "the request body must be a JSON object")
    return data


def message_json(m: Message | None) -> dict[str, Any] | None:
    """A body that is not UTF-8 (another RSMQ client can store any bytes) comes as
    ``"message": null`` and ``"message_base64"``: JSON text cannot carry it otherwise."""
    return None if m is None else m.to_json()


def endpoint(*, auth: bool = True, session: bool = False) -> Callable[[Endpoint], Endpoint]:
    """RSMQ and API errors as JSON, after the checks at the door: a foreign Origin may change
    nothing (403), a body must be JSON (415), and with ``auth`` the API token when one is set
    (401). With ``session`` (the dashboard's own routes, /dashboard/api/...): the API token or
    the dashboard's login cookie (401), and a change made with the cookie must carry the
    page's CSRF token in ``X-CSRF-Token`` (403), so another site cannot act through it."""

    def wrap(handler: Endpoint) -> Endpoint:
        async def run(request: Request) -> Response:
            if request.method not in access.SAFE_METHODS and not access.origin_allowed(request):
                origin = request.headers.get("origin")
                return error_response(
                    403, "foreignOrigin", f"a page of {origin} may not change anything here"
                )
            if session:
                refused = session_refusal(request)
                if refused is not None:
                    return refused
            elif auth and not access.authenticated(request, cookie=False):
                refusal = error_response(
                    401,
                    "unauthorized",
                    "a valid API token is required: Authorization: Bearer <API_TOKEN>",
                )
                refusal.headers["WWW-Authenticate"] = 'Bearer realm="api"'
                return refusal
            if access.has_body(request) and access.media_type(request) != access.JSON_TYPE:
                return error_response(
                    415,
                    "unsupportedMediaType",
                    "the request body must be JSON: send Content-Type: application/json",
                )
            outage: Outage = request.app.state.outage
            try:
                response = await handler(request)
            except RSMQError as exc:
                status = STATUS_BY_ERROR.get(exc.name, 400)
                return error_response(status, exc.name, exc.message, exc.detail)
            except ApiError as exc:
                return error_response(exc.status, exc.error, exc.message)
            except RedisError as exc:
                if not is_outage(exc):
                    raise
                return outage.refuse(exc)
            if response.status_code != 503:  # /api/health's own 503 ends no outage
                outage.served()
            return response

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return wrap


def session_refusal(request: Request) -> Response | None:
    if not access.authenticated(request, cookie=True):
        return error_response(401, "unauthorized", "a login is required: log in at /login")
    if (
        request.method not in access.SAFE_METHODS
        and not access.keys_of(request).bearer_valid(request.headers.get("authorization"))
        and not access.csrf_matches(request, request.headers.get("x-csrf-token", ""))
    ):
        return error_response(403, "csrf", "missing or wrong CSRF token; reload the page")
    return None


def rsmq_of(request: Request) -> AsyncRSMQ:
    rsmq: AsyncRSMQ = request.app.state.rsmq
    return rsmq


def events_of(request: Request) -> EventLog:
    events: EventLog = request.app.state.events
    return events


def qname(request: Request) -> str:
    value: str = request.path_params["qname"]
    return value


def options(data: dict[str, Any], *names: str) -> dict[str, Any]:
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ApiError(400, "unknownField", f"unknown field(s): {', '.join(unknown)}")
    # null is not "the default": the document says what each field is, and null is none of them.
    nulls = [n for n in names if n in data and data[n] is None]
    if nulls:
        raise ApiError(
            400, "invalidValue", f"{', '.join(nulls)} may not be null (leave a field out instead)"
        )
    return {n: data[n] for n in names if n in data}


@endpoint()
async def list_queues(request: Request) -> Response:
    return JSONResponse({"queues": await rsmq_of(request).list_queues()})


@endpoint()
async def create_queue(request: Request) -> Response:
    data = await read_json(request)
    settings = options(data, "qname", "vt", "delay", "maxsize", "dedup_window", "retention")
    name = settings.pop("qname", None)
    await rsmq_of(request).create_queue(name, **settings)
    attrs = await rsmq_of(request).get_queue_attributes(name)
    return JSONResponse({"qname": name, **dataclasses.asdict(attrs)}, status_code=201)


@endpoint()
async def get_queue(request: Request) -> Response:
    attrs = await rsmq_of(request).get_queue_attributes(qname(request))
    return JSONResponse({"qname": qname(request), **dataclasses.asdict(attrs)})


async def set_queue(request: Request) -> Response:
    settings = options(
        await read_json(request), "vt", "delay", "maxsize", "dedup_window", "retention"
    )
    attrs = await rsmq_of(request).set_queue_attributes(qname(request), **settings)
    changed = ", ".join(f"{k}={v}" for k, v in settings.items())
    await record_actions(request, [StatusEvent("changed", qname(request), "", detail=changed)])
    return JSONResponse({"qname": qname(request), **dataclasses.asdict(attrs)})


@endpoint()
async def delete_queue(request: Request) -> Response:
    await rsmq_of(request).delete_queue(qname(request))
    return Response(status_code=204)


# An Idempotency-Key names the request: a batch's message i gets the dedup id "{key}/{i}",
# which must fit the 128 characters of a dedup id.
MAX_IDEMPOTENCY_KEY = 120


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400,
            "invalidFormat",
            f"Idempotency-Key may have at most {MAX_IDEMPOTENCY_KEY} characters (got {len(key)})",
        )
    return check_dedup_id(key)


def messages_of(request: Request, fields: dict[str, Any]) -> tuple[list[Any], list[Any] | None]:
    """The bodies, and a dedup id per message (None for one without; no list when none has
    one): a message's own "dedup_id", else the Idempotency-Key header's ("{key}/{i}" in a
    batch)."""
    key = idempotency_key(request)
    if "message" in fields:
        own = fields.get("dedup_id", key)
        return [fields["message"]], None if own is None else [own]
    if "dedup_id" in fields:
        raise ApiError(400, "unknownField", "a batch's dedup ids go in its messages")
    items = fields["messages"]
    if not isinstance(items, list):
        return items, None  # send_messages says what is wrong with it
    bodies: list[Any] = []
    dedup: list[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            extra = sorted(set(item) - {"message", "dedup_id"})
            if extra or "message" not in item:
                raise ApiError(
                    400,
                    "invalidValue",
                    f"messages[{i}]: an object has a message and may have a dedup_id, nothing else",
                )
            bodies.append(item["message"])
            dedup.append(item.get("dedup_id", None if key is None else f"{key}/{i}"))
        else:
            bodies.append(item)
            dedup.append(None if key is None else f"{key}/{i}")
    return bodies, dedup if any(d is not None for d in dedup) else None


def refuse_empty(bodies: Any, *, batch: bool) -> None:
    """An empty body is refused here, not in rsmq_core: RSMQ's library takes "" (and must go
    on taking it), but a job without a body is a mistake a person made in a form."""
    if not isinstance(bodies, list):
        return  # send_messages says what is wrong with it
    for i, body in enumerate(bodies):
        if body == "":
            where = f"messages[{i}] is" if batch else "the message is"
            raise ApiError(400, "emptyMessage", f"{where} empty: write at least one character")


async def with_limit(request: Request, exc: MessageTooLong) -> MessageTooLong:
    """RSMQ's "Message too long", with the queue's limit in ``detail``: what to cut it to."""
    maxsize = (await rsmq_of(request).get_queue_attributes(qname(request))).maxsize
    limit = f"this queue takes messages of at most {maxsize} bytes (UTF-8)"
    return MessageTooLong(detail=f"{exc.detail}: {limit}" if exc.detail else limit)


async def send(request: Request, data: dict[str, Any]) -> Response:
    """Send one message ({"message"}) or a batch ({"messages"}); record "queued".

    With dedup ids, a message whose id was sent within the queue's dedup window answers the
    first message's id with "duplicate": true, and is neither recorded nor announced again."""
    sender: AsyncRSMQ = request.app.state.sender
    name = qname(request)
    fields = options(data, "message", "messages", "delay", "dedup_id")
    delay = fields.get("delay")
    if ("message" in fields) == ("messages" in fields):
        raise ApiError(400, "missingParameter", "give either message or messages")
    bodies, dedup = messages_of(request, fields)
    refuse_empty(bodies, batch="messages" in fields)
    unconfirmed: NotReplicated | None = None
    duplicate: list[bool] | None = None
    try:
        if dedup is not None:
            sent = await sender._send_deduplicated(name, bodies, dedup, delay=delay)
            ids, duplicate = [mid for mid, _ in sent], [dup for _, dup in sent]
        elif "messages" in fields:
            ids = await sender.send_messages(name, bodies, delay=delay)
        else:
            ids = [await sender.send_message(name, fields["message"], delay=delay)]
    except NotReplicated as exc:
        # Stored on the master: a 5xx would invite a resend (a duplicate). The answer is the
        # ids, as always, with a warning that the replicas did not confirm them in time.
        ids, unconfirmed = list(exc.ids), exc
    except MessageTooLong as exc:
        raise await with_limit(request, exc) from None
    # From here the messages are stored and their ids are the answer: nothing may fail the
    # request now, as an error would invite a resend (and a duplicate). The send itself
    # recorded "queued" (before the answer: the page subscribes to the id as soon as it has
    # it), then woke the workers, so it is the first event of the message's life.
    body: dict[str, Any] = {"ids": ids} if "messages" in fields else {"id": ids[0]}
    if duplicate is not None:
        body["duplicate"] = duplicate if "messages" in fields else duplicate[0]
    if unconfirmed is not None:
        body["warning"] = {"error": unconfirmed.name, "message": unconfirmed.message}
    return JSONResponse(body, status_code=202)


@endpoint()
async def send_messages(request: Request) -> Response:
    return await send(request, await read_json(request))


@endpoint()
async def receive(request: Request) -> Response:
    fields = options(await read_json(request), "vt", "count")
    rsmq, name = rsmq_of(request), qname(request)
    if "count" in fields:
        got = await rsmq.receive_messages(name, fields["count"], vt=fields.get("vt"))
        return JSONResponse({"messages": [message_json(m) for m in got]})
    return JSONResponse({"message": message_json(await rsmq.receive_message(name, **fields))})


@endpoint()
async def pop(request: Request) -> Response:
    options(await read_json(request))
    return JSONResponse(
        {"message": message_json(await rsmq_of(request).pop_message(qname(request)))}
    )


async def delete_message(request: Request) -> Response:
    fields = options(await read_json(request), "rc")
    mid = request.path_params["id"]
    deleted = await rsmq_of(request).delete_message(qname(request), mid, rc=fields.get("rc"))
    if deleted:
        await record_actions(request, [StatusEvent("deleted", qname(request), mid)])
    return JSONResponse({"deleted": deleted})


@endpoint()
async def change_visibility(request: Request) -> Response:
    fields = options(await read_json(request), "vt", "rc")
    if "vt" not in fields:
        raise ApiError(400, "missingParameter", "vt is required")
    changed = await rsmq_of(request).change_message_visibility(
        qname(request), request.path_params["id"], fields["vt"], rc=fields.get("rc")
    )
    return JSONResponse({"changed": changed})


async def redrive(request: Request) -> Response:
    """All (the oldest ``count``), or the messages ``ids``, to the queue ``to``."""
    fields = options(await read_json(request), "to", "count", "ids")
    if "to" not in fields:
        raise ApiError(
            400, "missingParameter", "to (the queue to move the messages to) is required"
        )
    name, to = qname(request), fields["to"]
    if "ids" in fields:
        if "count" in fields:
            raise ApiError(400, "invalidValue", "give either ids or count, not both")
        new_ids = await rsmq_of(request).move_messages(name, fields["ids"], to)
        moved = {old: new for old, new in zip(fields["ids"], new_ids, strict=True) if new}
        await record_actions(
            request,
            [
                StatusEvent("redriven", name, old, dead_letter_id=new, detail=f"to {to}")
                for old, new in moved.items()
            ],
        )
        return JSONResponse({"moved": len(moved), "ids": moved})
    count = await rsmq_of(request).redrive_messages(name, to, count=fields.get("count", 1000))
    await record_actions(
        request, [StatusEvent("redriven", name, "", detail=f"{count} message(s) to {to}")]
    )
    return JSONResponse({"moved": count})


async def make_visible(request: Request) -> Response:
    """Retry now: a hidden or delayed message becomes visible at once."""
    options(await read_json(request))
    name, mid = qname(request), request.path_params["id"]
    changed = await rsmq_of(request).make_visible(name, mid)
    if changed:
        await record_actions(request, [StatusEvent("made visible", name, mid)])
    return JSONResponse({"changed": changed})


async def purge(request: Request) -> Response:
    """Every message of the queue removed (the dashboard asks for a confirmation first)."""
    options(await read_json(request))
    name = qname(request)
    count = await rsmq_of(request).purge_queue(name)
    await record_actions(request, [StatusEvent("purged", name, "", detail=f"{count} message(s)")])
    return JSONResponse({"purged": count})


async def _set_paused(request: Request, paused: bool) -> Response:
    options(await read_json(request))
    name, rsmq = qname(request), rsmq_of(request)
    changed = await (rsmq.pause_queue(name) if paused else rsmq.resume_queue(name))
    if changed:
        await record_actions(request, [StatusEvent("paused" if paused else "resumed", name, "")])
    return JSONResponse({"paused": paused, "changed": changed})


async def pause(request: Request) -> Response:
    """This project's workers stop receiving from the queue (sends still accepted)."""
    return await _set_paused(request, True)


async def resume(request: Request) -> Response:
    return await _set_paused(request, False)


def _query_int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, "invalidValue", f"{name} must be an integer (got {text!r})") from None


async def peek(request: Request) -> Response:
    """A page of the queue's messages, visible and hidden, without receiving any."""
    unknown = sorted(set(request.query_params) - {"offset", "count"})
    if unknown:
        raise ApiError(400, "unknownField", f"unknown parameter(s): {', '.join(unknown)}")
    page = await rsmq_of(request).peek_messages(
        qname(request),
        offset=_query_int(request, "offset", 0),
        count=_query_int(request, "count", 50),
    )
    return JSONResponse(page.to_json())


async def timeline(request: Request) -> Response:
    """Every event of one message the queue's event stream still holds, oldest first."""
    name, mid = qname(request), check_id(request.path_params["id"])
    await rsmq_of(request).get_queue_attributes(name)  # 404 for a queue that does not exist
    rows = await events_of(request).timeline(name, mid)
    return JSONResponse({"queue": name, "id": mid, "events": events_json(rows)})


async def history(request: Request) -> Response:
    """The queue's own actions (paused, resumed, purged, changed, redriven all), oldest first."""
    name = qname(request)
    await rsmq_of(request).get_queue_attributes(name)
    rows = await events_of(request).timeline(name, "")
    return JSONResponse({"queue": name, "events": events_json(rows)})


async def record_actions(request: Request, events: list[StatusEvent]) -> None:
    """Record what an operator did, and from where. The action is done already: an event
    that cannot be recorded is logged, and the answer still says what was done."""
    where = "dashboard" if request.url.path.startswith("/dashboard/") else "api"
    host = request.client.host if request.client is not None else "unknown"
    log_ = events_of(request)
    try:
        for event in events:
            await log_.record(dataclasses.replace(event, by=f"{where} {host}"))
    except RedisError as exc:
        log.warning("%s: done, but could not record it: %s", events[0].status, explain(exc))


@endpoint()
async def message_status(request: Request) -> Response:
    name, mid = qname(request), check_id(request.path_params["id"])
    await rsmq_of(request).get_queue_attributes(name)  # 404 for a queue that does not exist
    last = await events_of(request).last_status(name, mid)
    if last is None:
        return error_response(404, "statusNotFound", "no status is known for this message")
    return JSONResponse(json.loads(last.to_json()))


@endpoint(auth=False)
async def health(request: Request) -> Response:
    """Exercises Redis and the scripts: the example queue's attributes, one script call. With
    API_TOKEN set and no token given, only whether all is well (the rest names internals)."""
    rsmq, queue = rsmq_of(request), request.app.state.settings.queue
    detailed = access.authenticated(request, cookie=False)
    try:
        attrs = await rsmq.get_queue_attributes(queue)
    except RSMQError as exc:
        return JSONResponse(
            {"ok": True, "queue": queue, "note": exc.message} if detailed else {"ok": True}
        )
    except Exception as exc:  # Redis down, or anything else: unhealthy, and why
        if not detailed:
            return JSONResponse({"ok": False}, status_code=503)
        return error_response(503, "unhealthy", f"{type(exc).__name__}: {explain(exc)}")
    return JSONResponse(
        {"ok": True, "queue": queue, "msgs": attrs.msgs} if detailed else {"ok": True}
    )


async def list_schedules(request: Request) -> Response:
    """Every schedule, with its next fire time (epoch ms, UTC)."""
    schedules = await rsmq_of(request).list_schedules()
    return JSONResponse({"schedules": [s.to_json() for s in schedules]})


async def add_schedule(request: Request) -> Response:
    """Add a schedule, or replace the one of that name (its next tick kept when its timing
    is the same); the workers fire it."""
    fields = options(await read_json(request), *SCHEDULE_FIELDS)
    missing = [f for f in ("name", "queue", "message") if f not in fields]
    if missing:
        raise ApiError(400, "missingParameter", f"{', '.join(missing)} is required")
    refuse_empty([fields["message"]], batch=False)  # as a send is: every tick an empty job
    rsmq = rsmq_of(request)
    # The queue first: 404 for a schedule of a queue that is not there, whatever else is wrong.
    if isinstance(fields["queue"], str) and QNAME_RE.fullmatch(fields["queue"]):
        await rsmq.get_queue_attributes(fields["queue"])
    schedule = await rsmq.add_schedule(
        fields["name"],
        fields["queue"],
        fields["message"],
        cron=fields.get("cron"),
        every=fields.get("every"),
        catch_up=fields.get("catch_up", "once"),
    )
    return JSONResponse(schedule.to_json(), status_code=201)


SCHEDULE_FIELDS = ("name", "queue", "message", "cron", "every", "catch_up")


async def remove_schedule(request: Request) -> Response:
    options(await read_json(request))
    return JSONResponse(
        {"removed": await rsmq_of(request).remove_schedule(request.path_params["name"])}
    )


# The operator's actions: under /api with the API token, and the same under /dashboard/api
# for the logged-in dashboard (its cookie and CSRF token; see endpoint).
ACTIONS: list[tuple[str, Endpoint, list[str]]] = [
    ("/queues/{qname}", set_queue, ["PATCH"]),
    ("/queues/{qname}/peek", peek, ["GET"]),
    ("/queues/{qname}/history", history, ["GET"]),
    ("/queues/{qname}/redrive", redrive, ["POST"]),
    ("/queues/{qname}/purge", purge, ["POST"]),
    ("/queues/{qname}/pause", pause, ["POST"]),
    ("/queues/{qname}/resume", resume, ["POST"]),
    ("/queues/{qname}/messages/{id}", delete_message, ["DELETE"]),
    ("/queues/{qname}/messages/{id}/visible", make_visible, ["POST"]),
    ("/queues/{qname}/messages/{id}/timeline", timeline, ["GET"]),
    ("/schedules", list_schedules, ["GET"]),
    ("/schedules", add_schedule, ["POST"]),
    ("/schedules/{name}", remove_schedule, ["DELETE"]),
]

ROUTES = [
    # The busiest first: Starlette tries each route's pattern in turn, at every request.
    Route("/api/queues/{qname}/messages", send_messages, methods=["POST"]),
    Route("/api/health", health),
    Route("/api/queues", list_queues),
    Route("/api/queues", create_queue, methods=["POST"]),
    Route("/api/queues/{qname}", get_queue),
    Route("/api/queues/{qname}", delete_queue, methods=["DELETE"]),
    Route("/api/queues/{qname}/receive", receive, methods=["POST"]),
    Route("/api/queues/{qname}/pop", pop, methods=["POST"]),
    Route("/api/queues/{qname}/messages/{id}/visibility", change_visibility, methods=["POST"]),
    Route("/api/queues/{qname}/messages/{id}/status", message_status),
    *(Route("/api" + path, endpoint()(run), methods=methods) for path, run, methods in ACTIONS),
    *(
        Route("/dashboard/api" + path, endpoint(session=True)(run), methods=methods)
        for path, run, methods in ACTIONS
    ),
]
