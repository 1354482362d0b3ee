"""JSONPath and reference paths, as the ASL 'Paths' section describes them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.flows import paths
from reflow.flows.errors import PathSyntaxError, StatesError

DATA: dict[str, Any] = {
    "store": {
        "book": [
            {"title": "A", "price": 8, "tags": ["x"]},
            {"title": "B", "price": 12},
            {"title": "C", "price": 5, "isbn": "1"},
        ],
        "owner": {"name": "Ann"},
    },
    "odd key": 1,
}


def test_dollar_alone_selects_the_whole_document() -> None:
    assert paths.evaluate("$", DATA) is DATA


def test_dotted_fields_and_indices_select_one_node() -> None:
    assert paths.evaluate("$.store.book[1].title", DATA) == "B"
    assert paths.evaluate("$.store.book[-1].title", DATA) == "C"
    assert paths.evaluate("$['odd key']", DATA) == 1


def test_definite_path_to_a_missing_field_is_a_runtime_error() -> None:
    with pytest.raises(StatesError) as caught:
        paths.evaluate("$.store.nothing", DATA)
    assert caught.value.name == "States.Runtime"


def test_wildcard_slice_union_and_descent_yield_lists() -> None:
    assert paths.evaluate("$.store.book[*].title", DATA) == ["A", "B", "C"]
    assert paths.evaluate("$.store.book[0:2].price", DATA) == [8, 12]
    assert paths.evaluate("$.store.book[0,2].title", DATA) == ["A", "C"]
    assert paths.evaluate("$..price", DATA) == [8, 12, 5]
    assert paths.evaluate("$.store.owner.*", DATA) == ["Ann"]


def test_indefinite_path_that_matches_nothing_is_an_empty_list() -> None:
    assert paths.evaluate("$.store.book[*].missing", DATA) == []


def test_filters_keep_elements_by_existence_and_comparison() -> None:
    assert paths.evaluate("$.store.book[?(@.isbn)].title", DATA) == ["C"]
    assert paths.evaluate("$.store.book[?(@.price < 10)].title", DATA) == ["A", "C"]
    assert paths.evaluate("$.store.book[?(@.title == 'B')].price", DATA) == [12]


def test_context_and_variable_roots() -> None:
    context = {"Execution": {"Name": "run-1"}}
    assert paths.evaluate("$$.Execution.Name", {}, context) == "run-1"
    assert paths.evaluate("$counter.n", {}, None, {"counter": {"n": 3}}) == 3


def test_undefined_variable_is_a_runtime_error() -> None:
    with pytest.raises(StatesError, match="not defined"):
        paths.evaluate("$nope", {}, None, {})


@pytest.mark.parametrize("text", ["store", "$.", "$[", "$.a[1:2:0]", "$[abc]", "$.a b"])
def test_malformed_paths_are_refused(text: str) -> None:
    with pytest.raises(PathSyntaxError):
        paths.compile_path(text)


def test_result_path_merges_into_a_copy_of_the_input() -> None:
    original = {"a": {"b": 1}, "keep": [1]}
    merged = paths.set_reference(original, "$.a.c", 2)
    assert merged == {"a": {"b": 1, "c": 2}, "keep": [1]}
    assert original == {"a": {"b": 1}, "keep": [1]}


def test_result_path_creates_missing_objects() -> None:
    assert paths.set_reference({}, "$.x.y", 1) == {"x": {"y": 1}}


def test_result_path_dollar_replaces_the_document() -> None:
    assert paths.set_reference({"a": 1}, "$", [1]) == [1]


def test_result_path_into_a_scalar_input_fails_to_match() -> None:
    with pytest.raises(StatesError) as caught:
        paths.set_reference("text", "$.x", 1)
    assert caught.value.name == "States.ResultPathMatchFailure"


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)
names = st.text(alphabet="abcxyz_", min_size=1, max_size=4)


@given(
    st.dictionaries(names, json_values, max_size=4),
    st.lists(names, min_size=1, max_size=4),
    json_values,
)
def test_a_value_set_at_a_reference_path_reads_back_and_the_input_is_untouched(
    data: dict[str, Any], fields: list[str], value: Any
) -> None:
    path = "$." + ".".join(fields)
    before = json.dumps(data, sort_keys=True)
    try:
        written = paths.set_reference(data, path, value)
    except StatesError as error:
        # Only a field asked of an array on the way may refuse the write.
        assert error.name == "States.ResultPathMatchFailure"
    else:
        assert paths.evaluate(path, written) == value
    assert json.dumps(data, sort_keys=True) == before
