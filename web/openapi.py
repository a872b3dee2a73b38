"""The REST API's OpenAPI document, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from rsmq_core import __version__
from rsmq_core._protocol import DEDUP_ID_RE, MAX_DEDUP_WINDOW, MAX_OFFSET, MAX_PEEK

_ERROR = {"$ref": "#/components/schemas/Error"}
# The API refuses an empty message (emptyMessage), though RSMQ takes one.
_NON_EMPTY = {"type": "string", "minLength": 1}
_NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,160}$"}
_QNAME = {"name": "qname", "in": "path", "required": True, "schema": _NAME}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-zA-Z0-9:]{32}$"},
}
_SECONDS = {"type": "integer", "minimum": 0, "maximum": 9999999}
_MAXSIZE = {
    "anyOf": [
        {"type": "integer", "minimum": 1024, "maximum": 65536},
        {"type": "integer", "enum": [-1]},
    ]
}
_COUNT = {"type": "integer", "minimum": 1, "maximum": 1000}
_DEDUP_WINDOW = {"type": "integer", "minimum": 1, "maximum": MAX_DEDUP_WINDOW}
_DEDUP_ID = {"type": "string", "pattern": f"^{DEDUP_ID_RE.pattern}$"}
# The header names the request; a batch's message i gets the dedup id "{key}/{i}".
_KEY_RE = DEDUP_ID_RE.pattern.replace("128", "120")
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": f"^{_KEY_RE}$"},
}
_RC = {"type": "integer", "minimum": 1}
_IDS = {"type": "array", "minItems": 1, "maxItems": 1000, "items": _ID["schema"]}
_EVENTS = {
    "type": "object",
    "properties": {
        "events": {
            "type": "array",
            "items": {"type": "object", "required": ["eid", "status", "queue", "id", "ts"]},
        }
    },
}
_STATUS = {
    "type": "object",
    "required": ["status", "queue", "id", "ts"],
    "properties": {
        "result": {
            "description": 'a "done" status: what the handler returned (any JSON; '
            "absent when it returned nothing); untrusted text, show it as such"
        }
    },
}


_SCHEDULE = {
    "type": "object",
    "required": ["name", "queue", "message", "cron", "every", "catch_up", "next_fire"],
    "properties": {
        "name": {"type": "string"},
        "queue": {"type": "string"},
        "message": {"type": "string"},
        "cron": {"type": "string", "nullable": True},
        "every": {"type": "integer", "nullable": True},
        "catch_up": {"type": "string", "enum": ["once", "skip"]},
        "next_fire": {"type": "integer", "nullable": True, "description": "epoch ms, UTC"},
    },
}
_SCHEDULE_NAME = {"name": "name", "in": "path", "required": True, "schema": _NAME}
_SCHEDULES = {
    "type": "object",
    "required": ["schedules"],
    "properties": {"schedules": {"type": "array", "items": _SCHEDULE}},
}


def _query(name: str, low: int, high: int | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    return {"name": name, "in": "query", "required": False, "schema": schema}


# Besides success: 401 without the token (API_TOKEN set); a write also 403 (a foreign Origin)
# and 415 (a body that is not application/json).
WRITE = (400, 401, 403, 404, 413, 415)
# Every operation but the health check needs the token (when API_TOKEN is set).
TOKEN: list[dict[str, list[str]]] = [{"token": []}]


def _body(
    properties: dict[str, Any], required: list[str] | None = None, **rules: Any
) -> dict[str, Any]:
    """A JSON object body; ``rules`` are further JSON Schema keywords (minProperties, oneOf)."""
    # not_: JSON Schema's "not" (a Python keyword)
    rules = {k.rstrip("_"): v for k, v in rules.items()}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        **rules,
    }
    if required:
        schema["required"] = required
    needed = bool(required or rules)
    return {"required": needed, "content": {"application/json": {"schema": schema}}}


def _answers(ok: int, schema: dict[str, Any] | None, *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        str(ok): {"description": "done"}
        | ({"content": {"application/json": {"schema": schema}}} if schema else {})
    }
    for code in errors:
        out[str(code)] = {
            "description": "refused",
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


def _op(
    summary: str,
    ok: int,
    schema: dict[str, Any] | None,
    *errors: int,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": _answers(ok, schema, *errors),
        "security": TOKEN,
    }
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    return op


def openapi() -> dict[str, Any]:
    obj = {"type": "object"}
    attrs = {"$ref": "#/components/schemas/Queue"}
    q, qi = [_QNAME], [_QNAME, _ID]
    # Open, but without the token (API_TOKEN set) only {"ok": ...}, and 503 {"ok": false}.
    health = _op("Redis and the scripts answer", 200, obj, 503)
    health["security"] = [{}, *TOKEN]
    health["responses"]["503"]["content"]["application/json"]["schema"] = {
        "anyOf": [
            _ERROR,
            {
                "type": "object",
                "required": ["ok"],
                "properties": {"ok": {"type": "boolean", "enum": [False]}},
            },
        ]
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "rsmq-realtime", "version": __version__},
        "paths": {
            "/api/health": {"get": health},
            "/api/queues": {
                # 409 indexConflict: {ns}:QUEUES is someone else's key, not a set
                "get": _op("List queues", 200, obj, 401, 409),
                "post": _op(
                    "Create a queue",
                    201,
                    attrs,
                    400,
                    401,
                    403,
                    409,
                    413,
                    415,
                    body=_body(
                        {
                            "qname": _NAME,
                            "vt": _SECONDS,
                            "delay": _SECONDS,
                            "maxsize": _MAXSIZE,
                            "dedup_window": _DEDUP_WINDOW,
                            "retention": _SECONDS,
                        },
                        ["qname"],
                    ),
                ),
            },
            "/api/queues/{qname}": {
                "get": _op("A queue's attributes", 200, attrs, 400, 401, 404, params=q),
                "patch": _op(
                    "Change vt, delay, maxsize, dedup_window or retention",
                    200,
                    attrs,
                    *WRITE,
                    params=q,
                    body=_body(
                        {
                            "vt": _SECONDS,
                            "delay": _SECONDS,
                            "maxsize": _MAXSIZE,
                            "dedup_window": _DEDUP_WINDOW,
                            "retention": _SECONDS,
                        },
                        minProperties=1,
                    ),
                ),
                "delete": _op("Delete a queue and its messages", 204, None, *WRITE, 409, params=q),
            },
            "/api/queues/{qname}/messages": {
                "post": _op(
                    "Send a message, or a batch (a dedup id seen within the queue's "
                    'dedup_window answers the first id, with "duplicate": true)',
                    202,
                    obj,
                    *WRITE,
                    params=[_QNAME, _IDEMPOTENCY_KEY],
                    body=_body(
                        {
                            "message": _NON_EMPTY,
                            "dedup_id": _DEDUP_ID,
                            "messages": {
                                "type": "array",
                                "items": {
                                    "anyOf": [
                                        _NON_EMPTY,
                                        {
                                            "type": "object",
                                            "properties": {
                                                "message": _NON_EMPTY,
                                                "dedup_id": _DEDUP_ID,
                                            },
                                            "required": ["message"],
                                            "additionalProperties": False,
                                        },
                                    ]
                                },
                                "maxItems": 1000,
                            },
                            "delay": _SECONDS,
                        },
                        # one message or a batch, never both; dedup_id goes with one message
                        oneOf=[{"required": ["message"]}, {"required": ["messages"]}],
                        not_={"required": ["messages", "dedup_id"]},
                    ),
                )
            },
            "/api/queues/{qname}/receive": {
                "post": _op(
                    "Receive (hide for vt)",
                    200,
                    obj,
                    *WRITE,
                    params=q,
                    body=_body({"vt": _SECONDS, "count": _COUNT}),
                )
            },
            "/api/queues/{qname}/pop": {
                "post": _op("Receive and delete", 200, obj, *WRITE, params=q)
            },
            "/api/queues/{qname}/redrive": {
                "post": _op(
                    "Move messages to another queue",
                    200,
                    obj,
                    *WRITE,
                    params=q,
                    body=_body(
                        {"to": _NAME, "count": _COUNT, "ids": _IDS},
                        ["to"],
                        # all (the oldest count) or the selected, never both
                        not_={"required": ["count", "ids"]},
                    ),
                )
            },
            "/api/queues/{qname}/purge": {
                "post": _op("Remove every message (keeps the queue)", 200, obj, *WRITE, params=q)
            },
            "/api/queues/{qname}/pause": {
                "post": _op(
                    "Pause: this project's workers stop receiving from the queue",
                    200,
                    obj,
                    *WRITE,
                    params=q,
                )
            },
            "/api/queues/{qname}/resume": {
                "post": _op("Resume a paused queue", 200, obj, *WRITE, params=q)
            },
            "/api/queues/{qname}/peek": {
                "get": _op(
                    "A page of the queue's messages, visible and hidden, in visible-at order, "
                    "without receiving them",
                    200,
                    {"$ref": "#/components/schemas/Peek"},
                    400,
                    401,
                    404,
                    params=[*q, _query("offset", 0, MAX_OFFSET), _query("count", 1, MAX_PEEK)],
                )
            },
            "/api/queues/{qname}/history": {
                "get": _op(
                    "The queue's own actions (paused, purged...), oldest first",
                    200,
                    _EVENTS,
                    400,
                    401,
                    404,
                    params=q,
                )
            },
            "/api/queues/{qname}/messages/{id}": {
                "delete": _op(
                    "Delete a message", 200, obj, *WRITE, params=qi, body=_body({"rc": _RC})
                )
            },
            "/api/queues/{qname}/messages/{id}/visibility": {
                "post": _op(
                    "Hide a message for vt more seconds",
                    200,
                    obj,
                    *WRITE,
                    params=qi,
                    body=_body({"vt": _SECONDS, "rc": _RC}, ["vt"]),
                )
            },
            "/api/queues/{qname}/messages/{id}/visible": {
                "post": _op("Make a message visible now (retry now)", 200, obj, *WRITE, params=qi)
            },
            "/api/queues/{qname}/messages/{id}/timeline": {
                "get": _op(
                    "Every event of a message the queue's event stream still holds",
                    200,
                    _EVENTS,
                    400,
                    401,
                    404,
                    params=qi,
                )
            },
            "/api/schedules": {
                "get": _op("Every schedule, with its next fire time", 200, _SCHEDULES, 401),
                "post": _op(
                    "Add a schedule (cron in UTC, or every N seconds), or replace the one of "
                    "that name; the workers fire it",
                    201,
                    _SCHEDULE,
                    *WRITE,
                    body=_body(
                        {
                            "name": _NAME,
                            "queue": _NAME,
                            "message": _NON_EMPTY,
                            "cron": {"type": "string", "description": "5 fields, in UTC"},
                            "every": {"type": "integer", "minimum": 1, "maximum": 9999999},
                            "catch_up": {"type": "string", "enum": ["once", "skip"]},
                        },
                        ["name", "queue", "message"],
                        oneOf=[{"required": ["cron"]}, {"required": ["every"]}],
                    ),
                ),
            },
            "/api/schedules/{name}": {
                "delete": _op("Remove a schedule", 200, obj, *WRITE, params=[_SCHEDULE_NAME])
            },
            "/api/queues/{qname}/messages/{id}/status": {
                "get": _op("A message's last status", 200, _STATUS, 400, 401, 404, params=qi)
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "description": "RSMQ's error name, or ours"},
                        "message": {"type": "string", "description": "RSMQ's text, exactly"},
                        "detail": {
                            "type": "string",
                            "description": "what was refused and why, when there is more to "
                            "say than RSMQ's text",
                        },
                    },
                },
                "Message": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "message": {
                            "type": "string",
                            "nullable": True,
                            "description": "the body; null when it is not UTF-8 (another "
                            "RSMQ client can store any bytes): then see message_base64",
                        },
                        "message_base64": {
                            "type": "string",
                            "format": "byte",
                            "description": "only for a body that is not UTF-8: its bytes, base64",
                        },
                        "rc": {"type": "integer"},
                        "fr": {"type": "integer"},
                        "sent": {"type": "number"},
                    },
                },
                "Peek": {
                    "type": "object",
                    "properties": {
                        "messages": {
                            "type": "array",
                            "items": {
                                "allOf": [
                                    {"$ref": "#/components/schemas/Message"},
                                    {
                                        "type": "object",
                                        "properties": {
                                            "visible_at": {"type": "integer"},
                                            "visible": {"type": "boolean"},
                                        },
                                    },
                                ]
                            },
                        },
                        "offset": {"type": "integer"},
                        "total": {"type": "integer"},
                        "next_offset": {"type": "integer", "nullable": True},
                        "paused_since": {"type": "integer", "nullable": True},
                    },
                },
                "Queue": {
                    "type": "object",
                    "properties": {
                        k: {"type": "integer"}
                        for k in (
                            "vt",
                            "delay",
                            "maxsize",
                            "totalrecv",
                            "totalsent",
                            "created",
                            "modified",
                            "msgs",
                            "hiddenmsgs",
                            "dedup_window",
                            "retention",
                            "totalexpired",
                        )
                    }
                    | {"qname": {"type": "string"}},
                },
            },
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }
