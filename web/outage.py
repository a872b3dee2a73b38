"""Redis outages as the web app answers them.

While Redis cannot be reached, refuses the app's password, or refuses a command its ACL user
may not run, every route that needs it answers ``503 {"error": "unavailable", "message": ...}``
with ``Retry-After``, the message naming the cause (never a password), and a websocket gets an
error frame and a proper close. The log gets one WARNING when an outage starts and one INFO
when a request succeeds again: not a traceback per request.
"""

from __future__ import annotations

import logging
import time

from redis import exceptions as redis_errors
from starlette.responses import JSONResponse

from rsmq_core.connection import explain, is_misconfigured, scrub

log = logging.getLogger(__name__)

RETRY_AFTER = 5  # seconds: what a 503 asks a client to wait before trying again
UNAVAILABLE = "the queue is unavailable"

# Errors of a Redis that is away, starting, failing over, or refusing this user: what no
# request can be blamed for. Anything else from Redis is a bug, and stays a 500.
_OUTAGES = (
    redis_errors.ConnectionError,  # AuthenticationError, BusyLoadingError, "No connection..."
    redis_errors.TimeoutError,
    redis_errors.NoPermissionError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    redis_errors.MasterDownError,
    redis_errors.TryAgainError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis cannot serve the app now (rather than that a call is wrong)."""
    # is_misconfigured: a permission refused inside a script too, which has no error class.
    return isinstance(exc, _OUTAGES) or is_misconfigured(exc)


class Outage:
    """Whether Redis is failing this process, to log an outage once and its end once."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._since: float | None = None
        self._refused = 0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def cause(self, exc: BaseException) -> str:
        """``exc`` as one line saying what to do, without the URL's password."""
        return scrub(explain(exc), self._url)

    def report(self, exc: BaseException) -> dict[str, str]:
        """``exc`` (an outage) as the error a client gets; logged if it starts an outage."""
        cause = self.cause(exc)
        if self._since is None:
            self._since = time.monotonic()
            log.warning(
                "Redis is unavailable (%s: %s); answering 503 until it is back",
                type(exc).__name__,
                cause,
            )
        self._refused += 1
        return {"error": "unavailable", "message": f"{UNAVAILABLE}: {cause}"}

    def refuse(self, exc: BaseException) -> JSONResponse:
        """The answer to a request that ``exc`` (an outage) failed."""
        return JSONResponse(
            self.report(exc), status_code=503, headers={"Retry-After": str(RETRY_AFTER)}
        )

    def served(self) -> None:
        """A request was served with Redis's help: an outage, if there was one, is over."""
        if self._since is not None:
            log.info(
                "Redis is available again after %.1fs (%d request(s) answered 503)",
                time.monotonic() - self._since,
                self._refused,
            )
            self._since = None
            self._refused = 0
