"""Node RSMQ 0.12 in a child process (``bench/node_rsmq.js``), with the rsmq package from
``.node/node_modules`` or the folder named by RSMQ_NODE_MODULES; without node or the package
the rows are left out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.core.runner import NS, Job, Runner

REPO = Path(__file__).resolve().parents[2]
NODE_SCRIPT = REPO / "bench" / "node_rsmq.js"
NODE_MODULES = Path(os.environ.get("RSMQ_NODE_MODULES", REPO / ".node" / "node_modules"))
NODE_TIMEOUT = 300.0  # seconds one Node run may take


class NodeRunner(Runner):
    """Node RSMQ in a child process, one or 50 promises in flight."""

    def __init__(self, port: int, concurrency: int) -> None:
        self.port = port
        self.concurrency = concurrency

    def measure(self, warmup: Job, jobs: Sequence[Job]) -> dict[str, float]:
        spec = {
            "port": self.port,
            "ns": NS,
            "concurrency": self.concurrency,
            "warmup": {"qname": warmup.qname, "n": warmup.n},
            "jobs": [{"op": j.op, "qname": j.qname, "n": j.n} for j in jobs],
        }
        done = subprocess.run(
            ["node", str(NODE_SCRIPT)],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"node_rsmq.js failed ({done.returncode}):\n{done.stderr}")
        seconds: dict[str, float] = json.loads(done.stdout)["seconds"]
        return seconds


def node_version() -> str | None:
    """Node's version when node and the rsmq package are both there, else None."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "rsmq" / "package.json").is_file():
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def node_rsmq_version() -> str:
    package = json.loads((NODE_MODULES / "rsmq" / "package.json").read_text("utf-8"))
    return str(package["version"])
