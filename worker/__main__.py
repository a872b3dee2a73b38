"""``rsmq-worker`` (or ``python -m worker``): the Procfile's worker process."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
import threading

from redis import RedisError

from realtime.preflight import CannotUse
from rsmq_core import logs
from rsmq_core.cli import entry_parser, invoked_as
from rsmq_core.connection import explain, is_misconfigured, mask_url, scrub

from .settings import SettingError, Settings
from .worker import Handler, Hook, StartupFailed, Worker

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


def load_hooks(spec: str) -> tuple[Hook | None, Hook | None]:
    """The ``startup`` and ``shutdown`` of the handler's module, where it defines them."""
    module_name = spec.partition(":")[0]
    module = importlib.import_module(module_name)  # load_handler imported it already
    hooks: list[Hook | None] = []
    for name in ("startup", "shutdown"):
        hook = getattr(module, name, None)
        if hook is not None:
            where = f"HANDLER={spec!r}: {module_name}.{name}"
            if not callable(hook):
                raise SettingError(f"{where} is not a function ({type(hook).__name__})")
            try:
                inspect.signature(hook).bind({})
            except TypeError:
                raise SettingError(
                    f"{where} must take one argument, the context dict: def {name}(ctx)"
                ) from None
            except ValueError:
                pass  # no signature to read (a builtin): a wrong one fails when called
        hooks.append(hook)
    return hooks[0], hooks[1]


async def serve(
    settings: Settings, handler: Handler, startup: Hook | None = None, shutdown: Hook | None = None
) -> None:
    worker = Worker(settings, handler, startup=startup, shutdown=shutdown)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


USAGE = """\
Receive each message of QUEUES, give it to HANDLER, delete it when the handler returns.
Every setting comes from the environment (the README's Settings table has them all):

  HANDLER            module:function each message is given to; required
                     (HANDLER=worker.example:handle runs the example app's); the module's
                     startup(ctx) and shutdown(ctx), if defined, run once per process
  REDIS_URL          redis://host:port/db, rediss:// for TLS (default redis://localhost:6379/0)
  REDIS_CLUSTER      true when REDIS_URL names a node of a Redis Cluster (default false)
  REDIS_TLS_VERIFY, REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE
                     how a rediss:// server is checked, and a client certificate
  QUEUES             comma-separated queue names (default jobs)
  RSMQ_NS            key namespace (default rsmq)
  JOB_TIMEOUT        seconds a handler may run before its job fails "timed out" (default: none)
  SCHEDULES          JSON list of periodic sends to declare at start: {"queue", "cron" (UTC)
                     or "every" (seconds), "message", "name"?, "catch_up"? (once or skip)}
  RESULT_MAX_BYTES   largest handler return value kept with "done", as JSON (default 16384)
  REALTIME, POLL_INTERVAL, CONCURRENCY, VT, MAX_RECEIVES, RETRY_BACKOFF, RETRY_BACKOFF_MAX,
  SHUTDOWN_GRACE, DEAD_LETTER_SUFFIX, EVENT_TTL, HEARTBEAT, STAGGER, LOG_LEVEL,
  LOG_FORMAT (line or json), METRICS_PORT (serve this worker's own /metrics)"""


def main(argv: list[str] | None = None) -> int:
    # --help and --version answer (and exit) before any setting is read or Redis touched.
    entry_parser(invoked_as("worker"), USAGE).parse_args(argv)
    try:
        settings = Settings.from_env()
        handler = load_handler(settings.handler)
        startup, shutdown = load_hooks(settings.handler)
    except SettingError as exc:
        print(f"worker: bad setting: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings, handler, startup, shutdown))
    except StartupFailed as exc:
        log.error("cannot start: %s", exc)
        log.debug("the startup's traceback", exc_info=exc.__cause__)
        return 1
    except CannotUse as exc:
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
