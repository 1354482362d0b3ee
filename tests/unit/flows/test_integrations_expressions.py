"""The DynamoDB expression subset: conditions, updates and projections, parsed and evaluated."""

from __future__ import annotations

from typing import Any

import pytest

from reflow.flows.dynamodb_expressions import ExpressionError, Expressions

ITEM = {
    "id": "a1",
    "n": 5,
    "title": "Hello world",
    "tags": ["x", "y"],
    "live": True,
    "author": {"name": "Ada", "langs": ["en", "fr"]},
    "gone": None,
}
VALUES: dict[str, tuple[Any, str]] = {
    ":five": (5, "N"),
    ":one": (1, "N"),
    ":nine": (9, "N"),
    ":s5": ("5", "S"),
    ":hello": ("Hello", "S"),
    ":x": ("x", "S"),
    ":true": (True, "BOOL"),
    ":one_bool": (1, "N"),
    ":M": ("M", "S"),
    ":L": ("L", "S"),
    ":NULL": ("NULL", "S"),
}


def _holds(text: str, item: Any = ITEM, names: dict[str, str] | None = None) -> bool:
    return Expressions(names or {}, VALUES).condition(text).evaluate(item)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n = :five", True),
        ("n <> :five", False),
        ("n = :s5", False),  # a number never equals a string
        ("n < :nine AND n > :one", True),
        ("n BETWEEN :one AND :five", True),
        ("n BETWEEN :s5 AND :nine", False),
        ("n IN (:one, :nine, :five)", True),
        ("missing = :five", False),
        ("missing <> :five", False),  # a comparison with a missing attribute is false
        ("NOT missing = :five", True),
        ("attribute_exists(gone)", True),  # null is a value
        ("attribute_not_exists(author.age)", True),
        ("begins_with(title, :hello)", True),
        ("contains(title, :x)", False),
        ("contains(tags, :x)", True),
        ("contains(author.langs[1], :x)", False),
        ("size(tags) = :one", False),
        ("size(title) > :nine", True),
        ("attribute_type(author, :M) AND attribute_type(tags, :L)", True),
        ("attribute_type(gone, :NULL)", True),
        ("live = :true AND live <> :one_bool", True),
        ("n = :one OR n = :five AND live = :true", True),
        ("(n = :one OR n = :five) AND NOT live = :true", False),
        ("author.#n = :hello", False),
    ],
)
def test_conditions(text: str, expected: bool) -> None:
    assert _holds(text, names={"#n": "name"} if "#n" in text else None) is expected


def test_an_absent_item_fails_comparisons_and_has_no_attributes() -> None:
    assert _holds("attribute_not_exists(id)", None)
    assert not _holds("n = :five", None)


def test_keywords_are_case_insensitive() -> None:
    assert _holds("n between :one and :nine and not n in (:one)")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "n =",
        "n = :five)",
        "(n = :five",
        "n ~ :five",
        "n = :undefined",
        "#u = :five",
        "and = :five",
    ],
)
def test_malformed_conditions_are_errors(text: str) -> None:
    with pytest.raises(ExpressionError):
        Expressions({}, VALUES).condition(text)


def test_unused_placeholders_are_reported() -> None:
    exprs = Expressions({"#a": "a", "#b": "b"}, VALUES)
    exprs.condition("#a = :five")
    problem = exprs.unused()
    assert problem is not None and "#b" in problem


def test_update_operands_read_the_item_as_it_was() -> None:
    update = Expressions({}, VALUES).update("SET a = n, n = a")
    assert update.apply({"id": "k", "a": 1, "n": 2}, {"id": "k"}) == {"id": "k", "a": 2, "n": 1}


def test_removing_list_elements_uses_the_old_indexes() -> None:
    update = Expressions({}, VALUES).update("REMOVE l[0], l[2]")
    assert update.apply({"id": "k", "l": [0, 1, 2, 3]}, {"id": "k"}) == {"id": "k", "l": [1, 3]}


def test_setting_past_the_end_of_a_list_appends() -> None:
    update = Expressions({}, VALUES).update("SET l[10] = :x")
    assert update.apply({"id": "k", "l": ["a"]}, {"id": "k"}) == {"id": "k", "l": ["a", "x"]}


def test_projection_paths() -> None:
    exprs = Expressions({"#a": "author"}, {})
    assert exprs.projection("#a.name, tags[0], n") == [("author", "name"), ("tags", 0), ("n",)]
