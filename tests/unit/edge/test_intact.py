"""The hooked hit's header shortcuts decide exactly as the slower steps they replace.

``intact_check`` (one itemgetter call) as ``template.items() <= d.items()``, and
``added_checked`` as ``added_if_intact`` then ``added_from_cf``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.edge import Behaviour, Edge, Hook
from reflow.edge.http import Request
from reflow.edge.origins import OriginRequest, OriginResponse
from reflow.edge.tracked import TemplateCache, added_if_intact, intact_check
from reflow.edge.triggers import added_checked, added_from_cf, headers_to_cf
from reflow.errors import HookError
from reflow.testing import FakeClock

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


def _separately(headers: Any, template: dict[str, Any], read_only: frozenset[str]) -> Any:
    """What ``added_checked`` must answer: the two steps it merges, one after the other."""
    added = added_if_intact(headers, template)
    if added is None or not read_only.isdisjoint(added):
        return None
    return added_from_cf("viewer-response", "response.headers", added), tuple(added)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except HookError as exc:
        return ("error", str(exc))


_BAD_ADDED = st.sampled_from(
    [
        [{"key": "X-New", "value": "1"}],
        [{"key": "NAME", "value": "1"}],
        [{"key": "NAME", "value": "bad\r\nvalue"}],
        [{"key": "Other", "value": "1"}],
        [{"value": "1"}],
        [{"key": "X-New", "value": 1}],
        [{"key": "X-New", "value": "1", "extra": "e"}],
        [{"key": "X-New", "value": "1"}, {"key": "x-new", "value": "2"}],
        ["not a dict"],
        "not a list",
    ]
)


@given(st.data(), _PAIRS, st.sampled_from(["x-new", "X-New", "bad name", "content-length"]))
def test_added_checked_decides_as_the_two_steps_it_merges(
    data: st.DataObject, pairs: Any, added_name: str
) -> None:
    template = headers_to_cf(pairs)
    returned = data.draw(_returned(template))
    if type(returned) is dict and data.draw(st.booleans()):
        entries = data.draw(_BAD_ADDED)
        if type(entries) is list and entries and entries[0] == {"key": "NAME", "value": "1"}:
            entries = [{"key": added_name, "value": "1"}]  # a valid entry for this name
        returned[added_name] = entries
    read_only = frozenset({"content-length"})
    expected = _outcome(lambda: _separately(returned, template, read_only))
    for check in (intact_check(template), None):
        got = _outcome(
            lambda check=check: added_checked(
                "viewer-response", "response.headers", returned, template, check, read_only
            )
        )
        assert got == expected


def test_template_cache_last_is_the_copies_get_returned_last() -> None:
    cache = TemplateCache(size=1)
    assert getattr(cache, "last") is None  # noqa: B009 (mypy would keep it narrowed to None)
    a = cache.get([("host", "a")], headers_to_cf)
    assert getattr(cache, "last") is a and a.pairs == [("host", "a")]  # noqa: B009
    b = cache.get([("host", "b")], headers_to_cf)
    assert getattr(cache, "last") is b  # noqa: B009
    assert b.template == headers_to_cf([("host", "b")])
    assert cache.get([("host", "b")], headers_to_cf) is b  # evicted "a", kept "b"
    assert cache.get([("host", "a")], headers_to_cf) is not a


async def test_alternating_request_headers_each_get_their_own_template() -> None:
    seen: list[Any] = []

    def keep(event: dict[str, Any], context: object) -> Any:
        request = event["Records"][0]["cf"]["request"]
        seen.append(copy.deepcopy(request["headers"]))
        return request

    class _Origin:
        name = "o"

        async def fetch(self, request: OriginRequest) -> OriginResponse:
            return OriginResponse(200, [("Cache-Control", "max-age=60")], b"x")

        async def close(self) -> None:
            return None

    edge = Edge(
        [Behaviour("*", _Origin())],
        [Hook("q", "viewer-request", "/*", keep)],
        clock=FakeClock(1_000.0),
    )
    try:
        await edge.handle(Request("GET", "/a", "", [("host", "a")]))
        for value in ["a", "b", "a", "b", "b", "a"]:
            seen.clear()
            assert edge.fast(Request("GET", "/a", "", [("host", value)]), False) is not None
            assert seen == [headers_to_cf([("host", value)])]
    finally:
        await edge.close()


def test_a_given_run_refills_the_hooks_own_result_and_a_full_check_makes_a_new_one() -> None:
    def add(event: dict[str, Any], context: object) -> Any:
        request = event["Records"][0]["cf"]["request"]
        value = request["uri"][1:]
        if value == "edit":
            request["headers"]["host"][0]["value"] = "edited"
        else:
            request["headers"]["x-n"] = [{"key": "X-N", "value": value}]
        return request

    hook = Hook("q", "viewer-request", "/*", add)
    template = headers_to_cf([("host", "h")])
    check = intact_check(template)

    def run(uri: str) -> Any:
        request = {
            "clientIp": "1.2.3.4",
            "method": "GET",
            "uri": uri,
            "querystring": "",
            "headers": copy.deepcopy(template),
        }
        return hook.run_request_given(request, template, check)

    first = run("/1")
    assert first.added == [("x-n", "1")] and first.request["uri"] == "/1"
    second = run("/2")
    assert second is first  # refilled, as documented
    assert second.added == [("x-n", "2")] and second.request["uri"] == "/2"
    edited = run("/edit")  # the full checks: a result of its own
    assert edited is not first and edited.added is None
    assert edited.headers == [("host", "edited")]
    assert first.added == [("x-n", "2")]  # untouched by the full path


def test_given_runs_turn_handler_failures_and_overruns_into_hook_errors() -> None:
    import time

    def fails(event: dict[str, Any], context: object) -> Any:
        raise ValueError("boom")

    def refuses(event: dict[str, Any], context: object) -> Any:
        raise HookError("viewer-request", "mine", "as raised")

    def spins(event: dict[str, Any], context: object) -> Any:
        until = time.monotonic() + 5.0
        while time.monotonic() < until:  # pure Python: the watchdog interrupts it
            pass
        return event["Records"][0]["cf"].get("response") or event["Records"][0]["cf"]["request"]

    template = headers_to_cf([("host", "h")])
    request = {
        "clientIp": "1.2.3.4",
        "method": "GET",
        "uri": "/a",
        "querystring": "",
        "headers": copy.deepcopy(template),
    }
    response = {"status": "200", "statusDescription": "OK", "headers": copy.deepcopy(template)}
    for handler, message in ((fails, "raised ValueError: boom"), (refuses, "as raised")):
        with pytest.raises(HookError, match=message):
            Hook("q", "viewer-request", "/*", handler).run_request_given(request, template)
        with pytest.raises(HookError, match=message):
            Hook("r", "viewer-response", "/*", handler).run_response_given(
                request, response, template
            )
    started = time.monotonic()
    with pytest.raises(HookError, match="ran past its 0.05 s limit"):
        Hook("q", "viewer-request", "/*", spins, timeout=0.05).run_request_given(request, template)
    with pytest.raises(HookError, match="ran past its 0.05 s limit"):
        Hook("r", "viewer-response", "/*", spins, timeout=0.05).run_response_given(
            request, response, template
        )
    assert time.monotonic() - started < 4.0
