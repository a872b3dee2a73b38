"""The baseline of ``bench.web``'s HTTP sends: a bare Starlette endpoint that does the same
send (``AsyncRSMQ.send_message``) through uvicorn, with nothing else. What the app costs beyond
the send is its figure over this one, measured in the same run (issue: the POST at 0.8x of it).

    python -m uvicorn --factory bench.bare:create_app --port 8001   # REDIS_URL, RSMQ_NS
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rsmq_core import AsyncRSMQ


def create_app() -> Starlette:
    rsmq = AsyncRSMQ.from_url(os.environ["REDIS_URL"], ns=os.environ["RSMQ_NS"])

    async def send(request: Request) -> Response:
        data = await request.json()
        mid = await rsmq.send_message(request.path_params["qname"], data["message"])
        return JSONResponse({"id": mid}, status_code=202)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/api/queues/{qname}/messages", send, methods=["POST"]),
            Route("/api/health", health),
        ]
    )
