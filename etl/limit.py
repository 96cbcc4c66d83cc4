"""The rate limiter: a token bucket that also listens to the provider's rate-limit headers.

Part of the send stage (read → validate → plan → **send** → record → report): every attempt of
every capture, retries included, takes one token from the run's ``TokenBucket`` before it goes on
the wire.

The bucket is scheduled, not polled (GCRA / virtual scheduling): each ``acquire`` reserves the
next free slot and sleeps until it, so N waiters cost N sleeps, never a busy loop, and the slots
stay evenly spaced however late the event loop wakes a sleeper. Over any window of length T at
most ``burst + rate * T`` tokens are granted.

With ``burst > 1`` a sleeper is released not at the first instant its slot allows but at the next
multiple of the slack ``tau = (burst - 1) / rate``, which is still inside its slot's window
``[tat - tau, tat]``, so the bound above is unchanged. Sleepers whose slots fall in one tick then
wake together, in one turn of the event loop: at 200/s a paced run otherwise wakes the loop once
per token, from cold, and that wake-up cost more CPU than the request it released.

``observe`` reads ``X-Ratelimit-Remaining`` / ``-Reset``: as the remaining quota nears 0 the next
tokens are spread over what is left of the window, and at 0 (or after a 429, via ``pause``)
nobody gets a token before the window resets. Clock and sleep are injected so tests never wait.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Below this many remaining calls in the provider's window, spread them out until the reset.
DEFAULT_LOW_WATER = 5
# Never hold the whole run longer than this on one header or Retry-After: a bogus value must not
# stall a nightly batch (the back-off of the failed capture still honours it in full).
MAX_HOLD = 60.0


class TokenBucket:
    """``rate`` tokens per second with ``burst`` tokens of slack; ``rate=None`` means unlimited."""

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float = 1.0,
        low_water: int = DEFAULT_LOW_WATER,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive or None, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate = rate
        self.burst = burst
        self.low_water = low_water
        self._interval = 1.0 / rate if rate else 0.0
        self._tau = (burst - 1.0) * self._interval  # how far ahead of schedule a grant may be
        self._clock = clock
        self._sleep = sleep
        self._tat = clock()  # theoretical arrival time of the next token
        self._hold_until = float("-inf")  # no token before this (a 429 or an empty quota)

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited."""
        waited = 0.0
        while True:
            now = self._clock()
            tat = max(self._tat, now, self._hold_until)
            start = max(tat - self._tau, now, self._hold_until)
            self._tat = tat + self._interval
            if start <= now:
                return waited
            if self._tau > 0:
                # Up to the next tick, never past tat: one wake-up for every slot in the tick.
                start = min(math.ceil(start / self._tau) * self._tau, tat)
            await self._sleep(start - now)
            waited += start - now
            # A hold that arrived while we slept (a 429 elsewhere) invalidates our slot: take a
            # new one. The abandoned slot stays spent, so the bound on grants still holds.
            if self._hold_until <= self._clock():
                return waited

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (capped at ``MAX_HOLD``): after a 429, until the reset."""
        until = self._clock() + min(max(seconds, 0.0), MAX_HOLD)
        self._hold_until = max(self._hold_until, until)

    def observe(self, remaining: int | None, reset: float | None, limit: int | None = None) -> None:
        """Slow down as the provider's remaining quota nears 0 (``X-Ratelimit-*`` headers)."""
        if remaining is None or reset is None or reset <= 0:
            return
        if remaining <= 0:
            self.pause(reset)
        elif remaining <= self.low_water:
            # Spread what is left over the rest of the window: the next token no sooner than
            # reset / remaining. Far from 0 this is below the bucket's own spacing: no effect.
            self._hold_until = max(self._hold_until,
                                   self._clock() + min(reset / remaining, MAX_HOLD))

    @property
    def held_until(self) -> float:
        """The clock time before which no token is granted (``-inf`` when not held)."""
        return self._hold_until
