"""Shared-cache behaviour end to end: each Cache-Control directive, 304s, ranges, collapsing."""

from __future__ import annotations

import asyncio
import os

import pytest

from reflow.edge import CachePolicy
from reflow.edge.cache import format_http_date
from reflow.edge.http import Request
from reflow.edge.origins import OriginRequest, OriginResponse
from tests.functional.edge.conftest import Harness, settle, start_harness, stop_harness


async def test_max_age_expiry_goes_back_to_the_origin(harness: Harness) -> None:
    harness.origin.serve("/m", b"v1", [("Cache-Control", "max-age=10")])
    client = await harness.connect()
    await client.get("/m")
    harness.clock.advance(9)
    hit = await client.get("/m")
    assert (hit.headers["x-cache"], hit.headers["age"]) == ("Hit", "9")
    harness.clock.advance(2)
    harness.origin.serve("/m", b"v2", [("Cache-Control", "max-age=10")])
    assert (await client.get("/m")).body == b"v2"
    assert harness.origin.fetches == 2


async def test_no_store_private_set_cookie_and_authorization_are_not_stored(
    harness: Harness,
) -> None:
    harness.origin.serve("/ns", b"x", [("Cache-Control", "no-store")])
    harness.origin.serve("/pv", b"x", [("Cache-Control", "private, max-age=60")])
    harness.origin.serve("/sc", b"x", [("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")])
    harness.origin.serve("/au", b"x", [("Cache-Control", "max-age=60")])
    client = await harness.connect()
    for path, extra in (
        ("/ns", ()),
        ("/pv", ()),
        ("/sc", ()),
        ("/au", ("Authorization: Bearer t",)),
    ):
        first = await client.get(path, *extra)
        second = await client.get(path, *extra)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("Miss", "Miss"), path
    assert harness.origin.fetches == 8


async def test_revalidation_304_serves_the_stored_body_and_refreshes_its_age(
    harness: Harness,
) -> None:
    etag = '"v1"'

    def answer(request: OriginRequest) -> OriginResponse:
        headers = [
            ("Cache-Control", "max-age=10"),
            ("ETag", etag),
            ("Date", format_http_date(harness.clock.time())),
        ]
        if dict(request.headers).get("If-None-Match") == etag:
            return OriginResponse(304, headers)
        return OriginResponse(200, headers, b"stored body")

    harness.origin.answers["/r"] = answer
    client = await harness.connect()
    await client.get("/r")
    harness.clock.advance(30)
    again = await client.get("/r")
    assert (again.status, again.body, again.headers["x-cache"]) == (
        200,
        b"stored body",
        "RefreshHit",
    )
    assert again.headers["age"] == "0"
    assert dict(harness.origin.requests[1].headers)["If-None-Match"] == etag
    harness.clock.advance(5)
    assert (await client.get("/r")).headers["x-cache"] == "Hit"


async def test_no_cache_revalidates_every_time(harness: Harness) -> None:
    harness.origin.serve("/nc", b"x", [("Cache-Control", "no-cache"), ("ETag", '"e"')])
    client = await harness.connect()
    for _ in range(3):
        await client.get("/nc")
    assert harness.origin.fetches == 3
    assert dict(harness.origin.requests[2].headers)["If-None-Match"] == '"e"'


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(harness: Harness) -> None:
    harness.origin.serve("/w", b"old", [("Cache-Control", "max-age=1, stale-while-revalidate=60")])
    client = await harness.connect()
    await client.get("/w")
    harness.clock.advance(5)
    harness.origin.serve("/w", b"new", [("Cache-Control", "max-age=100")])
    harness.origin.delay = 0.05
    stale = [await client.get("/w") for _ in range(3)]
    assert [r.body for r in stale] == [b"old"] * 3
    assert {r.headers["x-cache"] for r in stale} == {"Stale"}
    await settle(lambda: harness.origin.fetches == 2 and not harness.edge._refreshing)
    assert (await client.get("/w")).body == b"new"
    assert harness.origin.fetches == 2


