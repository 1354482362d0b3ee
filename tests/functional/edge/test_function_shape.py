"""CloudFront Functions' shape (``shape="function"``): examples from its docs, rewritten."""

from __future__ import annotations

from typing import Any

import pytest

from reflow.edge import Hook
from reflow.edge.triggers import request_to_cf
from reflow.errors import HookError
from tests.functional.edge.conftest import start_harness, stop_harness


def append_index(event: dict[str, Any], context: Any) -> Any:
    """viewer-request: serve /dir/ and /dir as /dir/index.html."""
    request = event["request"]
    uri = request["uri"]
    if uri.endswith("/"):
        request["uri"] = uri + "index.html"
    elif "." not in uri.rsplit("/", 1)[-1]:
        request["uri"] = uri + "/index.html"
    return request


def redirect_by_country(event: dict[str, Any], context: Any) -> Any:
    """viewer-request: a 302 with statusCode as an integer."""
    country = event["request"]["headers"].get("cloudfront-viewer-country", {}).get("value")
    if country == "DE":
        return {
            "statusCode": 302,
            "statusDescription": "Found",
            "headers": {"location": {"value": "https://example.de/"}},
        }
    return event["request"]


def response_headers(event: dict[str, Any], context: Any) -> Any:
    """viewer-response: add a header and a cookie; read the viewer's IP and a query value."""
    response = event["response"]
    response["headers"]["x-viewer-ip"] = {"value": event["viewer"]["ip"]}
    response["cookies"]["seen"] = {"value": "1", "attributes": "Path=/"}
    return response


async def test_index_rewrite_and_country_redirect_in_the_function_shape() -> None:
    hooks = [
        Hook("geo", "viewer-request", "/de/*", redirect_by_country, shape="function"),
        Hook("index", "viewer-request", "/*", append_index, shape="function"),
        Hook("headers", "viewer-response", "/*", response_headers, shape="function"),
    ]
    harness = await start_harness(hooks=hooks)
    try:
        harness.origin.serve("/docs/index.html", b"docs home")
        client = await harness.connect()
        for target in ("/docs/", "/docs"):
            reply = await client.get(target)
            assert (reply.status, reply.body) == (200, b"docs home"), target
            assert reply.headers["x-viewer-ip"] == "127.0.0.1"
            assert reply.headers["set-cookie"] == "seen=1; Path=/"
        redirect = await client.get("/de/page", "CloudFront-Viewer-Country: DE")
        assert (redirect.status, redirect.headers["location"]) == (302, "https://example.de/")
        assert harness.origin.fetches == 1
    finally:
        await stop_harness(harness)


async def test_function_shape_carries_query_and_cookies_as_objects() -> None:
    seen: list[dict[str, Any]] = []

    def record(event: dict[str, Any], context: Any) -> Any:
        seen.append(event)
        request = event["request"]
        request["querystring"]["added"] = {"value": "yes"}
        return request

    hook = Hook("rec", "viewer-request", "/*", record, shape="function")
    result = await hook.run(
        request_to_cf("GET", "/s", "a=1&a=2&b=x", [("Cookie", "id=7; ab=B")], "10.0.0.1")
    )
    request = seen[0]["request"]
    assert request["querystring"]["a"]["multiValue"] == [{"value": "1"}, {"value": "2"}]
    assert request["cookies"] == {"id": {"value": "7"}, "ab": {"value": "B"}}
    assert seen[0]["viewer"] == {"ip": "10.0.0.1"}
    assert result.request is not None
    assert result.request["querystring"] == "a=1&a=2&b=x&added=yes"


async def test_function_shape_enforces_read_only_method() -> None:
    def change_method(event: dict[str, Any], context: Any) -> Any:
        event["request"]["method"] = "POST"
        return event["request"]

    hook = Hook("m", "viewer-request", "/*", change_method, shape="function")
    with pytest.raises(HookError) as caught:
        await hook.run(request_to_cf("GET", "/", "", [], "10.0.0.1"))
    assert caught.value.field == "request.method"


def test_function_shape_is_for_viewer_hooks_only() -> None:
    with pytest.raises(HookError, match="viewer hooks only"):
        Hook("o", "origin-request", "/*", append_index, shape="function")
