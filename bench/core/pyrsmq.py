"""PyRSMQ (the ``rsmq`` module on PyPI as PyRSMQ), for comparison; ``pip install -e '.[bench]'``
brings it, and without it the row is left out."""

from __future__ import annotations

from importlib import metadata

from bench.core.runner import BODY, NS, REDIS_TIMEOUT, PyRunner


class PyRSMQRunner(PyRunner):
    """PyRSMQ: blocking, one caller."""

    def __init__(self, port: int) -> None:
        self.port = port

    def open(self) -> None:
        from rsmq import RedisSMQ

        self.queue = RedisSMQ(
            host="127.0.0.1", port=self.port, ns=NS, options={"socket_timeout": REDIS_TIMEOUT}
        )

    def close(self) -> None:
        self.queue.client.close()

    def run(self, op: str, qname: str, n: int) -> None:
        queue = self.queue
        for _ in range(n):
            if op == "send":
                queue.sendMessage(qname=qname, message=BODY).execute()
            elif op == "recv_del":
                msg = queue.receiveMessage(qname=qname).execute()
                queue.deleteMessage(qname=qname, id=msg["id"]).execute()
            else:
                queue.popMessage(qname=qname).execute()


def pyrsmq_version() -> str | None:
    """PyRSMQ's version, or None when it is not installed."""
    try:
        import rsmq

        if not hasattr(rsmq, "RedisSMQ"):
            return None
        return metadata.version("PyRSMQ")
    except (ImportError, metadata.PackageNotFoundError):
        return None
