"""The interval tree behind numeric conditions answers exactly like testing each range."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.events.conditions import Numeric
from reflow.events.intervals import IntervalTree

POINTS = st.sampled_from([-10.0, -1.5, 0.0, 0.5, 1.0, 2.0, 3.0, 10.0, 1e9])


@st.composite
def ranges(draw: st.DrawFn) -> Numeric:
    kind = draw(st.sampled_from(["low", "high", "both", "equal"]))
    a, b = sorted(draw(st.lists(POINTS, min_size=2, max_size=2, unique=True)))
    if kind == "low":
        return Numeric(low=a, low_inclusive=draw(st.booleans()))
    if kind == "high":
        return Numeric(high=b, high_inclusive=draw(st.booleans()))
    if kind == "equal":
        return Numeric(a, True, a, True)
    return Numeric(a, draw(st.booleans()), b, draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(
    conditions=st.lists(ranges(), max_size=40),
    value=st.one_of(POINTS, st.floats(-20, 20), st.just(math.inf), st.just(-math.inf)),
)
def test_containing_matches_testing_every_range(conditions: list[Numeric], value: float) -> None:
    tree = IntervalTree([(c, index) for index, c in enumerate(conditions)])
    expected = sorted(i for i, c in enumerate(conditions) if c.test(value))
    assert sorted(tree.containing(value)) == expected


def test_ranges_sharing_one_open_endpoint_do_not_recurse_forever() -> None:
    conditions = [Numeric(low=5.0) for _ in range(10)] + [Numeric(high=5.0) for _ in range(3)]
    tree = IntervalTree([(c, i) for i, c in enumerate(conditions)])
    assert sorted(tree.containing(6)) == list(range(10))
    assert sorted(tree.containing(4)) == [10, 11, 12]
    assert tree.containing(5) == []


def test_empty_tree_contains_nothing() -> None:
    assert IntervalTree([]).containing(1.0) == []


def test_nan_is_in_no_range() -> None:
    assert not Numeric(low=0.0).test(float("nan"))
    assert not Numeric(high=0.0).test(float("nan"))
