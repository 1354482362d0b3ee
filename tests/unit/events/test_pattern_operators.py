"""Every operator of EventBridge's pattern language, from the EventBridge user guide
("Content filtering in Amazon EventBridge event patterns", "Comparison operators
for use in event patterns"), including the awkward cases issue 3 lists.

Each case is checked through ``Pattern.matches`` and through a one-rule
``RuleSet``, so both matchers are held to the same specification.
"""

from __future__ import annotations

from typing import Any

import pytest

from reflow.events import Pattern, RuleSet

EC2_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
}


def check(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert Pattern(pattern).matches(event) is expected
    rules = RuleSet()
    rules.add("rule", pattern)
    assert rules.match(event) == (["rule"] if expected else [])


# --- exact values --------------------------------------------------------------


def test_exact_values_match_the_documented_ec2_example() -> None:
    pattern = {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["terminated"]},
    }
    check(pattern, EC2_EVENT, True)


def test_exact_string_is_case_sensitive() -> None:
    check({"detail": {"state": ["Terminated"]}}, EC2_EVENT, False)


def test_any_value_in_the_pattern_array_may_match() -> None:
    check({"detail": {"state": ["running", "terminated"]}}, EC2_EVENT, True)


def test_fields_are_anded() -> None:
    check({"source": ["aws.ec2"], "detail": {"state": ["running"]}}, EC2_EVENT, False)


@pytest.mark.parametrize(
    ("pattern_value", "event_value", "expected"),
    [
        (300, 300.0, True),
        (300.0, 300, True),
        (3e2, 300, True),
        (300, 301, False),
        (300, "300", False),
        ("300", 300, False),
        (1, True, False),
        (True, 1, False),
        (True, True, True),
        (False, False, True),
        (None, None, True),
        (None, "null", False),
        ("", "", True),
    ],
)
def test_exact_values_compare_numbers_by_value_and_never_across_types(
    pattern_value: Any, event_value: Any, expected: bool
) -> None:
    check({"detail": {"v": [pattern_value]}}, {"detail": {"v": event_value}}, expected)


def test_missing_field_never_matches_an_exact_value() -> None:
    check({"detail": {"absent": ["x"]}}, EC2_EVENT, False)
    check({"detail": {"absent": [None]}}, EC2_EVENT, False)


def test_pattern_key_absent_from_the_event_fails_even_if_sibling_matches() -> None:
    check({"detail": {"state": ["terminated"], "zone": ["a"]}}, EC2_EVENT, False)


def test_event_fields_not_in_the_pattern_are_ignored() -> None:
    check({"source": ["aws.ec2"]}, EC2_EVENT, True)


def test_empty_pattern_matches_every_event() -> None:
    check({}, EC2_EVENT, True)


# --- arrays in the event ---------------------------------------------------------


def test_event_array_matches_if_any_element_matches() -> None:
    check({"resources": [EC2_EVENT["resources"][0]]}, EC2_EVENT, True)
    check({"detail": {"tags": ["b"]}}, {"detail": {"tags": ["a", "b", "c"]}}, True)
    check({"detail": {"tags": ["z"]}}, {"detail": {"tags": ["a", "b", "c"]}}, False)


def test_empty_event_array_holds_no_value() -> None:
    check({"detail": {"tags": ["a"]}}, {"detail": {"tags": []}}, False)


def test_arrays_of_objects_are_searched_element_by_element() -> None:
    event = {"detail": {"items": [{"sku": "a1"}, {"sku": "b2"}]}}
    check({"detail": {"items": {"sku": ["b2"]}}}, event, True)
    check({"detail": {"items": {"sku": ["c3"]}}}, event, False)


def test_nested_arrays_are_flattened() -> None:
    check({"detail": {"m": [4]}}, {"detail": {"m": [[1, 2], [3, [4]]]}}, True)


# --- nested objects ----------------------------------------------------------------


def test_nested_object_fields_match_by_path() -> None:
    event = {"detail": {"a": {"b": {"c": "deep"}}}}
    check({"detail": {"a": {"b": {"c": ["deep"]}}}}, event, True)
    check({"detail": {"a": {"b": {"c": ["shallow"]}}}}, event, False)


