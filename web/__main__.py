"""``python -m web``: the Procfile's web process, uvicorn on ``$HOST:$PORT``.

Settings are checked here, before uvicorn starts, so a bad one stops the process with a
message naming it; logs go to stdout, one line per event. uvicorn still reads its own
variables: ``WEB_CONCURRENCY`` (processes) and ``FORWARDED_ALLOW_IPS`` (whose
``X-Forwarded-*`` headers to trust: ``*`` behind Heroku's router).
"""

from __future__ import annotations

import sys

import uvicorn

from rsmq_core import logs
from rsmq_core.cli import entry_parser

from .settings import SettingError, Settings

USAGE = """\
Serve the example app, the dashboard, the REST API and the websocket with uvicorn.
Every setting comes from the environment (the README's Settings table has them all):

  HOST, PORT         where to listen (default 0.0.0.0:8000); on an address other machines
                     reach, API_TOKEN is required unless ALLOW_ANONYMOUS=true
  API_TOKEN          the bearer token every write and admin endpoint needs
  ALLOW_ANONYMOUS    true: serve the API without API_TOKEN on a non-loopback HOST
  REDIS_URL          redis://host:port/db, rediss:// for TLS (default redis://localhost:6379/0)
  REDIS_CLUSTER      true when REDIS_URL names a node of a Redis Cluster (default false)
  REDIS_TLS_VERIFY, REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE
                     how a rediss:// server is checked, and a client certificate
  RSMQ_NS, QUEUE, MAX_BODY, WS_KEEPALIVE, WS_BUFFER, ALLOWED_ORIGINS, LOG_LEVEL
  uvicorn's own: WEB_CONCURRENCY, FORWARDED_ALLOW_IPS"""


def main(argv: list[str] | None = None) -> int:
    # --help and --version answer (and exit) before any setting is read or Redis touched.
    entry_parser("python -m web", USAGE).parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingError as exc:
        print(f"web: bad setting: {exc}", file=sys.stderr)
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
