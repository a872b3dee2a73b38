"""Log lines for the processes' entry points: one event, one line, on stdout.

Heroku (and most log collectors) treat each line as one event, so a multi-line message or a
traceback would arrive as pieces interleaved with other processes' lines. The library itself
never configures logging; ``python -m worker`` and ``python -m web`` call :func:`configure`.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class OneLineFormatter(logging.Formatter):
    """The usual format, with every line break inside the record (a message's, a
    traceback's) written as a literal ``\\n``, so the record stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r\n", "\n").replace("\n", "\\n")


def config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: everything at ``level`` and above to
    stdout, one line per record (uvicorn's own loggers included)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": OneLineFormatter, "fmt": FORMAT}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        # uvicorn gives its loggers handlers of their own unless told otherwise: these
        # send them up to the root's.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def check_level(value: str) -> str:
    """``value`` as a level name; ValueError naming the choices otherwise."""
    level = value.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"LOG_LEVEL={value!r}: use one of {', '.join(LEVELS)}")
    return level


def configure(level: str = "INFO") -> None:
    logging.config.dictConfig(config(level))
