"""RFC 9111 / RFC 9110 cache policy, checked with plain values (no sockets, no clock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.edge.cache import (
    Action,
    CachePolicy,
    Freshness,
    Verdict,
    assess,
    cache_key,
    corrected_initial_age,
    format_http_date,
    not_modified,
    parse_cache_control,
    parse_http_date,
    parse_range,
    secondary_key,
    vary_fields,
    weak_etag_match,
)

T0 = 1_700_000_000.0
POLICY = CachePolicy(default_ttl=100.0, negative_ttl=5.0)


def verdict(
    headers: list[tuple[str, str]],
    status: int = 200,
    *,
    method: str = "GET",
    policy: CachePolicy = POLICY,
    authorized: bool = False,
) -> Verdict:
    return assess(
        method,
        status,
        headers,
        request_time=T0,
        response_time=T0,
        policy=policy,
        authorized=authorized,
    )


def freshness_of(result: Verdict) -> Freshness:
    """The verdict's freshness, which these cases expect to be there."""
    assert result.freshness is not None
    return result.freshness


# --- parsing ----------------------------------------------------------------------


def test_cache_control_parses_quoted_arguments_and_flags_repeats() -> None:
    directives, repeated = parse_cache_control(
        ['max-age=60, no-cache="Set-Cookie, X"', "MAX-AGE=5"]
    )
    assert directives["no-cache"] == "Set-Cookie, X"
    assert directives["max-age"] == "5"
    assert repeated == {"max-age"}


def test_http_date_accepts_the_three_formats_of_rfc_9110() -> None:
    imf = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT")
    assert imf == parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT")
    assert imf == parse_http_date("Sun Nov  6 08:49:37 1994")
    assert parse_http_date("yesterday") is None
    assert format_http_date(imf or 0) == "Sun, 06 Nov 1994 08:49:37 GMT"


# --- storing ------------------------------------------------------------------------


def test_no_store_is_never_stored_even_with_max_age() -> None:
    assert not verdict([("cache-control", "max-age=60, no-store")]).store


def test_private_is_not_stored_unless_the_behaviour_allows_it() -> None:
    assert not verdict([("cache-control", "private, max-age=60")]).store
    allowed = CachePolicy(store_private=True)
    assert verdict([("cache-control", "private, max-age=60")], policy=allowed).store


def test_authorized_request_is_stored_only_with_public_s_maxage_or_must_revalidate() -> None:
    assert not verdict([("cache-control", "max-age=60")], authorized=True).store
    for directive in ("public", "s-maxage=5", "must-revalidate"):
        assert verdict([("cache-control", directive)], authorized=True).store


def test_set_cookie_response_is_not_stored_unless_the_behaviour_allows_it() -> None:
    headers = [("cache-control", "max-age=60"), ("set-cookie", "a=b")]
    assert not verdict(headers).store
    assert verdict(headers, policy=CachePolicy(store_set_cookie=True)).store


def test_vary_star_is_not_stored() -> None:
    assert not verdict([("vary", "Accept, *")]).store


def test_post_is_not_stored() -> None:
    assert not verdict([("cache-control", "max-age=60")], method="POST").store


def test_status_without_explicit_freshness_needs_to_be_heuristically_cacheable() -> None:
    assert not verdict([], status=500).store
    assert verdict([("cache-control", "max-age=5")], status=500).store
    assert verdict([], status=301).store


def test_404_gets_the_short_negative_ttl() -> None:
    result = verdict([], status=404)
    assert result.freshness is not None and result.freshness.lifetime == 5.0


# --- freshness ------------------------------------------------------------------------


def test_s_maxage_beats_max_age_beats_expires() -> None:
    date = format_http_date(T0)
    expires = format_http_date(T0 + 30)
    both = [("cache-control", "max-age=20, s-maxage=10"), ("date", date), ("expires", expires)]
    assert freshness_of(verdict(both)).lifetime == 10
    max_age = [("cache-control", "max-age=20"), ("date", date), ("expires", expires)]
    assert freshness_of(verdict(max_age)).lifetime == 20
    only_expires = [("date", date), ("expires", expires)]
    assert freshness_of(verdict(only_expires)).lifetime == 30


def test_invalid_expires_means_already_expired() -> None:
    result = verdict([("expires", "0"), ("date", format_http_date(T0))])
    assert result.freshness is not None and result.freshness.lifetime == 0


def test_duplicated_max_age_is_treated_as_stale() -> None:
    result = verdict([("cache-control", "max-age=60"), ("cache-control", "max-age=120")])
    assert result.freshness is not None and not result.freshness.is_fresh(T0)


def test_behaviour_default_ttl_applies_without_headers_and_min_max_clamp() -> None:
    assert freshness_of(verdict([])).lifetime == 100
    clamp = CachePolicy(min_ttl=30, max_ttl=50)
    assert freshness_of(verdict([("cache-control", "max-age=1")], policy=clamp)).lifetime == 30
    assert freshness_of(verdict([("cache-control", "max-age=99")], policy=clamp)).lifetime == 50


