"""Every Redis connection of the project is made here: a URL plus :class:`ConnectionOptions`.

The URL says where and who (``rediss://user:password@host:port/db``: TLS, a Redis ACL user;
``redis+sentinel://host:port,host:port/service/db``: the master Redis Sentinel names);
the options say what the URL cannot: how to verify the server's TLS certificate and which
client certificate to show. Keeping both in one place means a new way to connect (a cluster
client, say) is added once for the library, the CLI, the worker and the web app.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, overload
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

TlsVerify = Literal["required", "none"]
VERIFY_MODES: Final = ("required", "none")
TLS_SCHEMES: Final = ("rediss",)
SENTINEL_SCHEME: Final = "redis+sentinel"
SENTINEL_PORT: Final = 26379  # Sentinel's own default port
# How long a call to a sentinel may take: master discovery moves on to the next sentinel when
# one does not answer, so one that hangs must not hold every connection attempt.
SENTINEL_TIMEOUT: Final = 2.0

# The environment variables the worker, the web app and the CLI read the options from.
ENV_NAMES: Final = {
    "tls_verify": "REDIS_TLS_VERIFY",
    "tls_ca_file": "REDIS_TLS_CA_FILE",
    "tls_cert_file": "REDIS_TLS_CERT_FILE",
    "tls_key_file": "REDIS_TLS_KEY_FILE",
}


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """How to connect beyond what the URL says; they apply to ``rediss://`` URLs only.

    ``tls_verify="required"`` (the default) checks the server's certificate against
    ``tls_ca_file`` (else the system's trusted CAs) and its host name against the URL's.
    ``"none"`` accepts any certificate: the traffic is still encrypted, but a machine in
    the middle could read it. Heroku Redis needs it, its certificates being self-signed.
    ``tls_cert_file`` and ``tls_key_file`` are a client certificate (PEM) for servers that
    ask for one (Redis's ``tls-auth-clients``).
    """

    tls_verify: TlsVerify = "required"
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def __post_init__(self) -> None:
        if self.tls_verify not in VERIFY_MODES:
            raise ValueError(
                f"tls_verify={self.tls_verify!r}: use 'required' (check the server's "
                "certificate) or 'none' (accept any, e.g. Heroku Redis's self-signed ones)"
            )
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_key_file is set without tls_cert_file (the client certificate)")
        if self.tls_ca_file is not None and self.tls_verify == "none":
            raise ValueError(
                "tls_ca_file is set but tls_verify is 'none': the CA would never be used"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConnectionOptions:
        """The options from the ``REDIS_TLS_*`` variables in ``env``."""
        return cls.parse({name: env.get(name) for name in ENV_NAMES.values()}, ENV_NAMES)

    @classmethod
    def parse(cls, values: Mapping[str, str | None], names: Mapping[str, str]) -> ConnectionOptions:
        """The options from text settings: each field's value is ``values[names[field]]``,
        and an error names the setting (``names[field]``) and what to do.

        A file that cannot be read is refused here, at start, not at the first connection.
        """

        def value(field: str) -> str | None:
            return (values.get(names[field]) or "").strip() or None

        verify = (value("tls_verify") or "required").lower()
        if verify not in VERIFY_MODES:
            raise ValueError(
                f"{names['tls_verify']}={values[names['tls_verify']]!r}: use 'required' (check "
                "the server's certificate, the default) or 'none' (accept any, e.g. Heroku "
                "Redis's self-signed ones)"
            )
        files = {}
        for field in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = files[field] = value(field)
            if path is not None and not os.access(path, os.R_OK):
                raise ValueError(f"{names[field]}={path!r}: no such file, or it cannot be read")
        try:
            return cls(tls_verify=cast(TlsVerify, verify), **files)
        except ValueError as exc:
            message = str(exc)
            for field, name in names.items():
                message = message.replace(field, name)
            raise ValueError(message) from None

    def redis_kwargs(self, url: str) -> dict[str, Any]:
        """redis-py's keyword arguments for a connection to ``url`` with these options."""
        scheme = urlsplit(url).scheme
        if scheme not in TLS_SCHEMES:
            # Relaxing verification on a plain connection relaxes nothing; but files that
            # ask for TLS on a URL without it mean a mistake the user would want to hear of.
            if self.tls_ca_file or self.tls_cert_file:
                raise ValueError(
                    f"a TLS CA or client certificate is set, but the URL's scheme is "
                    f"{scheme!r}, which does not use TLS: use rediss://"
                )
            return {}
        kwargs: dict[str, Any] = {
            "ssl_cert_reqs": self.tls_verify,
            # redis-py checks host names by default too (since 6.0); said here so a change
            # of default can never turn it off.
            "ssl_check_hostname": self.tls_verify == "required",
        }
        if self.tls_ca_file is not None:
            kwargs["ssl_ca_certs"] = self.tls_ca_file
        if self.tls_cert_file is not None:
            kwargs["ssl_certfile"] = self.tls_cert_file
            kwargs["ssl_keyfile"] = self.tls_key_file
        return kwargs


DEFAULT_OPTIONS: Final = ConnectionOptions()


AsyncRedis = aioredis.Redis | aioredis.RedisCluster
"""What every async part of the project runs on: a standalone Redis, or a Redis Cluster."""


@overload
def async_client(
    url: str,
    options: ConnectionOptions | None = ...,
    *,
    cluster: Literal[False] = ...,
    pool_class: type[aioredis.ConnectionPool] = ...,
    **kwargs: Any,
) -> aioredis.Redis: ...
@overload
def async_client(
    url: str,
    options: ConnectionOptions | None = ...,
    *,
    cluster: bool,
    pool_class: type[aioredis.ConnectionPool] = ...,
    **kwargs: Any,
) -> AsyncRedis: ...
def async_client(
    url: str,
    options: ConnectionOptions | None = None,
    *,
    cluster: bool = False,
    pool_class: type[aioredis.ConnectionPool] = aioredis.ConnectionPool,
    **kwargs: Any,
) -> AsyncRedis:
    """A ``redis.asyncio.Redis`` on a pool of its own (closed with the client), or with
    ``cluster`` a ``RedisCluster`` (a pool per node: ``pool_class`` does not apply) that
    ``url`` names a node of. ``kwargs`` go to redis-py (``max_connections``, the
    connections' ``socket_timeout``, ...)."""
    kwargs.update((options or DEFAULT_OPTIONS).redis_kwargs(url))
    if is_sentinel_url(url):
        where = SentinelURL.parse(url)
        blocking = issubclass(pool_class, aioredis.BlockingConnectionPool)
        manager = aiosentinel.Sentinel(where.sentinels, sentinel_kwargs=_sentinel_kwargs(kwargs))
        return cast(
            _AsyncSentinelRedis,
            manager.master_for(
                where.service,
                redis_class=_AsyncSentinelRedis,
                connection_class=_AsyncSentinelConnection,
                connection_pool_class=_BlockingSentinelPool if blocking else _SentinelPool,
                **where.master_kwargs(),
                **kwargs,
            ),
        )
    if cluster:
        return aioredis.RedisCluster.from_url(url, **kwargs)
    return aioredis.Redis.from_pool(pool_class.from_url(url, **kwargs))


@overload
def sync_client(
    url: str,
    options: ConnectionOptions | None = ...,
    *,
    cluster: Literal[False] = ...,
    **kwargs: Any,
) -> redis.Redis: ...
@overload
def sync_client(
    url: str, options: ConnectionOptions | None = ..., *, cluster: bool, **kwargs: Any
) -> redis.Redis | redis.RedisCluster: ...
def sync_client(
    url: str, options: ConnectionOptions | None = None, *, cluster: bool = False, **kwargs: Any
) -> redis.Redis | redis.RedisCluster:
    """The blocking twin of :func:`async_client`."""
    kwargs.update((options or DEFAULT_OPTIONS).redis_kwargs(url))
    if is_sentinel_url(url):
        where = SentinelURL.parse(url)
        manager = redis.sentinel.Sentinel(where.sentinels, sentinel_kwargs=_sentinel_kwargs(kwargs))
        master = manager.master_for(
            where.service,
            redis_class=_SentinelRedis,
            connection_class=_SentinelConnection,
            **where.master_kwargs(),
            **kwargs,
        )
        return cast(_SentinelRedis, master)
    if cluster:
        return redis.RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


# Redis Sentinel ------------------------------------------------------------------------------


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a master through Redis Sentinel (``redis+sentinel://``)."""
    return url.partition("://")[0].lower() == SENTINEL_SCHEME


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``, taken
    apart: the sentinels to ask, the name they know the master by, and the database.

    The user and password are the master's (and its replicas'), not the sentinels': sentinels
    are reached without a password, as they are by default.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """The parts of ``url``; ``ValueError`` saying what is wrong (without the URL)."""
        rest = url.partition("://")[2]
        if "?" in rest or "#" in rest:
            raise ValueError("has query parameters, which a redis+sentinel:// URL does not take")
        authority, _, path = rest.partition("/")
        userinfo, at, hosts = authority.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        sentinels = tuple(_sentinel_address(host) for host in hosts.split(","))
        service, _, db = path.partition("/")
        if not service:
            raise ValueError(
                "names no service: redis+sentinel://host:26379/<the master's name in sentinel.conf>"
            )
        db = db.strip("/")
        if db and not db.isdigit():
            raise ValueError(
                f"has the database {db!r}: give a number (redis+sentinel://host:26379/{service}/0)"
            )
        return cls(sentinels, unquote(service), int(db or 0), username, password)

    def master_kwargs(self) -> dict[str, Any]:
        """redis-py's keyword arguments for connections to the master."""
        return {"db": self.db, "username": self.username, "password": self.password}


def _sentinel_address(text: str) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:
        port, host = 0, text
    if not host or port == 0 or "@" in text:
        raise ValueError(
            f"has the sentinel address {text!r}: give host:port pairs separated by commas "
            "(redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster)"
        )
    return host, port or SENTINEL_PORT


def _sentinel_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The sentinels' connections: the caller's socket options, with a timeout always."""
    options = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    options.setdefault("socket_timeout", SENTINEL_TIMEOUT)
    options.setdefault("socket_connect_timeout", SENTINEL_TIMEOUT)
    return options


class _AsyncSentinelConnection(aiosentinel.SentinelManagedConnection):
    """A connection to the master that asks the sentinels where it is at every (re)connect.

    redis-py asks them when a pooled connection is handed out, but a call retried after its
    connection dropped reconnects to the address it had: the dead master, once per retry, so
    the retries a failover needs most would be spent on it.
    """

    async def _connect(self) -> None:
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


class _SentinelConnection(redis.sentinel.SentinelManagedConnection):
    """The blocking twin of :class:`_AsyncSentinelConnection`."""

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


class _SentinelPool(aiosentinel.SentinelConnectionPool):
    """Connections to whichever server the sentinels name master at connection time."""


class _BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A sentinel pool that waits for a free connection at its limit instead of failing."""


class _AsyncSentinelRedis(aioredis.Redis):
    """A master's client that closes its sentinels' connections with its own."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = cast(aiosentinel.SentinelConnectionPool, self.connection_pool)
        await pool.sentinel_manager.aclose()


class _SentinelRedis(redis.Redis):
    """The blocking twin of :class:`_AsyncSentinelRedis`."""

    def close(self) -> None:
        super().close()
        pool = cast(redis.sentinel.SentinelConnectionPool, self.connection_pool)
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


def sentinel_pool(pool: aioredis.ConnectionPool, **kwargs: Any) -> aioredis.ConnectionPool:
    """A new pool to the same master as ``pool`` (of a ``redis+sentinel://`` client), that
    asks the same sentinels where the master is; ``kwargs`` are its connections' settings."""
    manager = cast(aiosentinel.SentinelConnectionPool, pool)
    kwargs.pop("connection_pool", None)  # the old pool's own reference to itself
    made: aioredis.ConnectionPool = cast(Any, _SentinelPool)(
        manager.service_name,
        manager.sentinel_manager,
        connection_class=pool.connection_class,
        **kwargs,
    )
    return made


# Said, in one sentence, by a process that finds no Redis at its URL: how to get one.
HOW_TO_GET_REDIS = (
    "set REDIS_URL to a Redis that runs, or start one: redis-server or valkey-server "
    "(Redis 6.2+ or Valkey 8; Debian: apt-get install redis-server), or "
    "pip install 'rsmq-realtime[embedded]' and python -m rsmq_core.embedded"
)


def explain(exc: BaseException) -> str:
    """``exc`` as one line, with what to do about it when it is a setting's fault.

    A certificate that fails verification or a refused password will fail the same way on
    every retry, so the message says which setting to look at.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    if _certificate_failed(exc):
        return (
            f"{text} (the server's TLS certificate could not be verified: set "
            f"{ENV_NAMES['tls_ca_file']} to the CA that signed it, or "
            f"{ENV_NAMES['tls_verify']}=none to accept "
            "any certificate, as Heroku Redis's self-signed ones need)"
        )
    if isinstance(exc, redis.AuthenticationError):
        return f"{text} (check the user name and password in the URL)"
    if _permission_denied(exc):
        return (
            f"{text} (the Redis ACL user needs the namespace's keys and channels and the "
            "commands a queue runs, scripts included: see the README's ACL rule)"
        )
    return text


def is_misconfigured(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure no retry can cure: a certificate that fails
    verification, a user name or password that Redis refuses, or an ACL user that may not
    run what the queue needs."""
    return (
        _certificate_failed(exc)
        or isinstance(exc, redis.AuthenticationError)
        or _permission_denied(exc)
    )


def _permission_denied(exc: BaseException) -> bool:
    # Refused inside a script, a command comes back as a plain error without the NOPERM code.
    return isinstance(exc, redis.exceptions.NoPermissionError) or (
        isinstance(exc, redis.ResponseError)
        and str(exc).startswith("The user executing the script can't")
    )


def _certificate_failed(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        # redis-py keeps only the message of the socket error it wraps.
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# URLs in messages ----------------------------------------------------------------------------


def _password_params(query: str) -> list[str]:
    return [
        v for k, _, v in (i.partition("=") for i in query.split("&")) if unquote(k) == "password"
    ]


def mask_url(url: str) -> str:
    """The URL with its password (in the authority or a ``password=`` parameter) as ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = "&".join(
        "password=***" if unquote(item.partition("=")[0]) == "password" else item
        for item in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub(text: str, url: str) -> str:
    """``text`` with any password of ``url`` in it masked, in case an error quotes it."""
    try:
        parts = urlsplit(url)
        secrets = [parts.password or "", *_password_params(parts.query)]
    except ValueError:
        return "<not shown: the URL cannot be parsed>"
    for secret in secrets:
        for form in {secret, unquote(secret)} - {""}:
            text = text.replace(form, "***")
    return text


def check_url(url: str, name: str = "REDIS_URL") -> None:
    """Raise ``ValueError`` saying what is wrong when ``url`` is not a Redis URL, as one line
    that names the setting (``name``) and shows the URL with its password masked.

    redis-py itself refuses some of these only at the first connection, deep in a traceback,
    and quietly ignores others (a database that is not a number is database 0).
    """
    reason = _url_problem(url)
    if reason is not None:
        # A URL without a scheme would not have its password found: mask it as if it had one.
        scheme = "" if "://" in url else "redis://"
        masked = mask_url(scheme + url).removeprefix(scheme)
        shown = masked if "***" in masked else url  # else as typed (urlunsplit normalises)
        raise ValueError(f"{name}={shown!r} {reason}")


def _url_problem(url: str) -> str | None:
    if "://" not in url:
        return "has no scheme: begin it with redis:// (rediss:// for TLS, unix:// for a socket)"
    if is_sentinel_url(url):
        try:
            SentinelURL.parse(url)
        except ValueError as exc:
            return str(exc)
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return (
            f"has the scheme {parts.scheme!r}: use redis://, rediss:// (TLS), "
            "redis+sentinel:// or unix://"
        )
    if parts.scheme == "unix":
        if not parts.path:
            return "names no socket: unix:///path/to/redis.sock"
    elif not parts.hostname:
        return "names no host: redis://host:port/db"
    elif port == 0:
        return "has a port that is not a number from 1 to 65535"
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        return f"has the database {parts.path.strip('/')!r}: give a number (redis://host:6379/0)"
    try:
        redis.ConnectionPool.from_url(url)  # parses only: connects at first use
    except ValueError as exc:
        return f"is refused by redis-py: {scrub(str(exc), url)}"
    return None
