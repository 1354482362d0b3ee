"""Choice rules: typed comparisons, Path variants, StringMatches, Is* tests, And/Or/Not."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.flows.choice import matches, parse_timestamp, string_matches
from reflow.flows.errors import StatesError
from reflow.flows.model import ChoiceRule


def rule(operator: str, operand: Any, variable: str = "$.v") -> ChoiceRule:
    return ChoiceRule(operator=operator, variable=variable, operand=operand)


@pytest.mark.parametrize(
    ("operator", "value", "operand", "expected"),
    [
        ("StringEquals", "a", "a", True),
        ("StringEquals", 1, "1", False),
        ("StringLessThan", "a", "b", True),
        ("StringGreaterThanEquals", "b", "b", True),
        ("NumericEquals", 1, 1.0, True),
        ("NumericEquals", True, 1, False),
        ("NumericLessThan", 1, 2, True),
        ("NumericGreaterThan", "3", 2, False),
        ("NumericLessThanEquals", 2, 2, True),
        ("BooleanEquals", False, False, True),
        ("BooleanEquals", 0, False, False),
        ("TimestampEquals", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00", True),
        ("TimestampLessThan", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", True),
        ("TimestampGreaterThan", "not a time", "2024-01-02T00:00:00Z", False),
    ],
)
def test_comparisons_are_typed(operator: str, value: Any, operand: Any, expected: bool) -> None:
    assert matches(rule(operator, operand), {"v": value}) is expected


def test_path_variants_compare_against_another_field() -> None:
    data = {"v": 5, "limit": 7, "name": "x", "other": "x"}
    assert matches(rule("NumericLessThanPath", "$.limit"), data)
    assert matches(rule("StringEqualsPath", "$.other", "$.name"), data)


def test_path_variant_can_compare_against_a_variable() -> None:
    assert matches(rule("NumericEqualsPath", "$limit"), {"v": 3}, None, {"limit": 3})


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("log-*.txt", "log-2024.txt", True),
        ("log-*.txt", "log-.txt", True),
        ("log-*.txt", "log-2024.csv", False),
        ("*", "", True),
        (r"a\*b", "a*b", True),
        (r"a\*b", "axb", False),
        (r"a\\*", "a\\anything", True),
        ("a.b", "axb", False),
    ],
)
def test_string_matches_wildcards_and_escapes(pattern: str, value: str, expected: bool) -> None:
    assert string_matches(value, pattern) is expected


def test_is_tests_check_types_and_presence() -> None:
    data = {"n": None, "i": 1, "s": "x", "b": True, "t": "2024-01-01T00:00:00.5Z"}
    assert matches(rule("IsNull", True, "$.n"), data)
    assert matches(rule("IsNumeric", False, "$.b"), data)
    assert matches(rule("IsString", True, "$.s"), data)
    assert matches(rule("IsBoolean", True, "$.b"), data)
    assert matches(rule("IsTimestamp", True, "$.t"), data)
    assert matches(rule("IsPresent", False, "$.missing"), data)
    assert matches(rule("IsPresent", True, "$.n"), data)


def test_comparing_a_missing_variable_is_a_runtime_error() -> None:
    with pytest.raises(StatesError) as caught:
        matches(rule("StringEquals", "x", "$.missing"), {})
    assert caught.value.name == "States.Runtime"


def test_and_or_not_combine_rules() -> None:
    low = rule("NumericGreaterThanEquals", 1)
    high = rule("NumericLessThan", 10)
    both = ChoiceRule(operator="And", children=(low, high))
    either = ChoiceRule(operator="Or", children=(low, high))
    negated = ChoiceRule(operator="Not", children=(both,))
    assert matches(both, {"v": 5}) and not matches(both, {"v": 50})
    assert matches(either, {"v": 50})
    assert matches(negated, {"v": 50}) and not matches(negated, {"v": 5})


def test_timestamps_need_a_zone_and_a_t() -> None:
    assert parse_timestamp("2024-01-01T00:00:00Z") is not None
    assert parse_timestamp("2024-01-01 00:00:00Z") is None
    assert parse_timestamp("2024-01-01T00:00:00") is None
    assert parse_timestamp("2024-02-30T00:00:00Z") is None


any_json = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.text(alphabet="ab", max_size=3),
    st.lists(st.integers(), max_size=2),
)
RELATIONS = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "GreaterThan": lambda a, b: a > b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThanEquals": lambda a, b: a >= b,
}


@given(any_json, st.integers(-5, 5), st.sampled_from(sorted(RELATIONS)))
def test_numeric_rules_hold_only_for_numbers_in_that_relation(
    value: Any, operand: int, relation: str
) -> None:
    expected = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and RELATIONS[relation](value, operand)
    )
    assert matches(rule("Numeric" + relation, operand), {"v": value}) is expected
    assert matches(rule(f"Numeric{relation}Path", "$.o"), {"v": value, "o": operand}) is expected


@given(any_json, st.text(alphabet="ab", max_size=3), st.sampled_from(sorted(RELATIONS)))
def test_string_rules_hold_only_for_strings_in_that_relation(
    value: Any, operand: str, relation: str
) -> None:
    expected = isinstance(value, str) and RELATIONS[relation](value, operand)
    assert matches(rule("String" + relation, operand), {"v": value}) is expected


@given(any_json, any_json)
def test_not_is_the_negation_and_and_or_agree_with_python(left: Any, right: Any) -> None:
    a, b = rule("IsNumeric", True), rule("IsString", True, "$.w")
    data = {"v": left, "w": right}
    both = ChoiceRule(operator="And", children=(a, b))
    either = ChoiceRule(operator="Or", children=(a, b))
    assert matches(both, data) is (matches(a, data) and matches(b, data))
    assert matches(either, data) is (matches(a, data) or matches(b, data))
    assert matches(ChoiceRule(operator="Not", children=(either,)), data) is not matches(
        either, data
    )
