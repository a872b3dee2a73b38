"""``python -m web`` as the Procfile runs it, on a free loopback port, for the tests and the
benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from rsmq_core.embedded import free_port
from support.workers import wait_for

ROOT = Path(__file__).resolve().parent.parent


class WebProcess:
    """``python -m web``, the Procfile's web process; ``stdout`` and ``stderr`` catch its
    output if given. ``root``: the source tree it runs from (a benchmark compares another
    checkout's). ``keepalive``: WS_KEEPALIVE, a ping a second for the tests' keep-alive test;
    None keeps the app's own, as a benchmark with many idle sockets wants."""

    def __init__(
        self,
        redis_url: str,
        ns: str,
        *,
        stdout: Any = None,
        stderr: Any = None,
        wait: bool = True,
        root: Path = ROOT,
        keepalive: str | None = "1",
        **settings: str,
    ) -> None:
        self.port = free_port()
        env = dict(
            os.environ,
            REDIS_URL=redis_url,
            RSMQ_NS=ns,
            QUEUE="jobs",
            HOST="127.0.0.1",
            PORT=str(self.port),
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(root),
        )
        if keepalive is not None:
            env["WS_KEEPALIVE"] = keepalive
        env.update(settings)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "web"], env=env, cwd=root, stdout=stdout, stderr=stderr
        )
        if wait:
            try:
                wait_for(self.healthy, timeout=20, what="the web app to answer")
            except BaseException:
                self.kill()  # nobody holds it yet to stop it
                raise

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def healthy(self) -> bool:
        assert self.proc.poll() is None, "the web app exited"
        try:
            with urllib.request.urlopen(self.url("/api/health"), timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url(path),
            data=json.dumps(body).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data

    def stop(self, wait: float = 15.0) -> float:
        """Seconds SIGTERM took to stop it; killed, and TimeoutExpired, after ``wait``."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return time.monotonic() - start

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
