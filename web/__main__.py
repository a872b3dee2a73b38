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

from .settings import SettingError, Settings


def main() -> int:
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
        # SIGTERM stops the process within seconds, whatever its clients do: connections
        # still open after this are cut, then the lifespan closes (each step bounded).
        timeout_graceful_shutdown=2,
        log_config=logs.config(settings.log_level),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
