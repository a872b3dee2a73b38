"""An example handler module with a startup and a shutdown
(``HANDLER=worker.example_lifecycle:handle``).

``startup(ctx)`` runs once per worker process, before its first receive, and puts in ``ctx``
what every job shares: here a Redis connection pool standing for a database pool or an HTTP
client. Each job reaches it as ``job.context``. ``shutdown(ctx)`` runs once, on SIGTERM, after
the last handler finished (or was given up on), and closes it. A startup that raises stops
the worker before it takes any message.

The work: count the words of each message into the hash ``RESULTS``, by message id. A body
``{"busy": n}`` stands for a service that answers "busy, call again in n seconds": raising
``Retry(n)`` hands the message back for n seconds instead of the failure backoff.
"""

from __future__ import annotations

import json
import os
from typing import Any

from rsmq_core.client import connect
from rsmq_core.connection import ConnectionOptions

from .job import Job, Retry

RESULTS = "example:word-counts"


async def startup(ctx: dict[str, Any]) -> None:
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    client = connect(url, connection=ConnectionOptions.from_env(os.environ))
    await client.ping()  # a pool that cannot connect stops the worker now, not at each job
    ctx["results"] = client


async def handle(job: Job) -> None:
    try:
        data = json.loads(job.body)
    except ValueError:
        data = None
    if isinstance(data, dict) and "busy" in data:
        raise Retry(data["busy"])  # a bad delay raises TypeError or ValueError: a failure
    await job.context["results"].hset(RESULTS, job.id, len(job.body.split()))


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx.pop("results").aclose()
