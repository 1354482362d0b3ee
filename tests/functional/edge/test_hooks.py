"""The four hooks with Lambda@Edge's event shape: AWS's documented examples, rewritten.

Each handler below does what one of the Lambda@Edge example functions in the
CloudFront developer guide does (A/B testing by cookie, security headers,
redirect by country, serving by device type, query-string normalisation, a
generated page), written here from the description of the event structure,
not copied.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from reflow.edge import CachePolicy, Hook
from reflow.edge.triggers import request_to_cf
from reflow.errors import HookError
from tests.functional.edge.conftest import start_harness, stop_harness

Event = dict[str, Any]


def cf(event: Event) -> dict[str, Any]:
    return event["Records"][0]["cf"]  # type: ignore[no-any-return]


# --- the example functions ------------------------------------------------------------


def ab_test(event: Event, context: Any) -> Any:
    """viewer-request: pick the experiment group from a cookie (random when absent)."""
    request = cf(event)["request"]
    group = None
    for cookie in request["headers"].get("cookie", []):
        for part in cookie["value"].split(";"):
            name, _, value = part.strip().partition("=")
            if name == "X-Experiment-Name":
                group = value
    if group not in ("A", "B"):
        group = "A" if random.random() < 0.5 else "B"
    request["uri"] = "/experiment/control.html" if group == "A" else "/experiment/treatment.html"
    return request


def security_headers(event: Event, context: Any) -> Any:
    """origin-response: add the usual security headers to every response."""
    response = cf(event)["response"]
    headers = response["headers"]
    wanted = {
        "Strict-Transport-Security": "max-age=63072000; includeSubdomains; preload",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }
    for key, value in wanted.items():
        headers[key.lower()] = [{"key": key, "value": value}]
    return response


def redirect_by_country(event: Event, context: Any) -> Any:
    """viewer-request: send German viewers to the German site with a 302."""
    request = cf(event)["request"]
    country = request["headers"].get("cloudfront-viewer-country", [{"value": ""}])[0]["value"]
    if country == "DE":
        return {
            "status": "302",
            "statusDescription": "Found",
            "headers": {"location": [{"key": "Location", "value": "https://example.de/"}]},
        }
    return request


def serve_by_device(event: Event, context: Any) -> Any:
    """origin-request: fetch the mobile variant for mobile viewers."""
    request = cf(event)["request"]
    mobile = request["headers"].get("cloudfront-is-mobile-viewer", [{"value": "false"}])
    if mobile[0]["value"] == "true":
        request["uri"] = "/mobile" + request["uri"]
    return request


def normalise_query(event: Event, context: Any) -> Any:
    """viewer-request: lowercase and sort the query string so equal queries share a key."""
    request = cf(event)["request"]
    pairs = parse_qsl(request["querystring"], keep_blank_values=True)
    request["querystring"] = urlencode(sorted((k.lower(), v.lower()) for k, v in pairs))
    return request


def generated_page(event: Event, context: Any) -> Any:
    """viewer-request: answer with a page built in the function."""
    request = cf(event)["request"]
    html = f"<html><body><p>hello from {request['uri']}</p></body></html>"
    return {
        "status": "200",
        "statusDescription": "OK",
        "headers": {"content-type": [{"key": "Content-Type", "value": "text/html"}]},
        "body": html,
    }


# --- tests ------------------------------------------------------------------------------


async def test_ab_test_by_cookie_routes_to_the_group_page() -> None:
    harness = await start_harness(hooks=[Hook("ab", "viewer-request", "/experiment/*", ab_test)])
    try:
        harness.origin.serve("/experiment/control.html", b"control")
        harness.origin.serve("/experiment/treatment.html", b"treatment")
        client = await harness.connect()
        a = await client.get("/experiment/pixel", "Cookie: X-Experiment-Name=A")
        b = await client.get("/experiment/pixel", "Cookie: other=1; X-Experiment-Name=B")
        again = await client.get("/experiment/pixel", "Cookie: X-Experiment-Name=B")
        anyone = await client.get("/experiment/pixel")
        assert (a.body, b.body, again.body) == (b"control", b"treatment", b"treatment")
        assert again.headers["x-cache"] == "Hit"
        assert anyone.body in (b"control", b"treatment")
    finally:
        await stop_harness(harness)


async def test_security_headers_are_added_once_and_cached_with_the_response() -> None:
    hook = Hook("sec", "origin-response", "/*", security_headers)
    harness = await start_harness(hooks=[hook])
    try:
        harness.origin.serve("/", b"home")
        client = await harness.connect()
        first = await client.get("/")
        second = await client.get("/")
        for reply in (first, second):
            assert reply.headers["x-frame-options"] == "DENY"
            assert reply.headers["strict-transport-security"].startswith("max-age=63072000")
        assert second.headers["x-cache"] == "Hit"
        assert harness.edge.metrics.hook_seconds["origin-response"] > 0
    finally:
        await stop_harness(harness)


async def test_redirect_by_country_header() -> None:
    harness = await start_harness(hooks=[Hook("geo", "viewer-request", "/*", redirect_by_country)])
    try:
        harness.origin.serve("/", b"home")
        client = await harness.connect()
        german = await client.get("/", "CloudFront-Viewer-Country: DE")
        other = await client.get("/", "CloudFront-Viewer-Country: FR")
        assert (german.status, german.headers["location"]) == (302, "https://example.de/")
        assert (other.status, other.body) == (200, b"home")
        assert harness.origin.fetches == 1
    finally:
        await stop_harness(harness)


async def test_serve_by_device_rewrites_the_origin_path() -> None:
    # As on CloudFront, the origin-request hook sees only the headers the cache key forwards.
    harness = await start_harness(
        CachePolicy(headers=("cloudfront-is-mobile-viewer",)),
        hooks=[Hook("dev", "origin-request", "/*", serve_by_device)],
    )
    try:
        harness.origin.serve("/mobile/page", b"small")
        harness.origin.serve("/page", b"large")
        client = await harness.connect()
        reply = await client.get("/page", "CloudFront-Is-Mobile-Viewer: true")
        assert reply.body == b"small"
        assert harness.origin.requests[0].path == "/mobile/page"
        desktop = await client.get("/page", "CloudFront-Is-Mobile-Viewer: false")
        assert desktop.body == b"large"
    finally:
        await stop_harness(harness)


async def test_normalised_query_strings_share_one_cache_entry() -> None:
    harness = await start_harness(
        CachePolicy(query_strings="all"), hooks=[Hook("q", "viewer-request", "/*", normalise_query)]
    )
    try:
        harness.origin.serve("/s", b"results")
        client = await harness.connect()
        await client.get("/s?B=2&a=1")
        hit = await client.get("/s?a=1&b=2")
        assert hit.headers["x-cache"] == "Hit"
        assert harness.origin.requests[0].query == "a=1&b=2"
    finally:
        await stop_harness(harness)


async def test_generated_page_never_reaches_the_origin() -> None:
    harness = await start_harness(hooks=[Hook("gen", "viewer-request", "/gen/*", generated_page)])
    try:
        client = await harness.connect()
        reply = await client.get("/gen/x")
        assert reply.status == 200 and b"hello from /gen/x" in reply.body
        assert harness.origin.fetches == 0
    finally:
        await stop_harness(harness)


async def test_changing_a_read_only_field_is_a_clear_error_and_a_502() -> None:
    def spoof(event: Event, context: Any) -> Any:
        request = cf(event)["request"]
        request["clientIp"] = "1.2.3.4"
        return request

    hook = Hook("spoof", "viewer-request", "/*", spoof)
    with pytest.raises(HookError) as caught:
        await hook.run(request_to_cf("GET", "/", "", [], "10.0.0.1"))
    assert caught.value.field == "request.clientIp" and "read-only" in str(caught.value)
    harness = await start_harness(hooks=[hook])
    try:
        client = await harness.connect()
        reply = await client.get("/")
        assert reply.status == 502 and b"request.clientIp" in reply.body
    finally:
        await stop_harness(harness)


async def test_viewer_response_may_not_set_a_body() -> None:
    def body(event: Event, context: Any) -> Any:
        response = cf(event)["response"]
        response["body"] = "replaced"
        return response

    hook = Hook("b", "viewer-response", "/*", body)
    with pytest.raises(HookError) as caught:
        await hook.run(
            request_to_cf("GET", "/", "", [], "10.0.0.1"),
            {"status": "200", "statusDescription": "OK", "headers": {}},
        )
    assert caught.value.field == "response.body"


async def test_a_runaway_hook_is_stopped_at_its_time_limit_with_a_5xx() -> None:
    def spin(event: Event, context: Any) -> Any:
        while True:
            pass

    harness = await start_harness(hooks=[Hook("spin", "viewer-request", "/*", spin, timeout=0.2)])
    try:
        client = await harness.connect()
        reply = await client.get("/")
        assert reply.status == 502 and b"limit" in reply.body
        harness.origin.serve("/", b"fine")
    finally:
        await stop_harness(harness)


async def test_async_hook_time_limit() -> None:
    import asyncio

    async def slow(event: Event, context: Any) -> Any:
        await asyncio.sleep(5)

    hook = Hook("slow", "viewer-request", "/*", slow, timeout=0.1)
    with pytest.raises(HookError, match="limit"):
        await hook.run(request_to_cf("GET", "/", "", [], "10.0.0.1"))


async def test_generated_body_over_the_viewer_limit_is_refused() -> None:
    def huge(event: Event, context: Any) -> Any:
        return {"status": "200", "body": "x" * (41 * 1024)}

    hook = Hook("huge", "viewer-request", "/*", huge)
    with pytest.raises(HookError) as caught:
        await hook.run(request_to_cf("GET", "/", "", [], "10.0.0.1"))
    assert caught.value.field == "response.body"


async def test_event_shape_matches_lambda_at_edge() -> None:
    seen: list[Event] = []

    def record(event: Event, context: Any) -> Any:
        seen.append(event)
        return cf(event)["response"]

    hook = Hook("rec", "viewer-response", "/*", record)
    await hook.run(
        request_to_cf("GET", "/a", "x=1", [("Host", "edge"), ("Accept", "*/*")], "10.0.0.1"),
        {"status": "200", "statusDescription": "OK", "headers": {}},
    )
    record_cf = cf(seen[0])
    assert record_cf["config"]["eventType"] == "viewer-response"
    assert record_cf["request"]["headers"]["host"] == [{"key": "Host", "value": "edge"}]
    assert record_cf["request"]["clientIp"] == "10.0.0.1"
    assert record_cf["response"]["status"] == "200"


async def test_a_generated_response_cannot_smuggle_its_own_framing() -> None:
    def framed(event: Event, context: Any) -> Any:
        return {
            "status": "200",
            "headers": {
                "content-length": [{"key": "Content-Length", "value": "0"}],
                "transfer-encoding": [{"key": "Transfer-Encoding", "value": "chunked"}],
                "connection": [{"key": "Connection", "value": "keep-alive, x"}],
            },
            "body": "payload",
        }

    harness = await start_harness(hooks=[Hook("f", "viewer-request", "/*", framed)])
    try:
        client = await harness.connect()
        await client.send(b"GET / HTTP/1.1\r\nHost: e\r\n\r\n")
        raw = await client.reader.readuntil(b"payload")
        head = raw.split(b"\r\n\r\n")[0].lower()
        assert head.count(b"content-length") == 1 and b"content-length: 7" in head
        assert b"transfer-encoding" not in head and b"keep-alive, x" not in head
    finally:
        await stop_harness(harness)


async def test_a_header_name_that_is_not_a_token_is_refused() -> None:
    def split(event: Event, context: Any) -> Any:
        response = cf(event)["response"]
        response["headers"]["x: y\r\nset-cookie"] = [{"key": "x: y\r\nset-cookie", "value": "a"}]
        return response

    hook = Hook("s", "viewer-response", "/*", split)
    with pytest.raises(HookError, match="token"):
        await hook.run(
            request_to_cf("GET", "/", "", [], "10.0.0.1"),
            {"status": "200", "statusDescription": "OK", "headers": {}},
        )


async def test_a_query_string_that_would_split_the_origin_request_is_refused() -> None:
    def inject(event: Event, context: Any) -> Any:
        request = cf(event)["request"]
        request["querystring"] = "a=1 HTTP/1.1\r\nHost: evil\r\n\r\nGET /x"
        return request

    hook = Hook("q", "origin-request", "/*", inject)
    with pytest.raises(HookError) as caught:
        await hook.run(request_to_cf("GET", "/", "", [], "10.0.0.1"))
    assert caught.value.field == "request.querystring"
