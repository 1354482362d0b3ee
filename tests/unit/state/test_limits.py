"""Rate limits: a sliding log admits at most `limit` hits in any interval of one period."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends import Backend, memory_backend
from reflow.state.limits import InvalidRateError, Rate, RateLimiter, parse_rate
from reflow.testing import FakeClock


@pytest.fixture
async def limiter(backend: Backend, clock: FakeClock) -> AsyncIterator[RateLimiter]:
    made = RateLimiter.for_backend(backend, clock=clock)
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/minute", Rate(100, 60.0)),
        ("10/second", Rate(10, 1.0)),
        ("5/10s", Rate(5, 10.0)),
        ("1000 / 2 hours", Rate(1000, 7200.0)),
        ("3/day", Rate(3, 86400.0)),
    ],
)
def test_parse_rate_reads_count_and_period(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "100", "0/second", "x/minute", "10/fortnight", "-1/s"])
def test_parse_rate_refuses_malformed_text(text: str) -> None:
    with pytest.raises(InvalidRateError) as caught:
        parse_rate(text)
    assert caught.value.rate == text


def _oracle(admitted: list[float], now: float, rate: Rate) -> bool:
    return sum(1 for t in admitted if t > now - rate.period) < rate.limit


async def test_limit_admits_budget_then_refuses_until_window_slides(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    decisions = [await limiter.hit("ip:1", "3/10s") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.reset_at == pytest.approx(clock.time() + 10)
    assert refused.retry_after == pytest.approx(10)
    clock.advance(9.999)
    assert not (await limiter.hit("ip:1", "3/10s")).allowed
    clock.advance(0.002)
    assert (await limiter.hit("ip:1", "3/10s")).allowed
    assert (await limiter.hit("ip:2", "3/10s")).allowed  # keys are independent


async def test_cost_larger_than_what_remains_is_refused_whole(limiter: RateLimiter) -> None:
    assert (await limiter.hit("k", "5/second", cost=4)).allowed
    refused = await limiter.hit("k", "5/second", cost=2)
    assert not refused.allowed and refused.remaining == 1
    assert (await limiter.hit("k", "5/second", cost=1)).allowed


async def test_every_engine_matches_the_sliding_log_oracle(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    rng = random.Random(7)
    rate = Rate(5, 1.0)
    admitted: list[float] = []
    for _ in range(300):
        clock.advance(rng.choice([0.0, 0.01, 0.05, 0.2, 0.7]))
        expected = _oracle(admitted, clock.time(), rate)
        decision = await limiter.hit("k", rate)
        assert decision.allowed is expected
        if decision.allowed:
            admitted.append(clock.time())


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 12),
    period=st.sampled_from([0.5, 1.0, 3.0]),
    gaps=st.lists(st.floats(0, 0.6, allow_nan=False), min_size=1, max_size=120),
)
def test_never_more_than_budget_in_any_interval_of_one_period(
    limit: int, period: float, gaps: list[float]
) -> None:
    async def run() -> list[float]:
        clock = FakeClock()
        backend = memory_backend(clock)
        limiter = RateLimiter(backend.kv, clock=clock)
        admitted = []
        for gap in gaps:
            clock.advance(gap)
            if (await limiter.hit("k", Rate(limit, period))).allowed:
                admitted.append(clock.time())
        return admitted

    admitted = asyncio.run(run())
    for first, later in zip(admitted, admitted[limit:], strict=False):
        assert later - first >= period
