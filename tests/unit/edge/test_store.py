"""The store: LRU within a byte budget, Vary variants, surrogate-key and path indexes."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.edge.cache import Freshness
from reflow.edge.store import Entry, Store

T0 = 1_700_000_000.0


def entry(
    path: str,
    body: bytes = b"x",
    *,
    tags: Sequence[str] = (),
    vary: tuple[str, ...] = (),
    secondary: tuple[str, ...] = (),
    key: str | None = None,
) -> Entry:
    return Entry(
        key=key or path,
        path=path,
        status=200,
        reason="OK",
        headers=[("Content-Type", "text/plain")],
        body=body,
        freshness=Freshness(response_time=T0, initial_age=0, lifetime=60),
        surrogate_keys=frozenset(tags),
        vary=vary,
        secondary=secondary,
    )


def test_least_recently_used_key_is_evicted_first_past_the_budget() -> None:
    one = entry("/1", b"a" * 1000)
    store = Store(budget=one.size * 3)
    for name in ("/1", "/2", "/3"):
        store.put(entry(name, b"a" * 1000))
    assert store.get("/1", []) is not None  # /1 is now the most recent
    store.put(entry("/4", b"a" * 1000))
    assert store.get("/2", []) is None
    assert all(store.get(p, []) is not None for p in ("/1", "/3", "/4"))
    assert store.evictions == 1


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3000)), max_size=60))
def test_bytes_never_exceed_the_budget_and_match_the_entries(puts: list[tuple[str, int]]) -> None:
    store = Store(budget=8000)
    for name, size in puts:
        store.put(entry(f"/{name}", b"z" * size))
        held = sum(e.size for e in store.entries())
        assert store.bytes == held
        assert held <= 8000 or len(store) == 1


def test_vary_variants_are_kept_apart_and_a_new_vary_replaces_them() -> None:
    store = Store()
    store.put(entry("/v", b"en", vary=("accept-language",), secondary=("en",)))
    store.put(entry("/v", b"fr", vary=("accept-language",), secondary=("fr",)))
    assert store.get("/v", [("accept-language", "fr")]).body == b"fr"  # type: ignore[union-attr]
    assert store.get("/v", [("accept-language", "en")]).body == b"en"  # type: ignore[union-attr]
    assert store.get("/v", [("accept-language", "de")]) is None
    store.put(entry("/v", b"gz", vary=("accept-encoding",), secondary=("gzip",)))
    assert len(store) == 1


def test_purged_entries_leave_no_index_behind() -> None:
    store = Store()
    store.put(entry("/a", tags=("t1", "t2")))
    store.put(entry("/b", tags=("t2",)))
    assert store.purge_keys(["t2"]) == 2
    assert store.purge_keys(["t1"]) == 0
    assert store.bytes == 0 and len(store) == 0
    assert store._by_surrogate == {} and store._by_path == {}


def test_every_purge_bumps_the_generation() -> None:
    store = Store()
    before = store.generation
    store.purge_path("/nothing")
    assert store.generation == before + 1


def test_soft_purge_keeps_the_entry_but_makes_it_stale() -> None:
    store = Store()
    store.put(entry("/s"))
    assert store.purge_prefix("/", soft=True) == 1
    kept = store.get("/s", [])
    assert kept is not None and kept.soft_purged and kept.fresh_until < T0


def test_prebuilt_hit_response_carries_age_and_length() -> None:
    stored = entry("/p", b"hello")
    data = stored.response(T0 + 7.5, head=False)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nAge: 7\r\n" in data and b"Content-Length: 5\r\n" in data
    assert data.endswith(b"\r\n\r\nhello")
    assert stored.response(T0 + 7.9, head=True).endswith(b"\r\n\r\n")


def test_a_gzip_variant_is_charged_to_the_budget_and_released_with_the_entry() -> None:
    store = Store()
    stored = entry("/g", b"text " * 1000)
    stored.compressible = True
    store.put(stored)
    before = store.bytes
    compressed = stored.gzipped()
    assert store.bytes == before + 2 * len(compressed)
    assert store.purge_path("/g") == 1
    assert store.bytes == 0


def test_the_budget_counts_the_body_twice_because_hits_are_prebuilt() -> None:
    stored = entry("/big", b"b" * 100_000)
    assert stored.size >= 200_000


_PATHS = st.sampled_from(["/", "/a", "/a/b", "/blog/x", "/blog/y/z"])
_TAG_SETS = st.frozensets(st.sampled_from(["a", "b", "c", "d"]), max_size=3)
_PURGES = st.one_of(
    st.tuples(st.just("keys"), _TAG_SETS),
    st.tuples(st.just("path"), _PATHS),
    st.tuples(st.just("prefix"), st.sampled_from(["/", "/a", "/blog/", "/zzz"])),
    st.tuples(st.just("all"), st.none()),
)


@given(
    purges=st.lists(_PURGES, max_size=12),
    since=st.integers(min_value=0, max_value=12),
    path=_PATHS,
    tags=_TAG_SETS,
)
def test_purged_since_is_true_exactly_when_a_later_purge_covers_the_object(
    purges: list[tuple[str, object]], since: int, path: str, tags: frozenset[str]
) -> None:
    store = Store()
    for kind, scope in purges:
        if kind == "keys":
            assert isinstance(scope, frozenset)
            store.purge_keys(scope)
        elif kind == "path":
            assert isinstance(scope, str)
            store.purge_path(scope)
        elif kind == "prefix":
            assert isinstance(scope, str)
            store.purge_prefix(scope)
        else:
            store.purge_all()
    since = min(since, store.generation)

    def covers(kind: str, scope: object) -> bool:
        if kind == "keys":
            return isinstance(scope, frozenset) and bool(scope & tags)
        if kind == "path":
            return scope == path
        if kind == "prefix":
            return isinstance(scope, str) and path.startswith(scope)
        return True

    expected = any(covers(kind, scope) for kind, scope in purges[since:])
    assert store.purged_since(since, path, tags) is expected


def test_purged_since_says_yes_when_its_log_no_longer_reaches_back() -> None:
    store = Store()
    store.purge_keys(["x"])
    for _ in range(5000):  # more purges than the store remembers, none of "y"
        store.purge_keys(["other"])
    assert store.purged_since(store.generation - 10, "/y", ["y"]) is False
    assert store.purged_since(0, "/y", ["y"]) is True
