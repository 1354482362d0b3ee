"""Retry and Catch: which retrier or catcher an error meets, and the back-off.

Matching follows the ASL rules: ``States.ALL`` matches every error except
``States.Runtime`` (which no Retry or Catch can handle) and
``States.DataLimitExceeded``; ``States.TaskFailed`` matches every error
except ``States.Timeout``. Each retrier counts its own attempts; once the
first matching retrier is spent, the error goes on to Catch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from reflow.flows.errors import ALL, DATA_LIMIT_EXCEEDED, RUNTIME, TASK_FAILED, TIMEOUT
from reflow.flows.model import Catcher, Retrier

__all__ = ["backoff_delay", "error_matches", "find_catcher", "find_retrier"]

_TERMINAL = frozenset({RUNTIME, DATA_LIMIT_EXCEEDED})


def error_matches(error: str, error_equals: Sequence[str]) -> bool:
    """Whether an ``ErrorEquals`` list covers ``error``."""
    if error in _TERMINAL:
        return False
    if error in error_equals or ALL in error_equals:
        return True
    return TASK_FAILED in error_equals and error != TIMEOUT


def find_retrier(error: str, retriers: Sequence[Retrier]) -> int | None:
    """The index of the first retrier whose ``ErrorEquals`` covers ``error``."""
    for index, retrier in enumerate(retriers):
        if error_matches(error, retrier.error_equals):
            return index
    return None


def find_catcher(error: str, catchers: Sequence[Catcher]) -> Catcher | None:
    """The first catcher whose ``ErrorEquals`` covers ``error``."""
    for catcher in catchers:
        if error_matches(error, catcher.error_equals):
            return catcher
    return None


def backoff_delay(retrier: Retrier, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    ``IntervalSeconds × BackoffRate^attempt``, capped at ``MaxDelaySeconds``;
    with ``JitterStrategy: FULL`` a uniformly random share of that.
    """
    delay = retrier.interval_seconds * retrier.backoff_rate**attempt
    if retrier.max_delay_seconds is not None:
        delay = min(delay, retrier.max_delay_seconds)
    if retrier.jitter_strategy == "FULL":
        delay = (rng or random).uniform(0.0, delay)
    return float(delay)
