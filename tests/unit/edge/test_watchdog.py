"""The inline time limit: a runaway handler is interrupted near its limit, a prompt one never."""

from __future__ import annotations

import time

import pytest

from reflow.edge.watchdog import Overrun, Watchdog


def _spin(watchdog: Watchdog, seconds: float) -> tuple[float, bool]:
    """Run a busy loop under ``seconds``; how long until it was interrupted, and disarm's answer."""
    started = time.monotonic()
    fired = False
    with pytest.raises(Overrun):
        token = watchdog.arm(seconds)
        try:
            count = 0
            while True:
                count += 1
        finally:
            fired = watchdog.disarm(token)
    return time.monotonic() - started, fired


def test_a_runaway_loop_is_interrupted_just_after_its_limit() -> None:
    watchdog = Watchdog()
    took, fired = _spin(watchdog, 0.05)
    assert fired
    assert 0.05 <= took < 0.5


def test_a_short_limit_armed_after_a_long_one_fires_at_its_own_deadline() -> None:
    watchdog = Watchdog()
    token = watchdog.arm(5.0)
    time.sleep(0.02)
    assert not watchdog.disarm(token)
    # The earlier call's 5 s deadline must not delay this one.
    took, fired = _spin(watchdog, 0.05)
    assert fired
    assert took < 0.5


def test_many_prompt_calls_never_fire_and_the_watcher_stays_usable() -> None:
    watchdog = Watchdog()
    for _ in range(20_000):
        token = watchdog.arm(5.0)
        assert not watchdog.disarm(token)
    took, fired = _spin(watchdog, 0.03)
    assert fired and took < 0.5


def test_a_disarmed_call_is_not_interrupted_later() -> None:
    watchdog = Watchdog()
    token = watchdog.arm(0.02)
    assert not watchdog.disarm(token)
    time.sleep(0.1)  # past the deadline: nothing may be raised into this thread now
    assert not watchdog.disarm(token)
