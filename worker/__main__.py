"""``python -m worker``: the Procfile's worker process."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import threading

from redis import RedisError

from realtime.preflight import MissingPermissions
from rsmq_core import logs
from rsmq_core.connection import explain, is_misconfigured, mask_url, scrub

from .settings import SettingError, Settings
from .worker import Handler, Worker

log = logging.getLogger("worker")


def load_handler(spec: str) -> Handler:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingError(f"HANDLER={spec!r}: cannot import {module_name!r} ({exc})") from None
    handler = module
    for part in attr.split("."):
        handler = getattr(handler, part, None)  # type: ignore[assignment]
        if handler is None:
            raise SettingError(f"HANDLER={spec!r}: {module_name!r} has no {attr!r}")
    if not callable(handler):
        raise SettingError(f"HANDLER={spec!r} is not callable")
    return handler


async def serve(settings: Settings, handler: Handler) -> None:
    worker = Worker(settings, handler)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def main() -> int:
    try:
        settings = Settings.from_env()
        handler = load_handler(settings.handler)
    except SettingError as exc:
        print(f"worker: bad setting: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        asyncio.run(serve(settings, handler))
    except MissingPermissions as exc:
        log.error("cannot use Redis at %s: %s", mask_url(settings.redis_url), exc)
        return 2
    except RedisError as exc:
        if not is_misconfigured(exc):
            raise
        url = settings.redis_url
        log.error("cannot use Redis at %s: %s", mask_url(url), scrub(explain(exc), url))
        return 1
    # A sync handler's thread cannot be cancelled; its message was already released, so
    # exit now rather than wait for it past the grace period.
    if any(t.name.startswith("handler") for t in threading.enumerate()):
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
