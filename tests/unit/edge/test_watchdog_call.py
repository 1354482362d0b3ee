"""``Watchdog.call``: arm, call, disarm in one, with the guarantees of arm_until/disarm."""

from __future__ import annotations

import time

import pytest

from reflow.edge.watchdog import Overrun, Watchdog


def _spin(limit: float, _: object) -> None:
    deadline = time.monotonic() + limit * 40
    while time.monotonic() < deadline:
        pass


def test_a_prompt_call_returns_its_value_and_leaves_nothing_armed() -> None:
    watchdog = Watchdog()
    for n in range(1000):
        assert watchdog.call(time.monotonic() + 5.0, lambda a, b: (a, b), n, "x") == (n, "x")
    assert watchdog._armed is None
    assert watchdog._fired is None


def test_an_exception_from_the_function_passes_through_and_disarms() -> None:
    watchdog = Watchdog()

    def fail(a: object, b: object) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        watchdog.call(time.monotonic() + 5.0, fail, None, None)
    assert watchdog._armed is None


def test_a_runaway_call_is_interrupted_after_its_limit_and_nothing_lands_later() -> None:
    watchdog = Watchdog()
    started = time.monotonic()
    with pytest.raises(Overrun):
        watchdog.call(started + 0.05, _spin, 0.05, None)
    took = time.monotonic() - started
    assert 0.05 <= took < 1.0
    assert watchdog._armed is None
    # No Overrun is left pending for unrelated code: this loop runs to its end.
    total = 0
    for n in range(200_000):
        total += n
    time.sleep(0.1)
    assert total == sum(range(200_000))
    # And the next call is timed afresh.
    assert watchdog.call(time.monotonic() + 5.0, lambda a, b: a, 7, None) == 7
