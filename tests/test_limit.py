"""etl.limit and etl.retry: the token bucket's bound, its slow-down, and the back-off policy."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.limit import MAX_HOLD, TokenBucket
from etl.retry import Backoff


class FakeTime:
    """A clock that only moves when told to, or when someone sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def grants(bucket: TokenBucket, ft: FakeTime, steps: list[tuple[float, int, int | None]]
           ) -> list[float]:
    """Drive the bucket: for each step advance the clock, maybe feed it headers, acquire."""
    times: list[float] = []

    async def go() -> None:
        for gap, remaining, pause in steps:
            ft.t += gap
            if remaining >= 0:
                bucket.observe(remaining, 0.5, 200)
            if pause is not None:
                bucket.pause(pause / 10)
            await bucket.acquire()
            times.append(ft.t)

    asyncio.run(go())
    return times


def max_in_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window + 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(1, 500),
    burst=st.integers(1, 20),
    steps=st.lists(st.tuples(st.floats(0, 0.2), st.integers(-1, 300),
                             st.one_of(st.none(), st.integers(0, 5))),
                   min_size=1, max_size=120),
    window=st.floats(0.001, 2.0),
)
def test_the_bucket_never_exceeds_its_rate(rate: float, burst: int,
                                           steps: list[tuple[float, int, int | None]],
                                           window: float) -> None:
    ft = FakeTime()
    bucket = TokenBucket(rate, burst=burst, clock=ft.clock, sleep=ft.sleep)
    times = grants(bucket, ft, steps)
    assert len(times) == len(steps)
    assert times == sorted(times)
    assert max_in_window(times, window) <= burst + rate * window + 1e-6


def test_a_steady_stream_gets_the_full_rate_and_no_more() -> None:
    ft = FakeTime()
    bucket = TokenBucket(200, clock=ft.clock, sleep=ft.sleep)
    start = ft.t
    times = grants(bucket, ft, [(0.0, -1, None)] * 1000)
    assert times[-1] - start == pytest.approx(999 / 200)


def test_concurrent_waiters_get_evenly_spaced_slots() -> None:
    ft = FakeTime()

    async def sleep(seconds: float) -> None:  # yields, so all five reserve at the same instant
        await asyncio.sleep(0)

    bucket = TokenBucket(100, clock=ft.clock, sleep=sleep)

    async def go() -> list[float]:
        return await asyncio.gather(*(bucket.acquire() for _ in range(5)))

    # Each reserves its own slot before anyone sleeps: waits of 0, 10, 20, 30, 40 ms.
    waits = asyncio.run(go())
    assert waits == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])


def test_unlimited_never_sleeps_unless_held() -> None:
    ft = FakeTime()
    bucket = TokenBucket(None, clock=ft.clock, sleep=ft.sleep)
    grants(bucket, ft, [(0.0, -1, None)] * 100)
    assert ft.slept == []
    bucket.pause(2.0)
    grants(bucket, ft, [(0.0, -1, None)])
    assert ft.slept == [2.0]


def test_it_slows_down_as_the_remaining_quota_nears_zero() -> None:
    ft = FakeTime()
    bucket = TokenBucket(200, low_water=5, clock=ft.clock, sleep=ft.sleep)
    bucket.observe(remaining=150, reset=0.5, limit=200)  # plenty left: no effect
    assert bucket.held_until == float("-inf")
    bucket.observe(remaining=4, reset=0.8, limit=200)  # 4 left for 0.8 s: one per 0.2 s
    assert bucket.held_until == pytest.approx(ft.t + 0.2)
    bucket.observe(remaining=0, reset=0.7, limit=200)  # none left: nothing until the reset
    assert bucket.held_until == pytest.approx(ft.t + 0.7)
    start = ft.t
    grants(bucket, ft, [(0.0, -1, None)])
    assert ft.t - start == pytest.approx(0.7)


def test_a_pause_is_capped_and_reaches_sleepers_who_reserved_before_it() -> None:
    ft = FakeTime()
    bucket = TokenBucket(1, clock=ft.clock, sleep=ft.sleep)
    bucket.pause(10_000)
    assert bucket.held_until == ft.t + MAX_HOLD

    ft2 = FakeTime()
    b2 = TokenBucket(10, clock=ft2.clock, sleep=ft2.sleep)

    async def sleeper_then_pause() -> None:
        async def sleep(seconds: float) -> None:
            if not ft2.slept:
                b2.pause(5.0)  # a 429 lands while this waiter sleeps
            await ft2.sleep(seconds)
        b2._sleep = sleep
        await b2.acquire()  # free token
        start = ft2.t
        await b2.acquire()  # reserved at +0.1, then held: must not go before +5
        assert ft2.t - start >= 5.0

    asyncio.run(sleeper_then_pause())


@pytest.mark.parametrize("bad", [0, -1])
def test_a_non_positive_rate_is_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(bad)


def test_backoff_is_full_jitter_with_a_floor_at_retry_after() -> None:
    top = Backoff(base=0.5, cap=8.0, random=lambda: 1.0)
    assert [top.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert Backoff(random=lambda: 0.0).delay(3) == 0.0
    half = Backoff(base=1.0, cap=100.0, random=lambda: 0.5)
    assert half.delay(2) == 2.0
    assert half.delay(2, retry_after=7.0) == 7.0  # at least what the provider asked
    assert half.delay(2, retry_after=0.5) == 2.0
    assert top.delay(10_000) == 8.0  # no overflow
