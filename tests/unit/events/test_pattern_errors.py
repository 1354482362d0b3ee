"""Invalid patterns are refused with InvalidPatternError naming the path and the rule broken."""

from __future__ import annotations

from typing import Any

import pytest

from reflow.errors import EventError, InvalidPatternError, ReflowError
from reflow.events import Pattern
from reflow.events.patterns import MAX_ALTERNATIVES


def refused(pattern: Any) -> InvalidPatternError:
    with pytest.raises(InvalidPatternError) as caught:
        Pattern(pattern)
    return caught.value


@pytest.mark.parametrize(
    ("pattern", "path", "rule"),
    [
        ([], "", "must be a JSON object"),
        ("[1, 2]", "", "must be a JSON object"),
        ("{not json", "", "not valid JSON"),
        ({"source": "aws.ec2"}, "source", "must be an object or an array"),
        ({"source": 5}, "source", "must be an object or an array"),
        ({"detail": {"state": []}}, "detail.state", "empty arrays are not allowed"),
        ({"detail": {"state": [["nested"]]}}, "detail.state[0]", "must be a string, number"),
        ({"a": [{"prefix": "x", "suffix": "y"}]}, "a[0]", "exactly one operator, found 2"),
        ({"a": [{}]}, "a[0]", "exactly one operator, found 0"),
        ({"a": [{"startswith": "x"}]}, "a[0].startswith", "unknown operator 'startswith'"),
        ({"a": [{"prefix": 5}]}, "a[0].prefix", "must be a string, not a number"),
        ({"a": [{"prefix": {"anything": "x"}}]}, "a[0].prefix", "only operator allowed"),
        ({"a": [{"suffix": None}]}, "a[0].suffix", "must be a string, not null"),
        ({"a": [{"equals-ignore-case": 1}]}, "a[0].equals-ignore-case", "must be a string"),
        ({"a": [{"exists": "true"}]}, "a[0].exists", "exists must be true or false"),
        ({"a": [{"exists": 1}]}, "a[0].exists", "exists must be true or false"),
        ({"a": [{"numeric": 5}]}, "a[0].numeric", "non-empty array"),
        ({"a": [{"numeric": []}]}, "a[0].numeric", "non-empty array"),
        ({"a": [{"numeric": [">"]}]}, "a[0].numeric", "in pairs"),
        ({"a": [{"numeric": [">", "5"]}]}, "a[0].numeric[1]", "must be a number, not a string"),
        ({"a": [{"numeric": [">", True]}]}, "a[0].numeric[1]", "must be a number, not a boolean"),
        ({"a": [{"numeric": ["!=", 5]}]}, "a[0].numeric[0]", "unknown numeric operator"),
        ({"a": [{"numeric": ["<", 5, ">", 1]}]}, "a[0].numeric", "lower bound"),
        ({"a": [{"numeric": ["=", 5, "<", 9]}]}, "a[0].numeric", "lower bound"),
        ({"a": [{"numeric": [">", 5, "<", 5]}]}, "a[0].numeric", "range is empty"),
        ({"a": [{"numeric": [">", 1, "<", 5, "<"]}]}, "a[0].numeric", "in pairs"),
        ({"a": [{"numeric": [">", 1, "<", 5, "<", 9, "<", 10]}]}, "a[0].numeric", "at most two"),
        ({"a": [{"anything-but": None}]}, "a[0].anything-but", "strings or numbers, not null"),
        ({"a": [{"anything-but": True}]}, "a[0].anything-but", "not a boolean"),
        ({"a": [{"anything-but": []}]}, "a[0].anything-but", "empty arrays"),
        ({"a": [{"anything-but": ["x", None]}]}, "a[0].anything-but[1]", "not null"),
        ({"a": [{"anything-but": {"numeric": [">", 1]}}]}, "a[0].anything-but.numeric", "unknown"),
        ({"a": [{"anything-but": {"prefix": ""}}]}, "a[0].anything-but.prefix", "empty prefix"),
        ({"a": [{"anything-but": {"prefix": 3}}]}, "a[0].anything-but.prefix", "must be a string"),
        ({"a": [{"anything-but": {"prefix": "x", "suffix": "y"}}]}, "a[0].anything-but", "one"),
        ({"a": [{"wildcard": "a**b"}]}, "a[0].wildcard", "consecutive wildcard characters"),
        ({"a": [{"wildcard": "a\\b"}]}, "a[0].wildcard", "invalid escape"),
        ({"a": [{"wildcard": "*a*b*c*d*e*f"}]}, "a[0].wildcard", "too complex"),
        ({"a": [{"cidr": "10.0.0.0"}]}, "a[0].cidr", "exactly one '/'"),
        ({"a": [{"cidr": "10.0.0.1/24"}]}, "a[0].cidr", "malformed CIDR"),
        ({"a": [{"cidr": "10.0.0.0/33"}]}, "a[0].cidr", "malformed CIDR"),
        ({"a": [{"cidr": "2001:db8::/129"}]}, "a[0].cidr", "malformed CIDR"),
        ({"a": [{"cidr": 10}]}, "a[0].cidr", "must be a string"),
        ({"$or": [{"a": [1]}]}, "$or", "at least two objects"),
        ({"$or": {"a": [1]}}, "$or", "at least two objects"),
        ({"$or": [{"a": [1]}, ["b"]]}, "$or[1]", "must be an object"),
        ({"$or": [{"a": [1]}, {}]}, "$or[1]", "must not be empty"),
        ({"detail": {"$or": [{"a": [1]}, {"b": "x"}]}}, "detail.$or[1].b", "object or an array"),
    ],
)
def test_invalid_pattern_names_the_path_and_the_rule(pattern: Any, path: str, rule: str) -> None:
    error = refused(pattern)
    assert error.path == path
    assert rule in error.rule
    assert rule in str(error)
    assert (path in str(error)) if path else str(error).startswith("pattern:")


def test_or_expansion_past_the_limit_is_too_complex() -> None:
    branches = [{"x": [i]} for i in range(32)]
    pattern = {"$or": branches, "detail": {"$or": branches}}  # 32 x 32 = 1024: allowed
    assert len(Pattern(pattern).alternatives) == MAX_ALTERNATIVES
    pattern["d2"] = {"$or": [{"y": [1]}, {"y": [2]}]}
    error = refused(pattern)
    assert "too complex" in error.rule
    assert error.path == "d2"


def test_invalid_pattern_error_belongs_to_the_event_errors() -> None:
    error = refused({"a": "b"})
    assert isinstance(error, EventError)
    assert isinstance(error, ReflowError)


def test_valid_edge_cases_are_accepted() -> None:
    Pattern({"a": [{"prefix": ""}]})
    Pattern({"a": [{"wildcard": ""}]})
    Pattern({"a": [{"numeric": ["=", 0]}]})
    Pattern({"a": [{"numeric": [">=", -1.5, "<=", 1e9]}]})
    Pattern({"a": [{"anything-but": {"wildcard": ["*.a", "*.b"]}}]})
    Pattern({"a": [{"cidr": "::/0"}]})
    Pattern({"a": [None, True, False, 0, "", {"exists": True}]})