def test_an_object_in_the_event_is_not_a_leaf_value() -> None:
    check({"detail": {"a": ["x"]}}, {"detail": {"a": {"b": "x"}}}, False)


# --- prefix / suffix / equals-ignore-case ----------------------------------------


def test_prefix_matches_the_start_of_a_string() -> None:
    check({"time": [{"prefix": "2017-12-22"}]}, EC2_EVENT, True)
    check({"time": [{"prefix": "2018"}]}, EC2_EVENT, False)


def test_prefix_is_case_sensitive_and_only_for_strings() -> None:
    check({"detail": {"v": [{"prefix": "Ab"}]}}, {"detail": {"v": "abc"}}, False)
    check({"detail": {"v": [{"prefix": "1"}]}}, {"detail": {"v": 123}}, False)


def test_empty_prefix_matches_any_string_including_the_empty_one() -> None:
    check({"detail": {"v": [{"prefix": ""}]}}, {"detail": {"v": ""}}, True)
    check({"detail": {"v": [{"prefix": ""}]}}, {"detail": {"v": "anything"}}, True)
    check({"detail": {"v": [{"prefix": ""}]}}, {"detail": {"v": None}}, False)


def test_prefix_longer_than_the_value_does_not_match() -> None:
    check({"detail": {"v": [{"prefix": "abcd"}]}}, {"detail": {"v": "abc"}}, False)


def test_suffix_matches_the_end_of_a_string() -> None:
    check({"detail": {"file": [{"suffix": ".png"}]}}, {"detail": {"file": "cat.png"}}, True)
    check({"detail": {"file": [{"suffix": ".png"}]}}, {"detail": {"file": "cat.PNG"}}, False)
    check({"detail": {"file": [{"suffix": ""}]}}, {"detail": {"file": ""}}, True)


def test_equals_ignore_case_matches_any_casing() -> None:
    pattern = {"detail-type": [{"equals-ignore-case": "ec2 instance state-change notification"}]}
    check(pattern, EC2_EVENT, True)
    check({"detail": {"v": [{"equals-ignore-case": "abc"}]}}, {"detail": {"v": "abcd"}}, False)


def test_prefix_with_equals_ignore_case_ignores_the_case_of_both() -> None:
    pattern = {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}}
    for value in ("EventBridge", "EVENTBRIDGE", "eventb"):
        check(pattern, {"detail": {"service": value}}, True)
    check(pattern, {"detail": {"service": "Event"}}, False)


def test_suffix_with_equals_ignore_case_ignores_the_case_of_both() -> None:
    pattern = {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}}
    check(pattern, {"detail": {"FileName": "a.PNG"}}, True)
    check(pattern, {"detail": {"FileName": "a.Png"}}, True)
    check(pattern, {"detail": {"FileName": "a.jpg"}}, False)


# --- wildcard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wildcard", "value", "expected"),
    [
        ("*.png", "dir/cat.png", True),
        ("*.png", ".png", True),  # * matches zero characters
        ("*.png", "cat.png.bak", False),
        ("dir/*/cat.png", "dir/a/b/cat.png", True),
        ("dir/*/cat.png", "dir//cat.png", True),
        ("*Title*", "The Title Page", True),
        ("*Title*", "title", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "acb", False),
        ("exact", "exact", True),
        ("exact", "exactly", False),
        ("*", "", True),
        ("*", "anything at all\nwith a newline", True),
        ("\\*", "*", True),
        ("\\*", "x", False),
        ("a\\*b*", "a*bcd", True),
        ("a\\*b*", "axbcd", False),
        ("back\\\\slash", "back\\slash", True),
    ],
)
def test_wildcard_matches_runs_of_any_characters_and_honours_escapes(
    wildcard: str, value: str, expected: bool
) -> None:
    check({"detail": {"v": [{"wildcard": wildcard}]}}, {"detail": {"v": value}}, expected)


def test_wildcard_only_matches_strings() -> None:
    check({"detail": {"v": [{"wildcard": "*"}]}}, {"detail": {"v": 5}}, False)


# --- anything-but -------------------------------------------------------------------


