"""The hybrid logical clock: monotonic, ahead of everything observed, totally ordered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.errors import InvalidItemError
from reflow.state.hlc import HLC, HybridClock
from reflow.testing import FakeClock


def test_now_follows_the_wall_clock_in_milliseconds() -> None:
    clock = FakeClock(1_700_000_000.0)
    hlc = HybridClock("eu", clock)
    assert hlc.now() == HLC(1_700_000_000_000, 0, "eu")
    clock.advance(0.25)
    assert hlc.now() == HLC(1_700_000_000_250, 0, "eu")


def test_stamps_within_one_millisecond_are_ordered_by_the_counter() -> None:
    hlc = HybridClock("eu", FakeClock())
    first, second, third = hlc.now(), hlc.now(), hlc.now()
    assert first < second < third
    assert (second.counter, third.counter) == (1, 2)


def test_a_stamp_after_observing_a_remote_one_from_the_future_is_later() -> None:
    clock = FakeClock(1_700_000_000.0)
    hlc = HybridClock("eu", clock)
    remote = HLC(1_700_000_005_000, 7, "us")  # the other region's clock runs 5 s ahead
    hlc.observe(remote)
    stamp = hlc.now()
    assert stamp > remote
    assert stamp.wall_ms == remote.wall_ms


def test_observing_an_older_stamp_does_not_move_the_clock_back() -> None:
    clock = FakeClock(1_700_000_010.0)
    hlc = HybridClock("eu", clock)
    before = hlc.now()
    hlc.observe(HLC(1_700_000_000_000, 3, "us"))
    assert hlc.now() > before


def test_ties_on_time_and_counter_are_broken_by_region_id() -> None:
    assert HLC(5, 1, "ap") < HLC(5, 1, "eu") < HLC(5, 1, "us")


def test_the_text_form_round_trips() -> None:
    stamp = HLC(1_700_000_000_123, 42, "eu-west-1")
    assert HLC.parse(str(stamp)) == stamp


@pytest.mark.parametrize("text", ["", "12.3.eu", "000000000000001.000001.EU", "x"])
def test_malformed_text_is_rejected_naming_the_attribute(text: str) -> None:
    with pytest.raises(InvalidItemError) as caught:
        HLC.parse(text)
    assert "_hlc" in str(caught.value)


def test_a_region_id_with_capitals_is_rejected() -> None:
    with pytest.raises(InvalidItemError):
        HybridClock("EU")


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**15 - 1), st.integers(0, 999_999), st.sampled_from(["a", "b", "ab"])
        )
    ),
)
def test_text_order_is_timestamp_order(stamps: list[tuple[int, int, str]]) -> None:
    values = [HLC(*s) for s in stamps]
    assert sorted(values, key=str) == sorted(values)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("tick"), st.floats(0, 2)),
            st.tuples(st.just("observe"), st.integers(-5000, 5000)),
        ),
        max_size=60,
    )
)
def test_every_stamp_exceeds_all_issued_and_observed_before_it(
    steps: list[tuple[str, float]],
) -> None:
    clock = FakeClock(1_700_000_000.0)
    hlc = HybridClock("eu", clock)
    highest: HLC | None = None
    for kind, amount in steps:
        if kind == "tick":
            clock.advance(amount)
            stamp = hlc.now()
            assert highest is None or stamp > highest
            highest = stamp
        else:
            remote = HLC(int(clock.time() * 1000) + int(amount), 3, "us")
            hlc.observe(remote)
            highest = remote if highest is None else max(highest, remote)
