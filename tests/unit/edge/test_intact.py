"""``intact_check`` (one itemgetter call) decides exactly as ``template.items() <= d.items()``."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reflow.edge.tracked import added_if_intact, intact_check
from reflow.edge.triggers import headers_to_cf

_NAMES = st.sampled_from(["Host", "host", "Accept", "ETag", "X-A", "x-b", "Age"])
_VALUES = st.sampled_from(["", "1", "x", '"v"', "max-age=60"])
_PAIRS = st.lists(st.tuples(_NAMES, _VALUES), max_size=6)


@st.composite
def _returned(draw: st.DrawFn, template: dict[str, Any]) -> Any:
    """A fresh copy of ``template`` with a few random edits (or none), or not a dict."""
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from([None, [], "headers", list(template.items())]))
    headers = copy.deepcopy(template)
    for _ in range(draw(st.integers(0, 3))):
        names = list(headers)
        kind = draw(st.sampled_from(["add", "edit", "remove", "append", "move", "key"]))
        if kind == "add":
            name = draw(_NAMES).lower()
            headers[name] = [{"key": name, "value": draw(_VALUES)}]
        elif names and kind == "edit":
            headers[draw(st.sampled_from(names))][0]["value"] = draw(_VALUES)
        elif names and kind == "remove":
            del headers[draw(st.sampled_from(names))]
        elif names and kind == "append":
            headers[draw(st.sampled_from(names))].append({"key": "k", "value": "v"})
        elif names and kind == "move":
            name = draw(st.sampled_from(names))
            headers[name] = headers.pop(name)
        elif names and kind == "key":
            headers[draw(st.sampled_from(names))][0]["key"] = draw(_NAMES)
    return headers


@given(st.data(), _PAIRS)
def test_intact_check_agrees_with_the_items_comparison(data: st.DataObject, pairs: Any) -> None:
    template = headers_to_cf(pairs)
    returned = data.draw(_returned(template))
    check = intact_check(template)
    assert (check is None) == (not template)
    expected = added_if_intact(returned, template)
    got = added_if_intact(returned, template, check)
    assert got == expected
    if got is not None:
        assert list(got) == list(expected or {})  # the same order too


def test_a_missing_name_and_an_edited_value_are_not_intact() -> None:
    template = headers_to_cf([("Host", "x"), ("Accept", "*/*")])
    check = intact_check(template)
    assert added_if_intact({"host": [{"key": "Host", "value": "x"}]}, template, check) is None
    edited = copy.deepcopy(template)
    edited["accept"][0]["value"] = "text/html"
    assert added_if_intact(edited, template, check) is None
    one = headers_to_cf([("Host", "x")])
    one_check = intact_check(one)
    assert added_if_intact(copy.deepcopy(one), one, one_check) == {}
    assert added_if_intact({"host": [{"key": "Host", "value": "y"}]}, one, one_check) is None
