"""``rsmq-web`` (or ``python -m web``): the Procfile's web process, uvicorn on ``$HOST:$PORT``.

Settings are checked here, before uvicorn starts, so a bad one stops the process with a
message naming it; logs go to stdout, one line per event. uvicorn still reads its own
variables: ``WEB_CONCURRENCY`` (processes) and ``FORWARDED_ALLOW_IPS`` (whose
``X-Forwarded-*`` headers to trust: ``*`` behind Heroku's router).

The limits are uvicorn's, at the protocol, so nothing is buffered past them: a websocket frame
over the app's MAX_FRAME is refused from its header (close 1009) instead of after 16 MiB, a
request head over 16 KiB gets 400, and ``web.protocol`` gives the head a deadline that uvicorn
lacks. Bodies are bounded by ``web.guard.BodyLimit`` (MAX_BODY, BODY_TIMEOUT).
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from redis import ConnectionError as RedisConnectionError
from redis import RedisError
from redis import TimeoutError as RedisTimeoutError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from realtime import preflight
from realtime.preflight import CannotUse
from rsmq_core import logs
from rsmq_core.cli import entry_parser, invoked_as
from rsmq_core.client import connect
from rsmq_core.connection import HOW_TO_GET_REDIS, explain, is_misconfigured, mask_url, scrub

from .live import MAX_FRAME
from .protocol import GuardedH11
from .settings import SettingError, Settings

HEAD_MAX = 16 * 1024  # bytes of request line and headers; h11's default, said out loud
KEEP_ALIVE = 5  # seconds an idle keep-alive connection is kept


async def check_permissions(settings: Settings) -> None:
    """Stop at start when the ACL user lacks a permission the app needs (see
    realtime.preflight). A Redis that cannot be reached or refuses the password is no reason
    not to serve: requests answer 503 saying why until it can be used."""
    client = connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        connection=settings.connection,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        needs = preflight.web_needs(client, settings.ns, settings.queue)
        await preflight.check(client, needs, process="web app", ns=settings.ns)
    except (RedisError, RedisClusterException) as exc:  # no cluster node answers, say
        unreachable = isinstance(exc, RedisConnectionError | RedisTimeoutError)
        if unreachable and not is_misconfigured(exc):
            url = settings.redis_url
            print(
                f"web: Redis at {mask_url(url)} is not reachable yet "
                f"({scrub(explain(exc), url)}); serving 503 until it is. "
                f"No Redis? {HOW_TO_GET_REDIS}",
                file=sys.stderr,
            )
    finally:
        await client.aclose()


USAGE = """\
Serve the example app, the dashboard, the REST API and the websocket with uvicorn.
Every setting comes from the environment (the README's Settings table has them all):

  HOST, PORT         where to listen (default 0.0.0.0:8000); on an address other machines
                     reach, API_TOKEN is required unless ALLOW_ANONYMOUS=true
  API_TOKEN          the bearer token every API route and the dashboard's login need
  ALLOW_ANONYMOUS    true: serve the API without API_TOKEN on a non-loopback HOST
  ALLOWED_HOSTS      the names clients reach the app by (required on a non-loopback HOST)
  SESSION_SECRET     signs cookies and websocket tickets (default: derived from API_TOKEN)
  METRICS_TOKEN      a bearer token that opens /metrics only (API_TOKEN opens it too)
  REDIS_URL          redis://host:port/db, rediss:// for TLS (default redis://localhost:6379/0)
                     redis+sentinel://host:port,host:port/service/db through Redis Sentinel
  SEND_MIN_REPLICAS  replicas that must confirm each send (WAIT) before it is answered (0)
  SEND_REPLICA_TIMEOUT  seconds a send waits for those replicas (default 1.0)
  REDIS_CLUSTER      true when REDIS_URL names a node of a Redis Cluster (default false)
  REDIS_TLS_VERIFY, REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE
                     how a rediss:// server is checked, and a client certificate
  RSMQ_NS, QUEUE, ALLOWED_ORIGINS, LOG_LEVEL, LOG_FORMAT (line or json)
  limits: MAX_BODY, HEAD_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS, WS_KEEPALIVE, WS_BUFFER,
          WS_MAX_CHANNELS, WS_MAX_IDS, WS_SUBSCRIBE_RATE, WS_SUBSCRIBE_BURST,
          WS_REDIS_CONNECTIONS
  uvicorn's own: WEB_CONCURRENCY, FORWARDED_ALLOW_IPS"""


def main(argv: list[str] | None = None) -> int:
    # --help and --version answer (and exit) before any setting is read or Redis touched.
    entry_parser(invoked_as("web"), USAGE).parse_args(argv)
    try:
        settings = Settings.from_env()
        settings.served_hosts()
    except SettingError as exc:
        print(f"web: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(check_permissions(settings))
    except CannotUse as exc:
        print(f"web: cannot use Redis at {mask_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        "web.app:create_app",  # by name: each of WEB_CONCURRENCY processes makes its own app
        factory=True,
        host=settings.host,
        port=settings.port,
        ws_per_message_deflate=False,  # per-message deflate costs CPU for small JSON frames
        http=GuardedH11,
        ws="websockets-sansio",  # reads one message at a time: at most one frame buffered
        ws_max_size=MAX_FRAME,
        h11_max_incomplete_event_size=HEAD_MAX,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=KEEP_ALIVE,
        # SIGTERM stops the process within seconds, whatever its clients do: connections
        # still open after this are cut, then the lifespan closes (each step bounded).
        timeout_graceful_shutdown=2,
        log_config=logs.config(settings.log_level, settings.log_format),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
