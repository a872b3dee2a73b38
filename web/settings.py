"""The web process's settings, read from the environment once, at start."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rsmq_core import _protocol
from rsmq_core.connection import DEFAULT_OPTIONS, ConnectionOptions
from rsmq_core.environment import EnvReader
from rsmq_core.environment import SettingError as SettingError  # raised here, caught by callers

B64TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750's b64token
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    redis_cluster: bool = False  # REDIS_URL names a node of a Redis Cluster
    connection: ConnectionOptions = DEFAULT_OPTIONS  # REDIS_TLS_*
    ns: str = "rsmq"
    send_min_replicas: int = 0  # replicas that must confirm a send (WAIT) before it is answered
    send_replica_timeout: float = 1.0  # seconds a send waits for them
    queue: str = "jobs"  # the example app's queue: the worker's default QUEUES
    api_token: str | None = None  # when set, every route but the example page needs auth
    metrics_token: str | None = None  # also opens /metrics (and only it): a scraper's token
    session_secret: str | None = None  # signs cookies and tickets; derived from api_token if unset
    allow_anonymous: bool = False  # no API_TOKEN on purpose, on a non-loopback HOST
    max_body: int = 256 * 1024  # bytes a request body may have
    ws_keepalive: float = 20.0  # seconds; well under Heroku's 55 s idle cut
    ws_buffer: int = 500  # events a slow websocket may lag behind before it is closed
    ws_max_channels: int = 10_000  # queues one process follows for all its websockets
    ws_max_ids: int = 1000  # ids one subscribe frame may name
    ws_subscribe_rate: float = 10.0  # subscribe frames a second per websocket, after...
    ws_subscribe_burst: int = 200  # ...a burst of this many (twice the queues it may follow)
    ws_redis_connections: int = 10  # the websockets' own Redis pool, apart from the API's
    allowed_origins: tuple[str, ...] = ()  # besides the app's own; "*" for any
    # Host names the app answers to; "*.example.com" for the names under example.com, "*" for
    # any. From the environment: loopback names when HOST is loopback, else none, and then
    # the app is not made (see served_hosts) until ALLOWED_HOSTS is set.
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    head_timeout: float = 10.0  # seconds for a request head, from connect or the last response
    body_timeout: float = 30.0  # seconds for a request body, from the end of its head
    max_connections: int = 2000  # connections and requests at once per process; then 503
    host: str = "0.0.0.0"  # every interface, as a Heroku dyno needs
    port: int = 8000  # Heroku sets PORT
    log_level: str = "INFO"
    log_format: str = "line"  # LOG_FORMAT: "line" or "json" (rsmq_core.logs)

    def served_hosts(self) -> tuple[str, ...]:
        """ALLOWED_HOSTS; SettingError saying what to set when there are none (an app that
        refuses every Host must not start as if it served)."""
        if not self.allowed_hosts:
            raise SettingError(
                f"ALLOWED_HOSTS is not set and HOST={self.host} is not a loopback address: set "
                "ALLOWED_HOSTS to the names clients reach this app by (comma-separated; "
                "*.herokuapp.com on Heroku, * for any)"
            )
        return self.allowed_hosts

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = EnvReader(env)
        d = cls()
        queue = reader.text("QUEUE", d.queue)
        if not _protocol.QNAME_RE.fullmatch(queue):
            raise SettingError(f"QUEUE={queue!r} is not a valid queue name")
        origins = tuple(o.strip() for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip())
        host = reader.text("HOST", d.host)
        hosts = tuple(allowed_host(h) for h in env.get("ALLOWED_HOSTS", "").split(",") if h.strip())
        if not hosts and is_loopback(host):
            hosts = LOOPBACK_HOSTS
        redis_url, connection = reader.redis(d.redis_url)
        min_replicas = reader.text("SEND_MIN_REPLICAS", str(d.send_min_replicas))
        if not min_replicas.isdigit():
            raise SettingError(
                f"SEND_MIN_REPLICAS={min_replicas!r} must be a whole number: how many replicas "
                "must confirm a send, 0 (the default) for none"
            )
        redis_cluster = reader.boolean("REDIS_CLUSTER", d.redis_cluster)
        if int(min_replicas) and redis_cluster:
            raise SettingError("SEND_MIN_REPLICAS is not supported with REDIS_CLUSTER: use 0")
        port = reader.port("PORT", d.port)
        log_level = reader.log_level("LOG_LEVEL", d.log_level)
        log_format = reader.log_format("LOG_FORMAT", d.log_format)
        api_token, session_secret = secret("API_TOKEN", env), secret("SESSION_SECRET", env)
        allow_anonymous = reader.boolean("ALLOW_ANONYMOUS", d.allow_anonymous)
        if api_token is None and not allow_anonymous and not is_loopback(host):
            raise SettingError(
                f"HOST={host!r} is reachable from other machines and API_TOKEN is not set, so "
                "anyone could send, delete and purge: set API_TOKEN to a secret, or "
                "ALLOW_ANONYMOUS=true to serve the API without one on purpose"
            )
        count = reader.integer
        return cls(
            api_token=api_token,
            metrics_token=secret("METRICS_TOKEN", env),
            session_secret=session_secret,
            redis_url=redis_url,
            redis_cluster=redis_cluster,
            host=host,
            port=port,
            log_level=log_level,
            log_format=log_format,
            connection=connection,
            ns=reader.text("RSMQ_NS", d.ns),
            send_min_replicas=int(min_replicas),
            send_replica_timeout=reader.seconds(
                "SEND_REPLICA_TIMEOUT", d.send_replica_timeout, low=0.001
            ),
            queue=queue,
            allow_anonymous=allow_anonymous,
            max_body=count("MAX_BODY", d.max_body, low=1024),
            ws_keepalive=reader.seconds("WS_KEEPALIVE", d.ws_keepalive, low=0.1),
            ws_buffer=count("WS_BUFFER", d.ws_buffer, low=1),
            ws_max_channels=count("WS_MAX_CHANNELS", d.ws_max_channels, low=1),
            ws_max_ids=count("WS_MAX_IDS", d.ws_max_ids, low=1),
            ws_subscribe_rate=reader.number("WS_SUBSCRIBE_RATE", d.ws_subscribe_rate, low=0.01),
            ws_subscribe_burst=count("WS_SUBSCRIBE_BURST", d.ws_subscribe_burst, low=1),
            ws_redis_connections=count("WS_REDIS_CONNECTIONS", d.ws_redis_connections, low=1),
            allowed_origins=origins,
            allowed_hosts=hosts,
            head_timeout=reader.seconds("HEAD_TIMEOUT", d.head_timeout, low=0.1),
            body_timeout=reader.seconds("BODY_TIMEOUT", d.body_timeout, low=0.1),
            max_connections=count("MAX_CONNECTIONS", d.max_connections, low=10),
        )


MIN_SECRET = 16  # characters: a short token can be guessed, an empty one is no token


def secret(name: str, env: Mapping[str, str]) -> str | None:
    """A token or secret: unset is None; set, it must be long enough to be one."""
    value = env.get(name)
    if value is None:
        return None
    if not B64TOKEN_RE.fullmatch(value):
        raise SettingError(
            f"{name} may hold only letters, digits and -._~+/ (no spaces; = at the end), as an "
            f"HTTP Bearer token does; unset it instead of leaving it empty"
        )
    if len(value) < MIN_SECRET:
        raise SettingError(
            f"{name} has {len(value)} characters; use at least {MIN_SECRET} "
            f"(e.g. openssl rand -hex 24)"
        )
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only;
    a name other than ``localhost`` is not resolved here, so it counts as reachable."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host(pattern: str) -> str:
    """One ALLOWED_HOSTS entry as the Host check compares it: lowercased, IPv6 in brackets."""
    pattern = pattern.strip().lower()
    try:
        return f"[{ipaddress.IPv6Address(pattern.strip('[]'))}]"  # as a Host header writes it
    except ValueError:
        pass
    if ":" in pattern or "/" in pattern:
        raise SettingError(f"ALLOWED_HOSTS: {pattern!r}: write host names only, no port or scheme")
    if "*" in pattern[1:] or (pattern[:1] == "*" and pattern != "*" and pattern[:2] != "*."):
        raise SettingError(
            f"ALLOWED_HOSTS: {pattern!r}: a wildcard stands for the names under a domain "
            "(*.example.com), or for any name (*)"
        )
    return pattern