def test_anything_but_value_rejects_that_value_and_accepts_others() -> None:
    pattern = {"detail": {"state": [{"anything-but": "initializing"}]}}
    check(pattern, {"detail": {"state": "initializing"}}, False)
    check(pattern, {"detail": {"state": "running"}}, True)


def test_anything_but_number_compares_by_value() -> None:
    pattern = {"detail": {"x-limit": [{"anything-but": 123}]}}
    check(pattern, {"detail": {"x-limit": 123.0}}, False)
    check(pattern, {"detail": {"x-limit": 124}}, True)
    check(pattern, {"detail": {"x-limit": "123"}}, True)


def test_anything_but_list_rejects_every_listed_value() -> None:
    pattern = {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}
    check(pattern, {"detail": {"state": "stopped"}}, False)
    check(pattern, {"detail": {"state": "overloaded"}}, False)
    check(pattern, {"detail": {"state": "running"}}, True)


def test_anything_but_needs_the_field_to_exist() -> None:
    check({"detail": {"state": [{"anything-but": "x"}]}}, {"detail": {}}, False)


def test_anything_but_accepts_null_as_a_value_other_than_the_excluded() -> None:
    check({"detail": {"state": [{"anything-but": "x"}]}}, {"detail": {"state": None}}, True)


def test_anything_but_against_an_array_field_matches_if_any_element_is_not_excluded() -> None:
    pattern = {"detail": {"tags": [{"anything-but": "red"}]}}
    check(pattern, {"detail": {"tags": ["red", "blue"]}}, True)
    check(pattern, {"detail": {"tags": ["red", "red"]}}, False)
    check(pattern, {"detail": {"tags": ["red"]}}, False)


def test_anything_but_prefix_rejects_matching_value() -> None:
    pattern = {"region": [{"anything-but": {"prefix": "us-"}}]}
    check(pattern, EC2_EVENT, False)
    check(pattern, {**EC2_EVENT, "region": "eu-west-1"}, True)


def test_anything_but_suffix_rejects_matching_value() -> None:
    pattern = {"detail": {"FileName": [{"anything-but": {"suffix": ".png"}}]}}
    check(pattern, {"detail": {"FileName": "a.png"}}, False)
    check(pattern, {"detail": {"FileName": "a.jpg"}}, True)


def test_anything_but_equals_ignore_case_rejects_every_casing() -> None:
    pattern = {"detail": {"state": [{"anything-but": {"equals-ignore-case": ["Stopped", "x"]}}]}}
    check(pattern, {"detail": {"state": "STOPPED"}}, False)
    check(pattern, {"detail": {"state": "X"}}, False)
    check(pattern, {"detail": {"state": "running"}}, True)


def test_anything_but_wildcard_rejects_matching_paths() -> None:
    pattern = {"detail": {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}}
    check(pattern, {"detail": {"FilePath": "/usr/lib/libc.so"}}, False)
    check(pattern, {"detail": {"FilePath": "/usr/bin/ls"}}, True)


def test_anything_but_prefix_accepts_values_that_are_not_strings() -> None:
    check({"detail": {"v": [{"anything-but": {"prefix": "1"}}]}}, {"detail": {"v": 123}}, True)


# --- numeric -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numeric", "value", "expected"),
    [
        ([">", 0, "<=", 5], 5, True),
        ([">", 0, "<=", 5], 0, False),
        ([">", 0, "<=", 5], 0.0001, True),
        ([">", 0, "<=", 5], 5.0001, False),
        ([">=", 0, "<", 5], 0, True),
        ([">=", 0, "<", 5], 5, False),
        ([">", 10], 10, False),
        ([">", 10], 10.5, True),
        ([">=", 10], 10, True),
        (["<", 10], 9.99, True),
        (["<", 10], 10, False),
        (["<=", 10], 10, True),
        (["=", 300], 300.0, True),
        (["=", 3.0e2], 300, True),
        (["=", 300], 300.5, False),
        ([">", -1e9, "<", 1e9], -5, True),
        ([">", 0], "5", False),
        ([">", 0], True, False),
        ([">", 0], None, False),
    ],
)
def test_numeric_ranges_compare_only_numbers(
    numeric: list[Any], value: Any, expected: bool
) -> None:
    check({"detail": {"v": [{"numeric": numeric}]}}, {"detail": {"v": value}}, expected)


