"""RuleSet's remembered classes and anything-but index: never stale, never mixing value types.

A path index remembers the class of each recurring scalar value
(``PathIndex.value_class``), a bucket's slot remembers which alternatives
each class lets through, and ``anything-but`` values are indexed as
exclusions. All are caches over the rules, so the properties here
interleave matching with adding and removing rules and check every answer
against each rule's :class:`Pattern` alone.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflow.events import Pattern, RuleSet
from reflow.events.paths import PathIndex
from tests.unit.events.test_ruleset import NUMBERS, SCALARS, STRINGS, events, pattern_objects


def _expected(rules: RuleSet, event: dict[str, Any]) -> list[str]:
    return [name for name in rules.names() if rules.pattern(name).matches(event)]


def test_remembered_step_keeps_booleans_integers_and_floats_apart() -> None:
    # EventBridge: true is not the number 1, and 1 equals 1.0; Python's
    # True == 1 == 1.0 must not let one value's remembered step answer for another.
    rules = RuleSet()
    rules.add("one", {"v": [{"numeric": ["=", 1]}]})
    rules.add("true", {"v": [True]})
    rules.add("not-one", {"v": [{"anything-but": 1}]})
    rules.add("text", {"v": [{"prefix": "1"}]})
    for value, expected in [
        (True, ["true", "not-one"]),
        (1, ["one"]),
        (1.0, ["one"]),
        ("1", ["not-one", "text"]),
        (True, ["true", "not-one"]),
        (1, ["one"]),
    ]:
        assert rules.match({"v": value}) == expected, value


def test_a_rule_added_after_matching_is_seen_by_the_next_match() -> None:
    rules = RuleSet()
    rules.add("prefix", {"state": [{"prefix": "pub"}]})
    event = {"state": "published"}
    assert rules.match(event) == ["prefix"]
    rules.add("but", {"state": [{"anything-but": ["draft"]}]})
    assert rules.match(event) == ["prefix", "but"]
    rules.remove("prefix")
    assert rules.match(event) == ["but"]
    rules.add("but", {"state": [{"anything-but": ["published"]}]})
    assert rules.match(event) == []


def memo_of(index: PathIndex) -> dict[Any, int] | None:
    """The index's memory, read afresh: a call keeps the type checker from
    carrying an earlier ``is None`` over a rules change that resets it."""
    return index.memo


def test_values_that_never_repeat_switch_the_memory_off_until_the_path_changes() -> None:
    rules = RuleSet()
    rules.add("a", {"s": [{"prefix": "a"}]})
    for value in range(1000):
        text = f"{'a' if value % 2 else 'b'}-{value}"
        assert rules.match({"s": text}) == (["a"] if value % 2 else [])
    index = rules._paths[("s",)]
    assert memo_of(index) is None
    rules.add("b", {"s": [{"suffix": "-7"}]})
    assert memo_of(index) == {}
    assert rules.match({"s": "a-7"}) == ["a", "b"]
    assert rules.match({"s": "b-7"}) == ["b"]


def test_recurring_values_stay_remembered_and_bounded() -> None:
    rules = RuleSet()
    rules.add("pub", {"state": [{"prefix": "pub"}]})
    states = [f"state-{index}" for index in range(10)] + ["published"]
    for _ in range(50):
        for state in states:
            assert rules.match({"state": state}) == (["pub"] if state == "published" else [])
    index = rules._paths[("state",)]
    assert index.memo is not None and len(index.memo) == len(states)


def test_anything_but_values_exclude_only_their_own_rules() -> None:
    rules = RuleSet()
    states = ["draft", "review", "published", "archived"]
    for index, state in enumerate(states):
        rules.add(f"not-{state}", {"state": [{"anything-but": state}]})
        rules.add(f"not-{state}-or-{index}", {"state": [{"anything-but": [state, index]}]})
    got = rules.match({"state": "review"})
    assert got == [n for n in rules.names() if "review" not in n]
    assert rules.match({"state": 2}) == [n for n in rules.names() if not n.endswith("-2")]
    assert rules.match({}) == []  # anything-but needs the field to be there
    assert rules.match({"state": None}) == rules.names()  # null is a value it allows


def test_anything_but_and_another_condition_on_one_field_hold_either_way() -> None:
    # One field listing two conditions holds when either does: the value the
    # anything-but excludes can still match through the prefix.
    rules = RuleSet()
    rules.add("r", {"state": [{"anything-but": "draft"}, {"prefix": "dr"}]})
    assert rules.match({"state": "draft"}) == ["r"]
    assert rules.match({"state": "done"}) == ["r"]
    assert Pattern({"state": [{"anything-but": "draft"}, {"prefix": "dr"}]}).matches(
        {"state": "draft"}
    )


_operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5), pattern_objects(1)),
        st.tuples(st.just("remove"), st.integers(0, 5), st.none()),
        st.tuples(st.just("match"), st.none(), events),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=_operations, probes=st.lists(events, min_size=1, max_size=3))
def test_matching_between_changes_agrees_with_each_pattern_alone(
    operations: list[tuple[str, Any, Any]], probes: list[dict[str, Any]]
) -> None:
    rules = RuleSet()
    for operation, index, argument in operations:
        if operation == "add":
            rules.add(f"r{index}", argument)
        elif operation == "remove" and f"r{index}" in rules:
            rules.remove(f"r{index}")
        elif operation == "match":
            assert rules.match(argument) == _expected(rules, argument)
        # The same probes after every step, so remembered steps from before
        # a change are put to the test after it.
        for probe in probes:
            assert rules.match(probe) == _expected(rules, probe)


# anything-but takes strings and numbers (EventBridge refuses booleans and null).
_but_values = st.sampled_from([*STRINGS, *NUMBERS])
_but_operands = st.one_of(_but_values, st.lists(_but_values, min_size=1, max_size=3))


@settings(max_examples=150, deadline=None)
@given(
    operands=st.lists(_but_operands, min_size=1, max_size=12),
    removed=st.sets(st.integers(0, 11)),
    values=st.lists(st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), min_size=1, max_size=6),
)
def test_many_anything_but_rules_on_one_path_agree_with_each_pattern(
    operands: list[Any], removed: set[int], values: list[Any]
) -> None:
    rules = RuleSet()
    for index, operand in enumerate(operands):
        rules.add(f"r{index}", {"k": [{"anything-but": operand}]})
    for value in values:
        event = {"k": value}
        assert rules.match(event) == _expected(rules, event)
    for index in removed:
        if f"r{index}" in rules:
            rules.remove(f"r{index}")
    for value in values:
        event = {"k": value}
        assert rules.match(event) == _expected(rules, event)


_texts = st.text(alphabet="ab/.", max_size=5)
_affix_operators = st.one_of(
    st.builds(lambda t: {"prefix": t}, _texts),
    st.builds(lambda t: {"suffix": t}, _texts),
    st.builds(lambda t: {"prefix": {"equals-ignore-case": t}}, _texts),
    st.builds(lambda t: {"suffix": {"equals-ignore-case": t}}, _texts),
    st.builds(lambda t: {"wildcard": t + "*"}, _texts.filter(bool)),
    st.builds(lambda t: {"wildcard": "*" + t}, _texts.filter(bool)),
)


@settings(max_examples=150, deadline=None)
@given(
    operators=st.lists(_affix_operators, min_size=1, max_size=16),
    removed=st.sets(st.integers(0, 15)),
    values=st.lists(st.text(alphabet="abAB/.", max_size=7), min_size=1, max_size=6),
)
def test_many_prefix_suffix_and_wildcard_rules_on_one_path_agree_with_each_pattern(
    operators: list[dict[str, Any]], removed: set[int], values: list[str]
) -> None:
    # More than a few affixes on one path: the index probes the value at each
    # key length in use, and those lengths must follow additions and removals.
    rules = RuleSet()
    for index, operator in enumerate(operators):
        rules.add(f"r{index}", {"k": [operator]})
    for index in sorted(removed):
        if f"r{index}" in rules:
            rules.remove(f"r{index}")
            for value in values:
                assert rules.match({"k": value}) == _expected(rules, {"k": value})
    for value in values:
        assert rules.match({"k": value}) == _expected(rules, {"k": value})