def test_corrected_initial_age_takes_the_larger_of_apparent_and_age_header() -> None:
    headers = [("age", "10"), ("date", format_http_date(T0 - 30))]
    assert corrected_initial_age(headers, T0 - 2, T0) == 30  # apparent age wins
    assert corrected_initial_age([("age", "50")], T0 - 2, T0) == 52  # age + response delay


def test_age_header_counts_against_freshness() -> None:
    result = verdict([("cache-control", "max-age=60"), ("age", "50")])
    freshness = result.freshness
    assert freshness is not None
    assert freshness.is_fresh(T0 + 9)
    assert not freshness.is_fresh(T0 + 10)


def test_no_cache_is_stored_but_always_revalidated() -> None:
    result = verdict([("cache-control", "no-cache, max-age=600")])
    assert result.store and result.freshness is not None
    assert result.freshness.decide(T0) is Action.REVALIDATE


def test_stale_while_revalidate_serves_stale_then_revalidates() -> None:
    freshness = verdict([("cache-control", "max-age=10, stale-while-revalidate=20")]).freshness
    assert freshness is not None
    assert freshness.decide(T0 + 5) is Action.HIT
    assert freshness.decide(T0 + 15) is Action.STALE_REFRESH
    assert freshness.decide(T0 + 31) is Action.REVALIDATE


def test_stale_if_error_window_and_must_revalidate_forbids_it() -> None:
    freshness = verdict([("cache-control", "max-age=10, stale-if-error=60")]).freshness
    assert freshness is not None
    assert freshness.usable_on_error(T0 + 50)
    assert not freshness.usable_on_error(T0 + 71)
    strict = verdict([("cache-control", "max-age=10, stale-if-error=60, must-revalidate")])
    assert strict.freshness is not None and not strict.freshness.usable_on_error(T0 + 11)
    shared = verdict([("cache-control", "s-maxage=10, stale-while-revalidate=60")])
    assert shared.freshness is not None and shared.freshness.decide(T0 + 11) is Action.REVALIDATE


@settings(deadline=None)
@given(
    max_age=st.integers(0, 10**6),
    age=st.integers(0, 10**6),
    elapsed=st.floats(0, 2 * 10**6, allow_nan=False),
)
def test_a_response_is_never_served_fresh_past_its_lifetime(
    max_age: int, age: int, elapsed: float
) -> None:
    result = verdict([("cache-control", f"max-age={max_age}"), ("age", str(age))])
    freshness = result.freshness
    assert freshness is not None
    now = T0 + elapsed
    if freshness.decide(now) is Action.HIT:
        assert age + elapsed < max_age
        assert now < freshness.fresh_until
    else:
        assert age + elapsed >= max_age


@settings(deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "no-store",
                "max-age=5",
                "public",
                "private",
                "s-maxage=9",
                "no-cache",
                "must-revalidate",
            ]
        ),
        max_size=5,
    ),
    st.booleans(),
)
def test_no_store_is_never_stored(directives: list[str], authorized: bool) -> None:
    result = verdict(
        [("cache-control", ", ".join([*directives, "no-store"]))], authorized=authorized
    )
    assert not result.store


# --- keys and Vary ----------------------------------------------------------------------


def test_default_key_ignores_query_headers_and_cookies() -> None:
    key, forwarded = cache_key(
        "/a", "utm=1&b=2", [("cookie", "s=1"), ("x-forwarded-host", "evil")], CachePolicy()
    )
    assert (key, forwarded) == ("/a", "")


def test_whitelisted_query_strings_are_sorted_and_the_rest_dropped() -> None:
    policy = CachePolicy(query_strings=("page", "lang"))
    key, forwarded = cache_key("/a", "utm=1&page=2&lang=en", [], policy)
    assert forwarded == "lang=en&page=2"
    assert key == "/a?lang=en&page=2"
    assert cache_key("/a", "page=2&lang=en", [], policy)[0] == key


def test_keyed_headers_and_cookies_separate_entries() -> None:
    policy = CachePolicy(headers=("accept-language",), cookies=("ab",))
    one = cache_key("/a", "", [("accept-language", "en"), ("cookie", "ab=A; x=1")], policy)[0]
    two = cache_key("/a", "", [("accept-language", "en"), ("cookie", "ab=B; x=1")], policy)[0]
    three = cache_key("/a", "", [("accept-language", "en"), ("cookie", "x=2; ab=A")], policy)[0]
    assert one != two and one == three


def test_vary_secondary_key_normalises_whitespace() -> None:
    vary = vary_fields([("vary", "Accept-Encoding, accept-language")])
    assert vary == ("accept-encoding", "accept-language")
    a = secondary_key(vary, [("accept-encoding", "gzip,  br"), ("accept-language", "en")])
    b = secondary_key(vary, [("accept-encoding", "gzip, br"), ("accept-language", "en")])
    assert a == b


