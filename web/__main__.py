"""``python -m web``: the Procfile's web process, uvicorn on ``$HOST:$PORT``.

Settings are checked here, before uvicorn starts, so a bad one stops the process with a
message naming it; logs go to stdout, one line per event. uvicorn still reads its own
variables: ``WEB_CONCURRENCY`` (processes) and ``FORWARDED_ALLOW_IPS`` (whose
``X-Forwarded-*`` headers to trust: ``*`` behind Heroku's router).
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from redis import RedisError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from realtime import preflight
from realtime.preflight import MissingPermissions
from rsmq_core import logs
from rsmq_core.client import connect
from rsmq_core.connection import mask_url

from .settings import SettingError, Settings


async def check_permissions(settings: Settings) -> None:
    """Stop at start when the ACL user lacks a permission the app needs (see
    realtime.preflight). A Redis that cannot be reached or refuses the password is no reason
    not to serve: requests answer 503 saying why until it can be used."""
    client = connect(settings.redis_url, cluster=settings.redis_cluster,
                     connection=settings.connection, socket_connect_timeout=5,
                     retry=Retry(NoBackoff(), 0))  # fmt: skip
    try:
        needs = preflight.web_needs(client, settings.ns, settings.queue)
        await preflight.check(client, needs, process="web app", ns=settings.ns)
    except (RedisError, RedisClusterException):  # no cluster node answers, say
        pass
    finally:
        await client.aclose()


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingError as exc:
        print(f"web: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(check_permissions(settings))
    except MissingPermissions as exc:
        print(f"web: cannot use Redis at {mask_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        "web.app:create_app",  # by name: each of WEB_CONCURRENCY processes makes its own app
        factory=True,
        host=settings.host,
        port=settings.port,
        ws_per_message_deflate=False,  # per-message deflate costs CPU for small JSON frames
        log_config=logs.config(settings.log_level),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
