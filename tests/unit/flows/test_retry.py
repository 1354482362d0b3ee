"""Retry/Catch matching and back-off, per 'Handling errors in Step Functions'."""

from __future__ import annotations

import random

from reflow.flows.model import Catcher, Retrier
from reflow.flows.retry import backoff_delay, error_matches, find_catcher, find_retrier


def test_states_all_matches_everything_but_runtime() -> None:
    assert error_matches("MyError", ["States.ALL"])
    assert error_matches("States.Timeout", ["States.ALL"])
    assert not error_matches("States.Runtime", ["States.ALL"])
    assert not error_matches("States.Runtime", ["States.Runtime"])


def test_task_failed_matches_everything_but_timeout() -> None:
    assert error_matches("ValueError", ["States.TaskFailed"])
    assert not error_matches("States.Timeout", ["States.TaskFailed"])


def test_named_errors_match_exactly() -> None:
    assert error_matches("ValueError", ["KeyError", "ValueError"])
    assert not error_matches("ValueErrorX", ["ValueError"])


def test_first_matching_retrier_and_catcher_win() -> None:
    retriers = [Retrier(error_equals=("A",)), Retrier(error_equals=("States.ALL",))]
    assert find_retrier("A", retriers) == 0
    assert find_retrier("B", retriers) == 1
    catchers = [Catcher(error_equals=("B",), next="X"), Catcher(error_equals=("B",), next="Y")]
    found = find_catcher("B", catchers)
    assert found is not None and found.next == "X"
    assert find_catcher("C", catchers) is None


def test_backoff_grows_by_the_rate_and_stops_at_max_delay() -> None:
    retrier = Retrier(error_equals=("A",), interval_seconds=2, backoff_rate=3, max_delay_seconds=30)
    assert [backoff_delay(retrier, n) for n in range(4)] == [2, 6, 18, 30]


def test_full_jitter_stays_between_zero_and_the_delay() -> None:
    retrier = Retrier(error_equals=("A",), interval_seconds=10, jitter_strategy="FULL")
    rng = random.Random(1)
    delays = [backoff_delay(retrier, 1, rng) for _ in range(200)]
    assert all(0 <= delay <= 20 for delay in delays)
    assert len(set(delays)) > 100
