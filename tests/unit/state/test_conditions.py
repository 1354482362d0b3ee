"""Conditions follow DynamoDB's condition-expression semantics (Developer Guide,
"Condition expressions" and "Comparison operator and function reference")."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.state.conditions import attr, condition_text

ITEM: dict[str, Any] = {
    "id": "a1",
    "stock": 5,
    "price": 9.5,
    "title": "Breaking news",
    "tags": ["politics", "eu"],
    "author": {"name": "Ada", "roles": ["editor"]},
    "draft": False,
    "note": None,
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (attr("stock") == 5, True),
        (attr("stock") == 5.0, True),
        (attr("stock") == "5", False),
        (attr("stock") != 4, True),
        (attr("stock") >= 5, True),
        (attr("stock") > 5, False),
        (attr("stock") < 6, True),
        (attr("stock") <= 4, False),
        (attr("title") > "A", True),
        (attr("price").between(9, 10), True),
        (attr("price").between(9.6, 10), False),
        (attr("stock").between(5, 5), True),
        (attr("title").begins_with("Break"), True),
        (attr("title").begins_with("news"), False),
        (attr("title").contains("king"), True),
        (attr("tags").contains("eu"), True),
        (attr("tags").contains("us"), False),
        (attr("stock").is_in([1, 5, 9]), True),
        (attr("stock").is_in(["5"]), False),
        (attr("author.name") == "Ada", True),
        (attr("author.roles[0]") == "editor", True),
        (attr("tags[1]") == "eu", True),
        (attr("tags[2]").exists(), False),
        (attr("note").exists(), True),
        (attr("note") == None, True),  # noqa: E711 - builds a Condition, not a test
        (attr("draft") == False, True),  # noqa: E712
        (attr("draft") == 0, False),
    ],
)
def test_condition_evaluates_like_dynamodb(condition: Any, expected: bool) -> None:
    assert condition.evaluate(ITEM) is expected


def test_every_comparison_with_a_missing_attribute_is_false() -> None:
    for condition in (
        attr("missing") == 1,
        attr("missing") != 1,
        attr("missing") < 1,
        attr("missing").begins_with("a"),
        attr("missing").contains("a"),
        attr("missing").between(0, 9),
        attr("missing").is_in([1]),
    ):
        assert condition.evaluate(ITEM) is False, str(condition)


def test_ordering_across_types_is_false_in_both_directions() -> None:
    assert (attr("stock") < "z").evaluate(ITEM) is False
    assert (attr("stock") >= "0").evaluate(ITEM) is False
    assert (attr("title") < 1).evaluate(ITEM) is False


def test_not_exists_holds_for_an_absent_item() -> None:
    assert attr("id").not_exists().evaluate(None) is True
    assert attr("id").exists().evaluate(None) is False
    assert attr("id").not_exists().evaluate(ITEM) is False


def test_and_or_not_combine() -> None:
    both = (attr("stock") >= 1) & (attr("draft") == False)  # noqa: E712
    either = (attr("stock") > 100) | attr("title").begins_with("Break")
    assert both.evaluate(ITEM) is True
    assert either.evaluate(ITEM) is True
    assert (~both).evaluate(ITEM) is False
    assert ((attr("stock") > 100) & both).evaluate(ITEM) is False


def test_python_and_on_conditions_is_refused() -> None:
    with pytest.raises(TypeError, match="&, \\| and ~"):
        _ = (attr("a") == 1) and (attr("b") == 2)


def test_combining_with_a_non_condition_is_refused() -> None:
    with pytest.raises(TypeError):
        _ = (attr("a") == 1) & True  # type: ignore[operator]


@pytest.mark.parametrize("path", ["", "a..b", "a[x]", "[0]", "a.[1]"])
def test_malformed_path_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        attr(path)


def test_condition_text_reads_like_an_expression() -> None:
    text = condition_text((attr("stock") >= 1) & attr("id").not_exists())
    assert text == "(stock >= 1 AND attribute_not_exists(id))"
    assert condition_text(None) == "<none>"


@given(st.integers(), st.integers(), st.integers())
def test_between_equals_both_comparisons(value: int, low: int, high: int) -> None:
    item = {"n": value}
    expected = ((attr("n") >= low) & (attr("n") <= high)).evaluate(item)
    assert attr("n").between(low, high).evaluate(item) is expected
    assert (~attr("n").between(low, high)).evaluate(item) is (not expected)