async def test_stale_if_error_covers_an_origin_outage_but_must_revalidate_does_not(
    harness: Harness,
) -> None:
    harness.origin.serve("/e", b"kept", [("Cache-Control", "max-age=1, stale-if-error=60")])
    harness.origin.serve("/mr", b"x", [("Cache-Control", "max-age=1, must-revalidate")])
    client = await harness.connect()
    await client.get("/e")
    await client.get("/mr")
    harness.clock.advance(5)
    harness.origin.fail = True
    kept = await client.get("/e")
    assert (kept.status, kept.body, kept.headers["x-cache"]) == (200, b"kept", "Stale")
    assert (await client.get("/mr")).status == 502


async def test_404_is_cached_briefly() -> None:
    harness = await start_harness(CachePolicy(negative_ttl=5))
    try:
        client = await harness.connect()
        assert (await client.get("/missing")).status == 404
        assert (await client.get("/missing")).headers["x-cache"] == "Hit"
        harness.clock.advance(6)
        await client.get("/missing")
        assert harness.origin.fetches == 2
    finally:
        await stop_harness(harness)


async def test_vary_keeps_one_variant_per_header_value() -> None:
    harness = await start_harness(CachePolicy(headers=("accept-language",)))
    try:

        def answer(request: OriginRequest) -> OriginResponse:
            language = dict(request.headers).get("accept-language", "en")
            headers = [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")]
            return OriginResponse(200, headers, language.encode())

        harness.origin.answers["/v"] = answer
        client = await harness.connect()
        assert (await client.get("/v", "Accept-Language: fr")).body == b"fr"
        assert (await client.get("/v", "Accept-Language: de")).body == b"de"
        hit = await client.get("/v", "Accept-Language: fr")
        assert (hit.body, hit.headers["x-cache"]) == (b"fr", "Hit")
    finally:
        await stop_harness(harness)


async def test_conditional_get_and_if_modified_since_get_304(harness: Harness) -> None:
    modified = format_http_date(harness.clock.time() - 100)
    harness.origin.serve(
        "/c",
        b"body",
        [("Cache-Control", "max-age=60"), ("ETag", 'W/"t"'), ("Last-Modified", modified)],
    )
    client = await harness.connect()
    await client.get("/c")
    by_tag = await client.get("/c", 'If-None-Match: "t"')
    assert (by_tag.status, by_tag.body) == (304, b"")
    by_date = await client.get("/c", f"If-Modified-Since: {format_http_date(harness.clock.time())}")
    assert by_date.status == 304
    changed = await client.get("/c", 'If-None-Match: "other"')
    assert changed.status == 200


async def test_range_requests_on_a_10_mb_object(harness: Harness) -> None:
    body = os.urandom(10 * 1024 * 1024)
    harness.origin.serve("/video", body, [("Cache-Control", "max-age=600"), ("ETag", '"big"')])
    client = await harness.connect()
    assert (await client.get("/video")).body == body
    middle = await client.get("/video", "Range: bytes=5000000-5000999")
    assert middle.status == 206 and middle.body == body[5_000_000:5_001_000]
    assert middle.headers["content-range"] == f"bytes 5000000-5000999/{len(body)}"
    tail = await client.get("/video", "Range: bytes=-100")
    assert tail.body == body[-100:]
    beyond = await client.get("/video", f"Range: bytes={len(body)}-")
    assert beyond.status == 416 and beyond.headers["content-range"] == f"bytes */{len(body)}"
    several = await client.get("/video", "Range: bytes=0-1,5-6")
    assert several.status == 200 and len(several.body) == len(body)
    assert harness.origin.fetches == 1


async def test_1000_concurrent_misses_on_one_key_make_one_origin_fetch(harness: Harness) -> None:
    harness.origin.serve("/hot", b"collapsed")
    harness.origin.delay = 0.05
    requests = [Request("GET", "/hot", "", [("host", "e")]) for _ in range(1000)]
    answers = await asyncio.gather(*(harness.edge.handle(r) for r in requests))
    assert harness.origin.fetches == 1
    assert all(a.endswith(b"collapsed") for a in answers)
    assert harness.edge.collapser.collapsed == 999


async def test_purge_during_an_origin_fetch_does_not_store_the_purged_body(
    harness: Harness,
) -> None:
    harness.origin.serve("/p", b"old", [("Cache-Control", "max-age=60"), ("Surrogate-Key", "p")])
    harness.origin.delay = 0.05
    task = asyncio.create_task(harness.edge.handle(Request("GET", "/p", "", [("host", "e")])))
    await asyncio.sleep(0.01)
    harness.origin.serve("/p", b"new", [("Cache-Control", "max-age=60"), ("Surrogate-Key", "p")])
    harness.edge.store.purge_keys(["p"])
    answer = await task
    assert answer.endswith(b"new")
    stored = harness.edge.store.get("/p", [])
    assert stored is not None and stored.body == b"new"


async def test_text_is_gzipped_once_for_clients_that_accept_it(harness: Harness) -> None:
    import gzip

    page = b"<p>" + b"reflow " * 500 + b"</p>"
    harness.origin.serve(
        "/page",
        page,
        [("Cache-Control", "max-age=60"), ("Content-Type", "text/html"), ("ETag", '"p"')],
    )
    client = await harness.connect()
    plain = await client.get("/page")
    assert plain.body == page and "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    packed = await client.get("/page", "Accept-Encoding: deflate, gzip;q=0.8")
    assert packed.headers["content-encoding"] == "gzip"
    assert gzip.decompress(packed.body) == page and len(packed.body) < len(page) // 10
    assert packed.headers["etag"] == 'W/"p"'
    refused = await client.get("/page", "Accept-Encoding: gzip;q=0")
    assert refused.body == page
    stored = harness.edge.store.get("/page", [])
    assert stored is not None and stored.gzip_body is not None
    assert harness.origin.fetches == 1


async def test_text_is_brotli_compressed_once_when_preferred_or_tied(harness: Harness) -> None:
    brotli = pytest.importorskip("brotli")
    page = b"<p>" + b"reflow edge " * 400 + b"</p>"
    harness.origin.serve(
        "/br",
        page,
        [("Cache-Control", "max-age=60"), ("Content-Type", "text/css"), ("ETag", '"b"')],
    )
    client = await harness.connect()
    tied = await client.get("/br", "Accept-Encoding: gzip, deflate, br")
    assert tied.headers["content-encoding"] == "br"
    assert brotli.decompress(tied.body) == page
    assert tied.headers["etag"] == 'W/"b"' and tied.headers["vary"] == "Accept-Encoding"
    again = await client.get("/br", "Accept-Encoding: br")
    assert again.body == tied.body and again.headers["x-cache"] == "Hit"
    gzip_first = await client.get("/br", "Accept-Encoding: br;q=0.5, gzip")
    assert gzip_first.headers["content-encoding"] == "gzip"
    stored = harness.edge.store.get("/br", [])
    assert stored is not None and set(stored.encoded_bodies) == {"br", "gzip"}
    # Both encodings are charged to the byte budget on top of the identity copy.
    assert stored.size >= 2 * len(page) + 2 * (len(tied.body) + len(gzip_first.body))
    ranged = await client.get("/br", "Accept-Encoding: br", "Range: bytes=0-9")
    assert ranged.status == 206 and ranged.body == page[:10]
    assert "content-encoding" not in ranged.headers
    assert harness.origin.fetches == 1


async def test_binary_types_are_never_compressed(harness: Harness) -> None:
    harness.origin.serve(
        "/img",
        b"\x89PNG" + b"\x00" * 2000,
        [("Cache-Control", "max-age=60"), ("Content-Type", "image/png")],
    )
    client = await harness.connect()
    await client.get("/img")
    reply = await client.get("/img", "Accept-Encoding: gzip")
    assert "content-encoding" not in reply.headers
