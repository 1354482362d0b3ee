"""Fetches that overlap: collapsed misses across Vary variants, and purges during a fetch.

A shared cache may hand one origin answer to several waiting requests only
when that answer suits each of them (RFC 9111 §4.1: the headers its ``Vary``
names must match), and an answer that was asked for before a purge must not
come back as fresh after it. The origin here decides its answer when the
request arrives, as a real one does, and takes a while to send it, so each
test can purge or change the content while a fetch is in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from reflow.edge.cache import format_http_date
from reflow.edge.http import Request
from reflow.edge.origins import OriginRequest, OriginResponse
from tests.functional.edge.conftest import Harness, settle

DELAY = 0.05


def answering_at_arrival(
    harness: Harness, answer: Callable[[OriginRequest], OriginResponse]
) -> None:
    """Make the origin decide its answer when a request arrives, and send it ``DELAY`` later."""
    origin = harness.origin

    async def fetch(request: OriginRequest) -> OriginResponse:
        origin.requests.append(request)
        decided = answer(request)
        await asyncio.sleep(DELAY)
        return decided

    origin.fetch = fetch  # type: ignore[method-assign]


def get(path: str, *headers: tuple[str, str]) -> Request:
    return Request("GET", path, "", [("host", "e"), *headers])


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


def head_of(answer: bytes) -> str:
    return answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")


async def test_a_miss_after_a_purge_does_not_share_a_fetch_asked_for_before_it(
    harness: Harness,
) -> None:
    content = {"body": b"version 1"}

    def current(request: OriginRequest) -> OriginResponse:
        headers = [("Cache-Control", "max-age=60"), ("Surrogate-Key", "m")]
        return OriginResponse(200, headers, bytes(content["body"]))

    answering_at_arrival(harness, current)
    before = asyncio.create_task(harness.edge.handle(get("/m")))
    await asyncio.sleep(DELAY / 5)
    content["body"] = b"version 2"
    harness.edge.store.purge_keys(["m"])  # nothing stored yet; the purge still counts
    after = await harness.edge.handle(get("/m"))
    assert body_of(after) == b"version 2"
    await before
    assert body_of(await harness.edge.handle(get("/m"))) == b"version 2"


async def test_purges_of_other_objects_do_not_send_a_fetch_back_to_the_origin(
    harness: Harness,
) -> None:
    def tagged(request: OriginRequest) -> OriginResponse:
        headers = [("Cache-Control", "max-age=60"), ("Surrogate-Key", f"tag{request.path}")]
        return OriginResponse(200, headers, request.path.encode())

    answering_at_arrival(harness, tagged)
    fetching = asyncio.create_task(harness.edge.handle(get("/x")))
    await asyncio.sleep(DELAY / 5)
    for other in ("/y", "/z"):
        harness.edge.store.purge_keys([f"tag{other}"])
        harness.edge.store.purge_path(other)
        harness.edge.store.purge_prefix(other + "/")
    assert body_of(await fetching) == b"/x"
    assert harness.origin.fetches == 1
    assert "X-Cache: Hit" in head_of(await harness.edge.handle(get("/x")))


async def test_a_miss_after_a_purge_never_gets_an_older_revalidations_304(
    harness: Harness,
) -> None:
    content: dict[str, Any] = {"etag": '"v1"', "body": b"version 1"}

    def conditional(request: OriginRequest) -> OriginResponse:
        headers = [
            ("Cache-Control", "max-age=1"),
            ("ETag", content["etag"]),
            ("Surrogate-Key", "r"),
            ("Date", format_http_date(harness.clock.time())),
        ]
        if dict(request.headers).get("If-None-Match") == content["etag"]:
            return OriginResponse(304, headers)
        return OriginResponse(200, headers, bytes(content["body"]))

    answering_at_arrival(harness, conditional)
    await harness.edge.handle(get("/r"))
    harness.clock.advance(5)  # stale: the next request revalidates
    revalidating = asyncio.create_task(harness.edge.handle(get("/r")))
    await asyncio.sleep(DELAY / 5)
    content.update(etag='"v2"', body=b"version 2")
    assert harness.edge.store.purge_keys(["r"]) == 1
    after_purge = await harness.edge.handle(get("/r"))
    assert head_of(after_purge).startswith("HTTP/1.1 200")
    assert body_of(after_purge) == b"version 2"
    await revalidating  # asked before the purge: whatever it answers, it stores nothing old
    latest = await harness.edge.handle(get("/r"))
    assert body_of(latest) == b"version 2"


async def test_a_full_answer_asked_for_before_a_hard_purge_is_not_stored(
    harness: Harness,
) -> None:
    content = {"body": b"version 1"}

    def unconditional(request: OriginRequest) -> OriginResponse:
        headers = [("Cache-Control", "max-age=1"), ("Surrogate-Key", "h")]
        return OriginResponse(200, headers, bytes(content["body"]))

    answering_at_arrival(harness, unconditional)
    await harness.edge.handle(get("/h"))
    harness.clock.advance(5)  # stale, no validator: the revalidation is a full fetch
    revalidating = asyncio.create_task(harness.edge.handle(get("/h")))
    await asyncio.sleep(DELAY / 5)
    content["body"] = b"version 2"
    assert harness.edge.store.purge_keys(["h"]) == 1
    await revalidating  # its answer left the origin before the purge
    latest = await harness.edge.handle(get("/h"))
    assert body_of(latest) == b"version 2"


async def test_a_background_refresh_asked_for_before_a_soft_purge_does_not_make_it_fresh(
    harness: Harness,
) -> None:
    content: dict[str, Any] = {"etag": '"v1"', "body": b"old"}

    def conditional(request: OriginRequest) -> OriginResponse:
        headers = [
            ("Cache-Control", "max-age=1, stale-while-revalidate=60"),
            ("ETag", content["etag"]),
            ("Surrogate-Key", "s"),
        ]
        if dict(request.headers).get("If-None-Match") == content["etag"]:
            return OriginResponse(304, headers)
        return OriginResponse(200, headers, bytes(content["body"]))

    answering_at_arrival(harness, conditional)
    await harness.edge.handle(get("/s"))
    harness.clock.advance(5)
    stale = await harness.edge.handle(get("/s"))  # served stale; a refresh goes out (-> 304)
    assert "X-Cache: Stale" in head_of(stale)
    await asyncio.sleep(DELAY / 5)
    content.update(etag='"v2"', body=b"new")
    harness.edge.store.purge_keys(["s"], soft=True)
    await settle(lambda: not harness.edge._refreshing)
    # The 304 answered a question asked before the purge: the old body is not fresh again.
    after = await harness.edge.handle(get("/s"))
    assert not ("X-Cache: Hit" in head_of(after) and body_of(after) == b"old")
    await settle(lambda: not harness.edge._refreshing)
    final = await harness.edge.handle(get("/s"))
    assert body_of(final) == b"new"
