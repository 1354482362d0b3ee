"""The hooked hit path's shortcut: added headers only, when everything given came back equal.

Each case checks that the shortcut (``reflow.edge.tracked`` and the ``*_given``
runs of :class:`Hook`) decides exactly as the full checks do: the same bytes for
an added header, the full path for an edited or removed one, the same errors
for read-only fields and malformed additions.
"""

from __future__ import annotations

from typing import Any

import pytest

from reflow.edge import Behaviour, Edge, Hook
from reflow.edge.http import Request, build_head
from reflow.edge.origins import OriginRequest, OriginResponse
from reflow.edge.tracked import TemplateCache, added_if_intact
from reflow.edge.triggers import headers_to_cf
from reflow.errors import HookError
from reflow.testing import FakeClock

Event = dict[str, Any]
STORED = [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60"), ("ETag", '"v1"')]


class _Origin:
    name = "fixed"

    def __init__(self) -> None:
        self.fetches = 0

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        self.fetches += 1
        return OriginResponse(200, list(STORED), b"hello")

    async def close(self) -> None:
        return None


def _response(event: Event) -> dict[str, Any]:
    return event["Records"][0]["cf"]["response"]  # type: ignore[no-any-return]


def _request(event: Event) -> dict[str, Any]:
    return event["Records"][0]["cf"]["request"]  # type: ignore[no-any-return]


def _get(path: str = "/a", headers: list[tuple[str, str]] | None = None) -> Request:
    return Request(
        "GET", path, "", headers or [("host", "x"), ("accept", "*/*")], client_ip="1.2.3.4"
    )


async def _hit(*hooks: Hook) -> bytes:
    """The bytes of a cache hit through the synchronous hit path, with ``hooks``."""
    edge = Edge([Behaviour("*", _Origin())], list(hooks), clock=FakeClock(1_000.0))
    try:
        await edge.handle(_get())
        data = edge.fast(_get(), False)
        assert data is not None
        return data
    finally:
        await edge.close()


def test_an_unchanged_copy_adds_nothing_and_additions_are_returned_in_order() -> None:
    template = headers_to_cf(STORED)
    returned = headers_to_cf(STORED)
    assert added_if_intact(returned, template) == {}
    returned["x-b"] = [{"key": "X-B", "value": "2"}]
    returned["x-a"] = [{"key": "X-A", "value": "1"}]
    assert list(added_if_intact(returned, template) or {}) == ["x-b", "x-a"]


def test_one_added_header_is_found_wherever_it_sits_in_the_dict() -> None:
    template = headers_to_cf(STORED)
    appended = headers_to_cf(STORED)
    appended["x-new"] = [{"key": "X-New", "value": "1"}]
    assert added_if_intact(appended, template) == {"x-new": [{"key": "X-New", "value": "1"}]}
    # Added, then a given header moved to the end (popped and set again, unchanged):
    # the last key is a given one, and the added one is still found.
    moved = headers_to_cf(STORED)
    moved["x-new"] = [{"key": "X-New", "value": "1"}]
    moved["content-type"] = moved.pop("content-type")
    assert list(moved)[-1] == "content-type"
    assert added_if_intact(moved, template) == {"x-new": [{"key": "X-New", "value": "1"}]}


def test_an_edited_or_removed_given_header_is_not_intact() -> None:
    template = headers_to_cf(STORED)
    edited = headers_to_cf(STORED)
    edited["etag"][0]["value"] = '"v2"'
    assert added_if_intact(edited, template) is None
    removed = headers_to_cf(STORED)
    del removed["etag"]
    assert added_if_intact(removed, template) is None
    extra_item = headers_to_cf(STORED)
    extra_item["etag"].append({"key": "ETag", "value": '"v3"'})
    assert added_if_intact(extra_item, template) is None
    assert added_if_intact([("etag", "x")], template) is None


def test_template_cache_converts_each_header_list_once_and_stays_bounded() -> None:
    calls = []

    def convert(headers: list[tuple[str, str]]) -> dict[str, Any]:
        calls.append(headers)
        return headers_to_cf(headers)

    cache = TemplateCache(size=2)
    first = cache.get([("host", "a")], convert)
    assert cache.get([("host", "a")], convert) is first
    cache.get([("host", "b")], convert)
    cache.get([("host", "c")], convert)
    cache.get([("host", "a")], convert)
    assert len(calls) == 4  # "a" was evicted by the bound and converted again


async def test_an_added_response_header_gives_the_same_bytes_as_a_full_render() -> None:
    def add_hsts(event: Event, context: Any) -> Any:
        response = _response(event)
        response["headers"]["strict-transport-security"] = [
            {"key": "Strict-Transport-Security", "value": "max-age=63072000"}
        ]
        return response

    data = await _hit(Hook("hsts", "viewer-response", "/*", add_hsts))
    expected = build_head(
        200,
        "OK",
        [
            *STORED,
            ("Age", "0"),
            ("X-Cache", "Hit"),
            ("Strict-Transport-Security", "max-age=63072000"),
        ],
        5,
        keep_alive=True,
    )
    assert data == expected + b"hello"


async def test_a_stored_header_edited_in_place_is_served_edited() -> None:
    def retag(event: Event, context: Any) -> Any:
        response = _response(event)
        response["headers"]["etag"][0]["value"] = '"edited"'
        del response["headers"]["cache-control"]
        return response

    data = await _hit(Hook("retag", "viewer-response", "/*", retag))
    assert b'ETag: "edited"\r\n' in data
    assert b'"v1"' not in data
    assert b"Cache-Control" not in data


async def test_a_changed_status_takes_the_full_path() -> None:
    def gone(event: Event, context: Any) -> Any:
        response = _response(event)
        response["status"] = "410"
        response["statusDescription"] = "Gone"
        return response

    data = await _hit(Hook("gone", "viewer-response", "/*", gone))
    assert data.startswith(b"HTTP/1.1 410 Gone\r\n")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("content-length", "1", "read-only"),
        ("via", "1.1 x", "read-only"),
        ("x-split", "a\r\nSet-Cookie: evil=1", "CR, LF or NUL"),
        ("x bad", "v", "HTTP token"),
    ],
)
async def test_a_bad_added_response_header_is_a_502_as_on_the_full_path(
    name: str, value: str, message: str
) -> None:
    def add(event: Event, context: Any) -> Any:
        response = _response(event)
        response["headers"][name] = [{"key": name, "value": value}]
        return response

    data = await _hit(Hook("bad", "viewer-response", "/*", add))
    assert data.startswith(b"HTTP/1.1 502 ")
    assert message.encode() in data


