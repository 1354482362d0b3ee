"""RuleSet's two steps: a class per path (PathIndex) and buckets of alternatives as bits.

The class a path index computes must say, condition by condition, exactly
what each condition's own ``test`` says; numeric slots, affix probes,
wildcard heads and anything-but matchers are all shortcuts to that answer.
Buckets file alternatives under an access value and remember per class
which bits a slot lets through; bits are reused after removals. The
properties check both against the plain definitions, through additions and
removals.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflow.events import Pattern, RuleSet
from reflow.events.conditions import Condition
from reflow.events.paths import PathIndex
from tests.unit.events.test_ruleset import SCALARS, operators, pattern_objects


def _conditions(operator: Any) -> list[Condition]:
    """The compiled conditions of one pattern member, as a rule on path ``k`` has them."""
    ((field,),) = Pattern({"k": [operator]}).alternatives
    return list(field.conditions)


def _check_classes(index: PathIndex, conditions: list[Condition], value: Any) -> None:
    found = index.classify([value])
    for condition in conditions:
        bit = index.bits[condition]
        assert bool(found & bit) == condition.test(value), (condition, value)


_values = st.one_of(
    SCALARS,
    st.sampled_from([-0.0, 0.25, 299.999, 300.5, 1e300, -math.inf, math.inf, 10**400]),
    st.text(alphabet="abAB*.x19:", max_size=6),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    members=st.lists(operators, min_size=1, max_size=12),
    removed=st.sets(st.integers(0, 11)),
    values=st.lists(_values, min_size=1, max_size=8),
)
def test_a_path_class_holds_exactly_the_conditions_each_value_satisfies(
    members: list[Any], removed: set[int], values: list[Any]
) -> None:
    index = PathIndex(("k",))
    added = [_conditions(member) for member in members]
    for conditions in added:
        for condition in conditions:
            index.add(condition)
    for value in values * 2:  # twice: the second answer may come from memory
        _check_classes(index, [c for cs in added for c in cs], value)
    kept = []
    for position, conditions in enumerate(added):
        if position in removed:
            for condition in conditions:
                index.discard(condition)
        else:
            kept.extend(conditions)
    for value in values:
        _check_classes(index, kept, value)
    if len(removed) >= len(added) and all(p in removed for p in range(len(added))):
        assert not index and not index.exact and not index.numeric and not index.wildcards


def test_no_values_are_the_class_of_exists_false_alone() -> None:
    index = PathIndex(("k",))
    absent = index.add(_conditions({"exists": False})[0])
    present = index.add(_conditions({"exists": True})[0])
    index.add(_conditions({"anything-but": "x"})[0])
    assert index.classify([]) == absent
    assert index.classify([None]) & present


@settings(max_examples=150, deadline=None)
@given(
    bounds=st.lists(
        st.tuples(
            st.sampled_from([">", ">=", "<", "<=", "="]),
            st.sampled_from([-2, -0.5, 0, 1, 1.5, 2, 7, 1e20]),
        ),
        min_size=1,
        max_size=10,
    ),
    removed=st.sets(st.integers(0, 9)),
    numbers=st.lists(
        st.one_of(
            st.sampled_from([-2, -0.5, 0, -0.0, 1, 1.5, 2, 7, 1e20, 10**30, math.inf, -math.inf]),
            st.floats(-10, 10),
            st.integers(-10, 10),
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_numeric_slots_follow_range_bounds_through_changes(
    bounds: list[tuple[str, float]], removed: set[int], numbers: list[float]
) -> None:
    # Every bound splits the line; numbers equal to a bound, between two, or
    # beyond the last are each a slot, and slots are redrawn after a removal.
    rules = RuleSet()
    for position, (operator, bound) in enumerate(bounds):
        rules.add(f"r{position}", {"n": [{"numeric": [operator, bound]}]})
    for number in numbers:
        event = {"n": number}
        assert rules.match(event) == _expected(rules, event)
    for position in sorted(removed):
        if f"r{position}" in rules:
            rules.remove(f"r{position}")
            for number in numbers:
                event = {"n": number}
                assert rules.match(event) == _expected(rules, event)


def _expected(rules: RuleSet, event: dict[str, Any]) -> list[str]:
    return [name for name in rules.names() if rules.pattern(name).matches(event)]


# Rules shaped like a bus's: an exact source (sometimes two, sometimes none),
# often an exact type, and other fields from the full operator set.
_sources = st.sampled_from(["s1", "s2", "s3"])
_kinds = st.sampled_from(["t1", "t2"])
_bus_rules = st.builds(
    lambda sources, kind, rest: {
        **({"source": sources} if sources else {}),
        **({"type": [kind]} if kind else {}),
        **rest,
    },
    st.lists(_sources, max_size=2, unique=True),
    st.one_of(st.none(), _kinds),
    pattern_objects(1),
)
_bus_events = st.builds(
    lambda source, kind, rest: {**rest, "source": source, "type": kind},
    st.one_of(_sources, st.lists(_sources, max_size=2), SCALARS),
    _kinds,
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.one_of(SCALARS, st.lists(SCALARS))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 9), _bus_rules),
            st.tuples(st.just("remove"), st.integers(0, 9), st.none()),
        ),
        min_size=1,
        max_size=30,
    ),
    samples=st.lists(_bus_events, min_size=1, max_size=4),
)
def test_buckets_agree_with_each_pattern_through_additions_and_removals(
    operations: list[tuple[str, int, Any]], samples: list[dict[str, Any]]
) -> None:
    # Rules share and leave buckets, bits are freed and reused, the access
    # field of later rules may differ from earlier ones: after every step,
    # the answer for every sample is the plain one.
    rules = RuleSet()
    for operation, number, pattern in operations:
        if operation == "add":
            rules.add(f"r{number}", pattern)
        elif f"r{number}" in rules:
            rules.remove(f"r{number}")
        for event in samples:
            assert rules.match(event) == _expected(rules, event)
    for name in rules.names():
        rules.remove(name)
    assert not rules._access and not rules._paths and not rules._everywhere


def test_the_access_field_is_the_path_with_the_most_distinct_values() -> None:
    rules = RuleSet()
    for index in range(6):
        rules.add(f"s{index}", {"source": [f"src{index}"], "type": ["created"]})
    # The last rules were filed by source (six values against one type).
    assert len(rules._access[("source",)]) == 6
    rules.add("typed", {"type": ["created"], "source": ["src0", "src1"]})
    assert rules.match({"source": "src1", "type": "created"}) == ["s1", "typed"]
    assert rules.match({"source": "src1", "type": "deleted"}) == []


def test_one_path_named_twice_in_an_alternative_needs_both_fields() -> None:
    # $or can repeat a path that its parent names: both fields must hold.
    pattern = {"a": ["x", "xy"], "$or": [{"a": [{"prefix": "xy"}]}, {"b": [1]}]}
    rules = RuleSet()
    rules.add("r", pattern)
    for event in ({"a": "xy"}, {"a": "x"}, {"a": "x", "b": 1}, {"a": "xyz"}, {"a": ["x", "xyz"]}):
        assert rules.match(event) == (["r"] if Pattern(pattern).matches(event) else []), event


def test_a_rule_filed_under_two_access_values_is_reported_once() -> None:
    rules = RuleSet()
    rules.add("both", {"source": ["a", "b"], "n": [{"numeric": [">", 1]}]})
    assert rules.match({"source": ["a", "b"], "n": 2}) == ["both"]
    assert rules.match({"source": ["a", "b"], "n": 0}) == []


def test_remembered_slot_answers_are_forgotten_when_a_bucket_changes() -> None:
    rules = RuleSet()
    rules.add("big", {"source": ["s"], "n": [{"numeric": [">", 10]}]})
    event = {"source": "s", "n": 20}
    assert rules.match(event) == ["big"]
    rules.add("small", {"source": ["s"], "n": [{"numeric": ["<", 30]}]})
    assert rules.match(event) == ["big", "small"]
    rules.remove("big")
    assert rules.match(event) == ["small"]
    rules.add("other", {"source": ["s"], "m": [{"exists": False}]})
    assert rules.match(event) == ["small", "other"]
