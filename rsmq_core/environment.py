"""Settings from the environment: the one reader the worker and the web app declare theirs
with (``worker/settings.py``, ``web/settings.py``), each reading its own once, at start.

Unset or blank is the default. A value that cannot be used is a SettingError naming the
variable, what it was given and what it takes, before anything touches Redis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from . import _protocol, logs
from .connection import ConnectionOptions, check_url


class SettingError(ValueError):
    """A setting from the environment that cannot be used."""


class EnvReader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        """The value, stripped; None when unset or blank."""
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingError(f"{name}={raw!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise SettingError(f"{name}={raw!r} must be {span}")
        return value

    def number(self, name: str, default: float, *, low: float, unit: str = "") -> float:
        """A finite number, at least ``low``; ``unit`` ("seconds") says what of."""
        raw = self.raw(name)
        if raw is None:
            return default
        value = self._float(name, raw, unit)
        if not value >= low or math.isinf(value):
            raise SettingError(f"{name}={raw!r} must be a finite number, at least {low}")
        return value

    def seconds(self, name: str, default: float, *, low: float) -> float:
        return self.number(name, default, low=low, unit="seconds")

    def limit(self, name: str) -> float | None:
        """Seconds above 0, or None (no limit) when unset: 0 would end everything at once,
        so it is refused rather than read as "off"."""
        raw = self.raw(name)
        if raw is None:
            return None
        value = self._float(name, raw, "seconds")
        if not 0 < value < math.inf:
            raise SettingError(
                f"{name}={raw!r} must be a finite number of seconds above 0 "
                "(leave it unset for no limit)"
            )
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingError(f"{name}={raw!r} is not a boolean (use true or false)")

    def queue_names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Comma-separated queue names, each once."""
        raw = self.raw(name)
        if raw is None:
            return default
        names = tuple(dict.fromkeys(q.strip() for q in raw.split(",") if q.strip()))
        bad = [q for q in names if not _protocol.QNAME_RE.fullmatch(q)]
        if not names or bad:
            raise SettingError(
                f"{name}={raw!r}: give comma-separated queue names of letters, digits, _ and -"
                + (f" ({', '.join(map(repr, bad))} is not one)" if bad else "")
            )
        return names

    def port(self, name: str, default: int) -> int:
        raw = self.text(name, str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise SettingError(f"{name}={raw!r} must be a port number, 1 to 65535")
        return int(raw)

    def redis(self, default_url: str) -> tuple[str, ConnectionOptions]:
        """REDIS_URL and the REDIS_TLS_* options, checked together."""
        url = self.text("REDIS_URL", default_url)
        try:
            options = ConnectionOptions.from_env(self.env)
            check_url(url)
        except ValueError as exc:
            raise SettingError(str(exc)) from None
        try:
            options.redis_kwargs(url)
        except ValueError as exc:
            raise SettingError(f"REDIS_URL: {exc}") from None
        return url, options

    def log_level(self, name: str, default: str) -> str:
        try:
            return logs.check_level(self.text(name, default))
        except ValueError as exc:
            raise SettingError(str(exc)) from None

    def log_format(self, name: str, default: str) -> str:
        try:
            return logs.check_format(self.text(name, default))
        except ValueError as exc:
            raise SettingError(str(exc)) from None

    @staticmethod
    def _float(name: str, raw: str, unit: str) -> float:
        try:
            return float(raw)
        except ValueError:
            what = f"a number of {unit}" if unit else "a number"
            raise SettingError(f"{name}={raw!r} is not {what}") from None
