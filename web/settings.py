"""The web process's settings, read from the environment once, at start."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from rsmq_core import _protocol, logs
from rsmq_core.connection import DEFAULT_OPTIONS, ConnectionOptions, check_url


class SettingError(ValueError):
    """A setting from the environment that the web app cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    redis_cluster: bool = False  # REDIS_URL names a node of a Redis Cluster
    connection: ConnectionOptions = DEFAULT_OPTIONS  # REDIS_TLS_*
    ns: str = "rsmq"
    queue: str = "jobs"  # the example app's queue: the worker's default QUEUES
    api_token: str | None = None  # required for write and admin endpoints when set
    allow_anonymous: bool = False  # no API_TOKEN on purpose, on a non-loopback HOST
    max_body: int = 256 * 1024  # bytes a request body may have
    ws_keepalive: float = 20.0  # seconds; well under Heroku's 55 s idle cut
    ws_buffer: int = 500  # events a slow websocket may lag behind before it is closed
    allowed_origins: tuple[str, ...] = ()  # besides the app's own; "*" for any
    host: str = "0.0.0.0"  # every interface, as a Heroku dyno needs
    port: int = 8000  # Heroku sets PORT
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()

        def text(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        def number(name: str, default: float, low: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingError(f"{name}={raw!r} is not a number") from None
            if not low <= value < float("inf"):
                raise SettingError(f"{name}={raw!r} must be a finite number, at least {low}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if raw in ("", "0", "1", "false", "true", "no", "yes", "off", "on"):
                return raw in ("1", "true", "yes", "on") if raw else default
            raise SettingError(f"{name}={env[name]!r} is not a boolean (use true or false)")

        queue = text("QUEUE", d.queue)
        if not _protocol.QNAME_RE.fullmatch(queue):
            raise SettingError(f"QUEUE={queue!r} is not a valid queue name")
        origins = tuple(o.strip() for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip())
        redis_url = text("REDIS_URL", d.redis_url)
        try:
            connection = ConnectionOptions.from_env(env)
        except ValueError as exc:
            raise SettingError(str(exc)) from None
        try:
            check_url(redis_url)
        except ValueError as exc:
            raise SettingError(str(exc)) from None
        try:
            connection.redis_kwargs(redis_url)
        except ValueError as exc:
            raise SettingError(f"REDIS_URL: {exc}") from None
        port_text = text("PORT", str(d.port))
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SettingError(f"PORT={port_text!r} must be a port number, 1 to 65535")
        try:
            log_level = logs.check_level(text("LOG_LEVEL", d.log_level))
        except ValueError as exc:
            raise SettingError(str(exc)) from None
        host = text("HOST", d.host)
        api_token = env.get("API_TOKEN", "").strip() or None
        allow_anonymous = flag("ALLOW_ANONYMOUS", d.allow_anonymous)
        if api_token is None and not allow_anonymous and not is_loopback(host):
            raise SettingError(
                f"HOST={host!r} is reachable from other machines and API_TOKEN is not set, so "
                "anyone could send, delete and purge: set API_TOKEN to a secret, or "
                "ALLOW_ANONYMOUS=true to serve the API without one on purpose"
            )
        return cls(
            redis_url=redis_url,
            redis_cluster=flag("REDIS_CLUSTER", d.redis_cluster),
            host=host,
            port=int(port_text),
            log_level=log_level,
            connection=connection,
            ns=text("RSMQ_NS", d.ns),
            queue=queue,
            api_token=api_token,
            allow_anonymous=allow_anonymous,
            max_body=int(number("MAX_BODY", d.max_body, 1024)),
            ws_keepalive=number("WS_KEEPALIVE", d.ws_keepalive, 0.1),
            ws_buffer=int(number("WS_BUFFER", d.ws_buffer, 1)),
            allowed_origins=origins,
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only;
    a name other than ``localhost`` is not resolved here, so it counts as reachable."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
