"""The REST API fuzzed from its own OpenAPI document (schemathesis), in-process.

Every operation gets schemathesis' examples, coverage cases (each boundary, wrong types,
unknown fields, other methods) and random valid and invalid requests. Checks: no 500, only
documented status codes and content types, bodies that match their schemas, schema-valid
requests accepted and schema-invalid ones refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from starlette.testclient import TestClient

from rsmq_core import RSMQ, QueueExists
from rsmq_core._protocol import ID_RE, QNAME_RE
from web.openapi import openapi

schema = schemathesis.openapi.from_dict(openapi())
TOKEN = "fuzz-token-fuzz-token"  # the API is fuzzed closed: what it documents (security)


@schema.auth()
class Bearer:
    """Every generated request carries the token (the closed API's 401s are tested in
    test_attacks_auth)."""

    def get(self, case: Any, ctx: Any) -> str:
        return TOKEN

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    unsupported_method,
]


@pytest.fixture
def api(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_token=TOKEN)


def stage(q: RSMQ, case: Any) -> None:
    """Most generated queue names exist nowhere: make the named queues exist, each with a
    message, and aim an id parameter at that message, so success paths are fuzzed too."""
    names = [(case.path_parameters or {}).get("qname")]
    if isinstance(case.body, dict):
        names.append(case.body.get("to"))
    mid = None
    for name in names:
        if isinstance(name, str) and QNAME_RE.fullmatch(name):
            with contextlib.suppress(QueueExists):
                q.create_queue(name, maxsize=-1)
            mid = mid or q.send_message(name, "hello, wörld 🎉")
    given = (case.path_parameters or {}).get("id")
    if mid is not None and isinstance(given, str) and ID_RE.fullmatch(given):
        case.path_parameters["id"] = mid


def request_kwargs(case: Any) -> dict[str, Any]:
    """The case as arguments of Starlette's TestClient.request (httpx-style)."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)  # none are generated; httpx deprecates per-request cookies
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")
    return kwargs


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_answers_as_documented(case, api, queues):
    stage(queues, case)
    response = api.request(**request_kwargs(case))
    case.validate_response(response, checks=CHECKS)


def body_schema(path: str, method: str) -> dict[str, Any]:
    op = openapi()["paths"][path][method]
    found: dict[str, Any] = op["requestBody"]["content"]["application/json"]["schema"]
    return found


# Bodies the API refuses that the document once called valid (schemathesis found them).
REFUSED_BODIES = [
    ("/api/queues", "post", {"qname": "", "vt": 0}),
    ("/api/queues", "post", {"qname": "a b"}),
    ("/api/queues", "post", {"qname": "q", "maxsize": 0}),
    ("/api/queues/{qname}", "patch", {}),
    ("/api/queues/{qname}", "patch", {"maxsize": 1023}),
    ("/api/queues/{qname}/messages", "post", {"message": "", "messages": []}),
    ("/api/queues/{qname}/messages", "post", {"delay": 1}),
    ("/api/queues/{qname}/messages", "post", {"messages": [""] * 1001}),
    ("/api/queues/{qname}/receive", "post", {"count": 0}),
    ("/api/queues/{qname}/redrive", "post", {"to": "x:y"}),
    ("/api/queues/{qname}/redrive", "post", {"to": "q", "count": 1001}),
    ("/api/queues/{qname}/messages/{id}/visibility", "post", {"vt": 1, "rc": 0}),
]


@pytest.mark.parametrize(("path", "method", "body"), REFUSED_BODIES)
def test_the_document_refuses_what_the_api_refuses(api, path, method, body):
    url = path.format(qname="jobs", id="a" * 32)
    response = api.request(
        method.upper(), url, json=body, headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code in (400, 413), response.text
    assert not jsonschema_rs.validator_for(body_schema(path, method)).is_valid(body)
