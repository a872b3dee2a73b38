"""Log lines for the processes' entry points: one event, one line, on stdout.

Heroku (and most log collectors) treat each line as one event, so a multi-line message or a
traceback would arrive as pieces interleaved with other processes' lines. The library itself
never configures logging; ``python -m worker`` and ``python -m web`` call :func:`configure`.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("line", "json")  # LOG_FORMAT


class OneLineFormatter(logging.Formatter):
    """The usual format, with every line break inside the record (a message's, a
    traceback's) written as a literal ``\\n``, so the record stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r\n", "\n").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for collectors that parse fields: ``time`` (ISO 8601, UTC),
    ``level``, ``logger``, ``message``, and ``exception`` when there is a traceback. JSON
    escapes line breaks, so a record stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def config(level: str = "INFO", fmt: str = "line") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: everything at ``level`` and above to
    stdout, one line per record (uvicorn's own loggers included), in ``fmt`` (see FORMATS)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {"()": OneLineFormatter, "fmt": FORMAT},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": check_format(fmt),
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


def check_format(value: str) -> str:
    """``value`` as a LOG_FORMAT; ValueError naming the choices otherwise."""
    fmt = value.strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"LOG_FORMAT={value!r}: use one of {', '.join(FORMATS)}")
    return fmt


def configure(level: str = "INFO", fmt: str = "line") -> None:
    logging.config.dictConfig(config(level, fmt))