async def test_an_added_request_header_is_seen_by_the_response_hook_and_the_cache() -> None:
    seen: list[list[str]] = []

    def tag(event: Event, context: Any) -> Any:
        request = _request(event)
        request["headers"]["x-tag"] = [{"key": "X-Tag", "value": "t"}]
        return request

    def look(event: Event, context: Any) -> Any:
        seen.append(sorted(_request(event)["headers"]))
        return _response(event)

    await _hit(
        Hook("tag", "viewer-request", "/*", tag), Hook("look", "viewer-response", "/*", look)
    )
    assert seen[-1] == ["accept", "host", "x-tag"]


def test_request_given_refuses_a_changed_client_ip_and_an_added_read_only_header() -> None:
    def spoof(event: Event, context: Any) -> Any:
        request = _request(event)
        request["clientIp"] = "9.9.9.9"
        return request

    def framing(event: Event, context: Any) -> Any:
        request = _request(event)
        request["headers"]["transfer-encoding"] = [{"key": "Transfer-Encoding", "value": "x"}]
        return request

    template = headers_to_cf([("host", "x")])
    for handler, message in ((spoof, "clientIp"), (framing, "read-only")):
        hook = Hook("h", "viewer-request", "/*", handler)
        request = {
            "clientIp": "1.2.3.4",
            "method": "GET",
            "uri": "/a",
            "querystring": "",
            "headers": headers_to_cf([("host", "x")]),
        }
        with pytest.raises(HookError, match=message):
            hook.run_request_given(request, template)