# --- conditional requests ------------------------------------------------------------------


def test_if_none_match_uses_weak_comparison() -> None:
    assert weak_etag_match('W/"1"', '"1"')
    assert not_modified([("if-none-match", 'W/"x", W/"1"')], '"1"', None)
    assert not not_modified([("if-none-match", '"2"')], '"1"', None)
    assert not_modified([("if-none-match", "*")], '"1"', None)


def test_if_none_match_wins_over_if_modified_since() -> None:
    headers = [("if-none-match", '"2"'), ("if-modified-since", format_http_date(T0))]
    assert not not_modified(headers, '"1"', T0 - 100)


def test_if_modified_since_gives_304_when_not_newer() -> None:
    since = [("if-modified-since", format_http_date(T0))]
    assert not_modified(since, None, T0)
    assert not not_modified(since, None, T0 + 1)


# --- ranges -----------------------------------------------------------------------------------


def test_single_range_suffix_and_open_ended() -> None:
    assert parse_range("bytes=0-9", 100).status == 206
    suffix = parse_range("bytes=-10", 100)
    assert (suffix.start, suffix.end) == (90, 99)
    open_ended = parse_range("bytes=95-", 100)
    assert (open_ended.start, open_ended.end) == (95, 99)
    clipped = parse_range("bytes=90-500", 100)
    assert clipped.end == 99


def test_unsatisfiable_range_is_416_and_bad_syntax_is_ignored() -> None:
    assert parse_range("bytes=100-", 100).status == 416
    assert parse_range("bytes=-0", 100).status == 416
    assert parse_range("bytes=5-1", 100).status == 200
    assert parse_range("bytes=+1-2", 100).status == 200
    assert parse_range("items=0-1", 100).status == 200


def test_multiple_ranges_are_ignored_by_design() -> None:
    assert parse_range("bytes=0-1, 5-6", 100).status == 200


def test_if_range_mismatch_serves_the_whole_representation() -> None:
    assert parse_range("bytes=0-1", 100, if_range='"a"', etag='"a"').status == 206
    assert parse_range("bytes=0-1", 100, if_range='"b"', etag='"a"').status == 200
    assert parse_range("bytes=0-1", 100, if_range='W/"a"', etag='W/"a"').status == 200


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.lists(st.integers(1, 1999), max_size=8))
def test_range_slices_concatenate_to_the_body(body: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    pieces = []
    for start, stop in zip(points, points[1:], strict=False):
        selected = parse_range(f"bytes={start}-{stop - 1}", len(body))
        assert selected.status == 206
        pieces.append(body[selected.start : selected.end + 1])
    assert b"".join(pieces) == body


# --- content coding -------------------------------------------------------------------------


def test_accept_encoding_honours_zero_weights() -> None:
    from reflow.edge.cache import accepts_gzip

    assert accepts_gzip([("accept-encoding", "gzip, deflate, br")])
    assert accepts_gzip([("accept-encoding", "br;q=1.0, gzip;q=0.5")])
    assert accepts_gzip([("accept-encoding", "*")])
    assert not accepts_gzip([("accept-encoding", "gzip;q=0")])
    assert not accepts_gzip([("accept-encoding", "br, identity")])
    assert not accepts_gzip([])


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("gzip, deflate, br", "br"),  # equal weights: Brotli preferred
        ("br;q=1.0, gzip;q=0.5", "br"),
        ("br;q=0.5, gzip", "gzip"),
        ("gzip;q=0.9, br;q=0.8", "gzip"),
        ("x-gzip", "gzip"),
        ("*", "br"),
        ("*;q=0.5, gzip", "gzip"),  # named codings outweigh the wildcard
        ("gzip, *;q=0", "gzip"),
        ("br;q=0, gzip;q=0", None),
        ("identity", None),
        ("deflate", None),
        ("br;q=abc, gzip;q=0.1", "gzip"),  # a malformed weight is not consent
        ("BR;Q=0.9", "br"),  # codings and parameter names are case-insensitive
    ],
)
def test_the_content_coding_follows_accept_encoding_weights(
    accept: str, chosen: str | None
) -> None:
    from reflow.edge.cache import choose_coding

    assert choose_coding([("accept-encoding", accept)]) == chosen


def test_no_accept_encoding_means_identity_and_repeated_fields_combine() -> None:
    from reflow.edge.cache import choose_coding

    assert choose_coding([]) is None
    assert choose_coding([("accept-encoding", "br;q=0"), ("accept-encoding", "gzip")]) == "gzip"


def test_only_text_like_types_are_compressible() -> None:
    from reflow.edge.cache import compressible_type

    assert compressible_type("text/html; charset=utf-8")
    assert compressible_type("application/json")
    assert compressible_type("image/svg+xml")
    assert not compressible_type("image/png")
    assert not compressible_type(None)
