"""How long a reconnect loop waits before its next try."""

from __future__ import annotations

import random


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: anywhere between 0 and ``base * 2**(failures-1)``
    seconds, capped at ``cap``. The jitter spreads the retries of many processes that lost the
    same Redis at the same moment, so they do not all come back at once."""
    return random.uniform(0, min(cap, base * 2 ** max(failures - 1, 0)))
