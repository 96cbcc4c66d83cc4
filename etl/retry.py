"""The back-off policy between attempts of one capture.

Part of the send stage (read → validate → plan → **send** → record → report): after a
``TransientError`` the sender waits ``Backoff.delay(n, retry_after)`` before attempt n + 1, then
re-sends with the same idempotency key. Whether to retry is decided by the error's class, never
its message (etl.errors); this module only says how long to wait.

Full jitter (``uniform(0, min(cap, base * 2**n))``) spreads the retries of many captures that
failed together, so they do not return as one wave; a provider's ``Retry-After`` or
``X-Ratelimit-Reset`` is a floor under that.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_BACKOFF_BASE = 0.5  # seconds: the first retry waits up to this
DEFAULT_BACKOFF_CAP = 30.0  # seconds: no jittered wait is longer
MAX_RETRY_AFTER = 300.0  # a provider's hint longer than this is clipped: the run must end


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with full jitter; ``random`` is injectable for tests."""

    base: float = DEFAULT_BACKOFF_BASE
    cap: float = DEFAULT_BACKOFF_CAP
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(retry, 62))
        wait = self.random() * ceiling
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
        return wait
