"""The retry policy's back-off: exponential, capped, jittered, never zero."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from reflow.events.delivery import RetryPolicy, decode_record, encode_record
from reflow.events.model import Event


@given(st.integers(min_value=1, max_value=400), st.integers(min_value=0, max_value=2**32))
def test_backoff_lies_between_half_and_all_of_the_capped_exponential(
    attempt: int, seed: int
) -> None:
    policy = RetryPolicy(base=1.0, cap=60.0)
    ceiling = min(60.0, 2.0 ** (attempt - 1))
    wait = policy.backoff(attempt, random.Random(seed))
    assert ceiling / 2 <= wait <= ceiling


def test_backoff_doubles_until_the_cap() -> None:
    policy = RetryPolicy(base=2.0, cap=30.0)
    upper = [policy.backoff(n, _Top()) for n in range(1, 7)]
    assert upper == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_jitter_spreads_retries_of_the_same_attempt() -> None:
    policy = RetryPolicy()
    rng = random.Random(11)
    waits = {round(policy.backoff(6, rng), 6) for _ in range(50)}
    assert len(waits) > 40


def test_delivery_record_round_trips_event_and_fields() -> None:
    event = Event(source="cms", type="Saved", data={"a": [1, 2]})
    data = encode_record(
        event, "render", attempt=3, first=10.5, due=12.0, replay="r1", error={"type": "E"}
    )
    record = decode_record(data)
    assert record["event"] == event
    assert (record["rule"], record["attempt"], record["first"], record["due"]) == (
        "render",
        3,
        10.5,
        12.0,
    )
    assert record["replay"] == "r1" and record["error"] == {"type": "E"}


class _Top(random.Random):
    """A random source that always draws the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b