def test_request_given_with_an_edited_header_returns_the_full_header_list() -> None:
    def lower_host(event: Event, context: Any) -> Any:
        request = _request(event)
        request["headers"]["host"][0]["value"] = "y"
        return request

    hook = Hook("h", "viewer-request", "/*", lower_host)
    request = {
        "clientIp": "1.2.3.4",
        "method": "GET",
        "uri": "/a",
        "querystring": "",
        "headers": headers_to_cf([("host", "x"), ("accept", "*/*")]),
    }
    result = hook.run_request_given(request, headers_to_cf([("host", "x"), ("accept", "*/*")]))
    assert result.added is None
    assert result.headers == [("host", "y"), ("accept", "*/*")]


async def test_each_call_starts_from_the_stored_headers_whatever_the_last_call_did() -> None:
    seen: list[dict[str, Any]] = []
    calls = iter(["plain", "add", "edit", "plain", "stash-later", "plain"])  # first: the miss
    stash: list[dict[str, Any]] = []

    def fickle(event: Event, context: Any) -> Any:
        response = _response(event)
        headers = response["headers"]
        seen.append({name: [dict(item) for item in items] for name, items in headers.items()})
        if stash:
            # Changing an earlier event's headers during this call is caught after it.
            stash.pop()["etag"][0]["value"] = '"from-earlier"'
        how = next(calls)
        if how == "add":
            headers["x-once"] = [{"key": "X-Once", "value": "1"}]
        elif how == "edit":
            headers["etag"][0]["value"] = '"edited"'
        elif how == "stash-later":
            stash.append(headers)
        return response

    edge = Edge(
        [Behaviour("*", _Origin())],
        [Hook("fickle", "viewer-response", "/*", fickle)],
        clock=FakeClock(1_000.0),
    )
    try:
        await edge.handle(_get())
        outputs = [edge.fast(_get(), False) or b"" for _ in range(5)]
    finally:
        await edge.close()
    stored = headers_to_cf([*STORED, ("Age", "0"), ("X-Cache", "Hit")])
    assert seen[1:] == [stored] * 5  # no call sees another call's change
    assert b"X-Once: 1" in outputs[0]
    assert all(b"X-Once" not in data for data in outputs[1:])
    assert b'ETag: "edited"' in outputs[1]
    assert b'ETag: "v1"' in outputs[2] and b'ETag: "v1"' in outputs[3]
    assert b'ETag: "from-earlier"' in outputs[4]


async def test_a_viewer_request_call_never_sees_what_an_earlier_call_added_or_edited() -> None:
    seen: list[dict[str, Any]] = []

    def tagger(event: Event, context: Any) -> Any:
        request = _request(event)
        headers = request["headers"]
        seen.append({name: [dict(item) for item in items] for name, items in headers.items()})
        headers["x-tag"] = [{"key": "X-Tag", "value": str(len(seen))}]
        if len(seen) == 3:
            headers["accept"][0]["value"] = "text/html"
        return request

    edge = Edge(
        [Behaviour("*", _Origin())],
        [Hook("tagger", "viewer-request", "/*", tagger)],
        clock=FakeClock(1_000.0),
    )
    try:
        await edge.handle(_get())
        for _ in range(4):
            assert edge.fast(_get(), False) is not None
    finally:
        await edge.close()
    given = headers_to_cf([("host", "x"), ("accept", "*/*")])
    assert seen == [given] * 5