def test_numeric_on_an_array_field_matches_if_any_element_is_in_range() -> None:
    pattern = {"detail": {"v": [{"numeric": [">", 10]}]}}
    check(pattern, {"detail": {"v": [1, 2, 30]}}, True)
    check(pattern, {"detail": {"v": [1, 2, 3]}}, False)


# --- exists --------------------------------------------------------------------------


def test_exists_true_matches_a_present_leaf_including_null() -> None:
    pattern = {"detail": {"v": [{"exists": True}]}}
    check(pattern, {"detail": {"v": "x"}}, True)
    check(pattern, {"detail": {"v": None}}, True)
    check(pattern, {"detail": {"w": "x"}}, False)


def test_exists_false_on_a_missing_key_matches() -> None:
    pattern = {"detail": {"v": [{"exists": False}]}}
    check(pattern, {"detail": {"w": 1}}, True)
    check(pattern, {"other": 1}, True)
    check(pattern, {"detail": {"v": 1}}, False)


def test_exists_applies_to_leaves_only() -> None:
    check({"detail": {"v": [{"exists": True}]}}, {"detail": {"v": {"inner": 1}}}, False)
    check({"detail": {"v": [{"exists": False}]}}, {"detail": {"v": {"inner": 1}}}, True)


def test_exists_on_an_empty_array_sees_no_value() -> None:
    check({"detail": {"v": [{"exists": True}]}}, {"detail": {"v": []}}, False)
    check({"detail": {"v": [{"exists": False}]}}, {"detail": {"v": []}}, True)


def test_exists_false_or_a_value_in_one_field() -> None:
    pattern = {"detail": {"v": [{"exists": False}, "x"]}}
    check(pattern, {"detail": {}}, True)
    check(pattern, {"detail": {"v": "x"}}, True)
    check(pattern, {"detail": {"v": "y"}}, False)


# --- cidr ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cidr", "address", "expected"),
    [
        ("10.0.0.0/24", "10.0.0.255", True),
        ("10.0.0.0/24", "10.0.1.0", False),
        ("10.0.0.0/8", "10.200.3.4", True),
        ("0.0.0.0/0", "192.168.1.1", True),
        ("192.168.1.1/32", "192.168.1.1", True),
        ("2001:db8::/32", "2001:db8:ffff::1", True),
        ("2001:db8::/32", "2001:db9::1", False),
        ("2001:db8::/32", "2001:DB8::1", True),
        ("::/0", "::1", True),
        ("10.0.0.0/8", "::ffff:10.0.0.1", False),
        ("::/0", "10.0.0.1", False),
        ("10.0.0.0/8", "not an ip", False),
        ("10.0.0.0/8", "10.0.0.1/32", False),
    ],
)
def test_cidr_matches_ipv4_and_ipv6_addresses_inside_the_block(
    cidr: str, address: str, expected: bool
) -> None:
    check({"detail": {"ip": [{"cidr": cidr}]}}, {"detail": {"ip": address}}, expected)


def test_cidr_ignores_values_that_are_not_strings() -> None:
    check({"detail": {"ip": [{"cidr": "10.0.0.0/8"}]}}, {"detail": {"ip": 10}}, False)


# --- $or -------------------------------------------------------------------------------


def test_or_at_the_top_matches_either_branch() -> None:
    pattern = {"$or": [{"source": ["aws.s3"]}, {"detail": {"state": ["terminated"]}}]}
    check(pattern, EC2_EVENT, True)
    check(pattern, {**EC2_EVENT, "detail": {"state": "running"}}, False)


def test_or_is_anded_with_its_sibling_fields() -> None:
    pattern = {"source": ["aws.s3"], "$or": [{"region": ["us-west-1"]}, {"account": ["x"]}]}
    check(pattern, EC2_EVENT, False)