async def test_the_same_added_header_reuses_one_answer_and_a_new_value_renders_anew() -> None:
    values = iter(["1", "1", "2", "1"])

    def counter(event: Event, context: Any) -> Any:
        response = _response(event)
        response["headers"]["x-n"] = [{"key": "X-N", "value": next(values)}]
        return response

    edge = Edge(
        [Behaviour("*", _Origin())],
        [Hook("counter", "viewer-response", "/*", counter)],
        clock=FakeClock(1_000.0),
    )
    try:
        await edge.handle(_get())  # the miss uses the first value
        first, second, third = (edge.fast(_get(), False) for _ in range(3))
    finally:
        await edge.close()
    assert first is not None and second is not None and third is not None
    assert b"X-N: 1\r\n" in first and first.endswith(b"hello")
    assert b"X-N: 2\r\n" in second and b"X-N: 1" not in second
    assert third == first  # the same header again: the same bytes


async def test_a_reused_answer_still_follows_keep_alive_and_head() -> None:
    def hsts(event: Event, context: Any) -> Any:
        response = _response(event)
        response["headers"]["strict-transport-security"] = [
            {"key": "Strict-Transport-Security", "value": "max-age=60"}
        ]
        return response

    edge = Edge(
        [Behaviour("*", _Origin())],
        [Hook("hsts", "viewer-response", "/*", hsts)],
        clock=FakeClock(1_000.0),
    )
    try:
        await edge.handle(_get())
        kept = edge.fast(_get(), False)
        closing = _get()
        closing.keep_alive = False
        closed = edge.fast(closing, False)
        head = _get()
        head.method = "HEAD"
        headed = edge.fast(head, False)
        again = edge.fast(_get(), False)
    finally:
        await edge.close()
    assert kept is not None and closed is not None and headed is not None
    assert b"Connection: close" not in kept and kept.endswith(b"\r\n\r\nhello")
    assert b"Connection: close\r\n" in closed and closed.endswith(b"hello")
    assert headed.endswith(b"\r\n\r\n") and b"Content-Length: 5\r\n" in headed
    assert again == kept


async def test_a_conditional_header_added_by_the_request_hook_is_answered_304() -> None:
    def revalidate(event: Event, context: Any) -> Any:
        request = _request(event)
        request["headers"]["if-none-match"] = [{"key": "If-None-Match", "value": '"v1"'}]
        return request

    hook = Hook("inm", "viewer-request", "/*", revalidate)
    edge = Edge([Behaviour("*", _Origin())], [hook], clock=FakeClock(1_000.0))
    try:
        await edge.handle(_get())
        hooked = _get()
        # Not answered on the hit path: the added header makes the request conditional.
        assert edge.fast(hooked, False) is None
        assert hooked.viewer_done  # the hook ran once; handle() must not run it again
        data = await edge.handle(hooked)
        assert data.startswith(b"HTTP/1.1 304 ")
    finally:
        await edge.close()


def test_an_added_header_is_checked_once_per_distinct_value_and_bad_ones_always_fail() -> None:
    from reflow.edge.triggers import added_from_cf

    one = {"x-a": [{"key": "X-A", "value": "1"}]}
    assert added_from_cf("viewer-response", "response.headers", one) == [("X-A", "1")]
    assert added_from_cf("viewer-response", "response.headers", one, lowercase=True) == [
        ("x-a", "1")
    ]
    other = {"x-a": [{"key": "X-A", "value": "2"}]}
    assert added_from_cf("viewer-response", "response.headers", other) == [("X-A", "2")]
    bad = {"x-a": [{"key": "X-A", "value": "1\r\nSet-Cookie: a=b"}]}
    for _ in range(2):
        with pytest.raises(HookError, match="CR, LF or NUL"):
            added_from_cf("viewer-response", "response.headers", bad)
    mismatched = {"x-a": [{"key": "X-B", "value": "1"}]}
    for _ in range(2):
        with pytest.raises(HookError, match="does not match"):
            added_from_cf("viewer-response", "response.headers", mismatched)