def test_or_inside_nested_objects() -> None:
    pattern = {
        "source": ["aws.ec2"],
        "detail": {"$or": [{"state": ["running"]}, {"instance-id": [{"prefix": "i-12"}]}]},
    }
    check(pattern, EC2_EVENT, True)
    check(pattern, {**EC2_EVENT, "detail": {"state": "stopped", "instance-id": "i-9"}}, False)


def test_or_nested_inside_or() -> None:
    pattern = {
        "$or": [
            {"detail": {"a": [1]}},
            {"$or": [{"detail": {"b": [2]}}, {"detail": {"c": [{"numeric": [">", 10]}]}}]},
        ]
    }
    check(pattern, {"detail": {"c": 11}}, True)
    check(pattern, {"detail": {"b": 2}}, True)
    check(pattern, {"detail": {"a": 1}}, True)
    check(pattern, {"detail": {"a": 2, "b": 1, "c": 10}}, False)


def test_two_ors_at_different_levels_multiply() -> None:
    pattern = {
        "$or": [{"source": ["a"]}, {"source": ["b"]}],
        "detail": {"$or": [{"x": [1]}, {"y": [2]}]},
    }
    assert len(Pattern(pattern).alternatives) == 4
    check(pattern, {"source": "b", "detail": {"y": 2}}, True)
    check(pattern, {"source": "c", "detail": {"y": 2}}, False)


# --- mixing -----------------------------------------------------------------------------


def test_one_field_may_mix_operators_and_values() -> None:
    pattern = {"detail": {"v": ["exact", {"prefix": "pre"}, {"numeric": [">", 100]}]}}
    check(pattern, {"detail": {"v": "exact"}}, True)
    check(pattern, {"detail": {"v": "prefixed"}}, True)
    check(pattern, {"detail": {"v": 101}}, True)
    check(pattern, {"detail": {"v": 100}}, False)


def test_pattern_given_as_json_text_matches_like_the_dict() -> None:
    text = '{"source": ["aws.ec2"], "detail": {"state": [{"anything-but": "running"}]}}'
    assert Pattern(text).matches(EC2_EVENT)


def test_a_field_named_inside_and_outside_or_must_satisfy_both() -> None:
    pattern = {
        "detail": {
            "words": [{"numeric": [">=", 100, "<", 200]}],
            "$or": [{"words": [{"numeric": [">", 150]}]}, {"tags": ["x"]}],
        }
    }
    check(pattern, {"detail": {"words": 300}}, False)
    check(pattern, {"detail": {"words": 160}}, True)
    check(pattern, {"detail": {"words": 120, "tags": ["x"]}}, True)
    check(pattern, {"detail": {"words": 120}}, False)


# --- array consistency (event-ruler's README, "JSON Array Matching") ----------------------

EMPLOYEES: dict[str, Any] = {
    "employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"},
    ]
}


def test_fields_inside_one_array_element_match_together() -> None:
    check({"employees": {"firstName": ["Anna"]}}, EMPLOYEES, True)
    check({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, EMPLOYEES, True)


def test_fields_from_different_elements_of_one_array_do_not_match_together() -> None:
    check({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, EMPLOYEES, False)


def test_array_consistency_holds_for_operators_and_nested_arrays() -> None:
    event = {
        "employees": [
            [{"firstName": "John", "age": 30}, {"firstName": "Anna", "age": 41}],
            [{"firstName": "Peter", "age": 25}],
        ]
    }
    pattern = {"employees": {"firstName": [{"prefix": "A"}], "age": [{"numeric": [">", 40]}]}}
    check(pattern, event, True)
    pattern = {"employees": {"firstName": [{"prefix": "P"}], "age": [{"numeric": [">", 40]}]}}
    check(pattern, event, False)


def test_a_field_outside_the_array_combines_with_any_element() -> None:
    event = {**EMPLOYEES, "team": "core"}
    check({"team": ["core"], "employees": {"lastName": ["Jones"]}}, event, True)


def test_scalar_arrays_inside_array_elements_are_values_of_that_element() -> None:
    event = {"items": [{"sku": "a", "tags": ["red", "big"]}, {"sku": "b", "tags": ["blue"]}]}
    check({"items": {"sku": ["a"], "tags": ["big"]}}, event, True)
    check({"items": {"sku": ["b"], "tags": ["big"]}}, event, False)
