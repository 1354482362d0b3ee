"""The Redis KV beyond the shared contract: injected-clock TTLs, kept versions,
reaping, paged scans, and a model check against the memory engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflow.backends import Backend, Check, Delete, Operation, Put, open_backend
from reflow.backends.memory import MemoryKV
from reflow.errors import TransactionConflictError, VersionConflictError
from reflow.testing.clock import FakeClock
from tests.conftest import REDIS_URL, require_server


@dataclass
class Engine:
    """A Redis backend on a FakeClock, under a fresh prefix, plus a raw client."""

    backend: Backend
    clock: FakeClock
    prefix: str
    raw: aioredis.Redis

    async def keys(self) -> set[str]:
        """Every Redis key under this engine's prefix."""
        found = [k async for k in self.raw.scan_iter(match=f"{self.prefix}*", count=1000)]
        return {k.decode().removeprefix(self.prefix) for k in found}


def _url(prefix: str) -> str:
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}prefix={prefix}"


async def _open(tmp_path: Path) -> Engine:
    require_server(REDIS_URL, "the Redis server")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    clock = FakeClock()
    backend = await open_backend(_url(prefix), data_dir=tmp_path, clock=clock)
    return Engine(backend, clock, prefix, aioredis.Redis.from_url(REDIS_URL))


async def _close(engine: Engine) -> None:
    stale = [k async for k in engine.raw.scan_iter(match=f"{engine.prefix}*", count=1000)]
    if stale:
        await engine.raw.unlink(*stale)
    await engine.raw.aclose()
    await engine.backend.close()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    opened = await _open(tmp_path)
    try:
        yield opened
    finally:
        await _close(opened)


async def test_ttl_is_measured_on_the_injected_clock(engine: Engine) -> None:
    kv, clock = engine.backend.kv, engine.clock
    await kv.put("k", b"v", ttl=60)
    item = await kv.get("k")
    assert item is not None and item.expires_at == clock.time() + 60
    clock.advance(59.9)
    assert await kv.get("k") is not None
    clock.advance(0.1)
    assert await kv.get("k") is None
    assert await kv.scan() == []
    assert await kv.delete("k") is False


async def test_an_expired_key_reads_as_absent_for_compare_and_set(engine: Engine) -> None:
    kv, clock = engine.backend.kv, engine.clock
    await kv.put("k", b"v", ttl=1)
    clock.advance(2)
    with pytest.raises(VersionConflictError) as caught:
        await kv.put("k", b"w", expect_version=1)
    assert (caught.value.expected, caught.value.actual) == (1, 0)
    assert await kv.put("k", b"w", expect_version=0) == 2


async def test_versions_continue_after_delete_and_after_expiry(engine: Engine) -> None:
    kv, clock = engine.backend.kv, engine.clock
    assert await kv.put("k", b"a") == 1
    await kv.delete("k")
    assert await kv.put("k", b"b", ttl=5) == 2
    clock.advance(10)
    assert await kv.incr("k") == 1
    item = await kv.get("k")
    assert item is not None and item.version == 3 and item.expires_at is None


async def test_writes_reap_the_values_of_expired_keys_but_keep_their_versions(
    engine: Engine,
) -> None:
    kv, clock = engine.backend.kv, engine.clock
    for i in range(5):
        await kv.put(f"session/{i}", b"x" * 100, ttl=30)
    clock.advance(31)
    await kv.put("unrelated", b"y")  # any write reaps a few expired keys
    assert await engine.keys() >= {f"kv:session/{i}" for i in range(5)}
    for i in range(5):
        fields = await engine.raw.hgetall(f"{engine.prefix}kv:session/{i}")
        assert fields == {b"ver": b"1"}, "the value is freed, the version kept"
    assert await engine.raw.zrange(f"{engine.prefix}kv#expiring", 0, -1) == []
    assert await engine.raw.zrange(f"{engine.prefix}kv#index", 0, -1) == [b"unrelated"]


async def test_incr_keeps_the_counter_ttl_and_refuses_non_integers(engine: Engine) -> None:
    kv, clock = engine.backend.kv, engine.clock
    await kv.incr("hits", ttl=10)
    clock.advance(5)
    assert await kv.incr("hits", 2, ttl=100) == 3
    item = await kv.get("hits")
    assert item is not None and item.expires_at == clock.time() + 5
    await kv.put("text", b"not a number")
    with pytest.raises(ValueError, match="text"):
        await kv.incr("text")
    assert await kv.incr("big", 2**50) == 2**50


async def test_scan_pages_past_expired_keys_and_across_page_boundaries(engine: Engine) -> None:
    kv, clock = engine.backend.kv, engine.clock
    keys = [f"p/{i:04d}" for i in range(600)]
    await kv.transact([Put(k, b"1", ttl=10 if i % 3 == 0 else None) for i, k in enumerate(keys)])
    clock.advance(11)
    live = [k for i, k in enumerate(keys) if i % 3 != 0]
    assert [i.key for i in await kv.scan("p/")] == live
    assert [i.key for i in await kv.scan("p/", limit=300)] == live[:300]
    after = await kv.scan("p/", start_after=live[399], limit=5)
    assert [i.key for i in after] == live[400:405]


async def test_scan_orders_keys_by_their_utf8_bytes(engine: Engine) -> None:
    kv = engine.backend.kv
    keys = ["é", "z", "Z", "a\u00ff", "a\U0001f600", "a~"]
    for key in keys:
        await kv.put(key, b"v")
    assert [i.key for i in await kv.scan()] == sorted(keys, key=str.encode)
    assert [i.key for i in await kv.scan("a")] == ["a~", "a\u00ff", "a\U0001f600"]


async def test_a_failed_transaction_names_the_key_and_leaves_every_key_alone(
    engine: Engine,
) -> None:
    kv = engine.backend.kv
    await kv.put("a", b"1")
    before = await engine.keys()
    with pytest.raises(TransactionConflictError) as caught:
        await kv.transact([Put("b", b"2"), Delete("a"), Check("a", expect_version=2)])
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("a", 2, 1)
    assert await engine.keys() == before
    item = await kv.get("a")
    assert item is not None and item.version == 1


async def test_transaction_writes_to_one_key_apply_in_order(engine: Engine) -> None:
    kv = engine.backend.kv
    assert await kv.transact([Put("k", b"1"), Put("k", b"2"), Check("k", 0)]) == [1, 2, 0]
    item = await kv.get("k")
    assert item is not None and (item.value, item.version) == (b"2", 2)


# --- a model check: random operations give the memory engine's answers ---------

_KEYS = st.sampled_from(["a", "a/b", "b", "ba", "é"])
_VERSIONS = st.none() | st.integers(min_value=0, max_value=4)
# Values incr can and cannot count from (the engines agree on canonical integers).
_VALUES = st.sampled_from([b"", b"x", b"7", b"-2", b"\xff\x00"])
_TTLS = st.none() | st.sampled_from([1.0, 5.0])
_OPERATIONS = st.one_of(
    st.tuples(st.just("put"), _KEYS, _VALUES, _VERSIONS, _TTLS),
    st.tuples(st.just("delete"), _KEYS, _VERSIONS),
    st.tuples(st.just("incr"), _KEYS, st.integers(-5, 5), _TTLS),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 2.0])),
    st.tuples(
        st.just("transact"),
        st.lists(
            st.one_of(
                st.builds(Put, _KEYS, _VALUES, _VERSIONS, _TTLS),
                st.builds(Delete, _KEYS, _VERSIONS),
                st.builds(Check, _KEYS, st.integers(0, 3)),
            ),
            min_size=1,
            max_size=4,
        ),
    ),
)


async def _apply(kv: object, step: tuple[object, ...]) -> object:
    """Run one step on an engine; return its result or the error's identity."""
    from reflow.backends import KV

    assert isinstance(kv, KV)
    kind = step[0]
    try:
        if kind == "put":
            _, key, value, expect, ttl = step
            return await kv.put(key, value, expect_version=expect, ttl=ttl)  # type: ignore[arg-type]
        if kind == "delete":
            _, key, expect = step
            return await kv.delete(key, expect_version=expect)  # type: ignore[arg-type]
        if kind == "incr":
            _, key, by, ttl = step
            return await kv.incr(key, by, ttl=ttl)  # type: ignore[arg-type]
        if kind == "transact":
            operations: list[Operation] = step[1]  # type: ignore[assignment]
            return await kv.transact(operations)
    except (VersionConflictError, TransactionConflictError) as exc:
        return (type(exc).__name__, exc.key, exc.expected, exc.actual)
    except ValueError:
        return "ValueError"
    return None


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(_OPERATIONS, max_size=25))
async def test_random_operations_match_the_memory_engine(
    tmp_path: Path, steps: list[tuple[object, ...]]
) -> None:
    engine = await _open(tmp_path)
    try:
        model = MemoryKV(engine.clock)
        for step in steps:
            if step[0] == "advance":
                engine.clock.advance(step[1])  # type: ignore[arg-type]
                continue
            ours = await _apply(engine.backend.kv, step)
            expected = await _apply(model, step)
            assert ours == expected, step
        assert await engine.backend.kv.scan() == await model.scan()
    finally:
        await _close(engine)


async def test_tombstones_left_by_an_older_reflow_are_adopted_then_collected(
    engine: Engine,
) -> None:
    kv: Any = engine.backend.kv
    # What an older reflow left: hashes holding only a version, in no dead set.
    await engine.raw.hset(f"{engine.prefix}kv:old", mapping={"ver": 7})
    await engine.raw.hset(f"{engine.prefix}kv:older", mapping={"ver": 3})
    await kv.put("live", b"v")
    await kv.put("gone", b"v")
    await kv.delete("gone")  # already in the dead set: not adopted twice
    engine.clock.advance(61)
    assert await kv.collect() == 1  # only "gone": the others are unknown to it
    # SCAN walks the whole database (other tests' keys too): large pages.
    assert await kv.adopt_tombstones(count=10_000) == 2
    assert await kv.adopt_tombstones(count=10_000) == 0
    assert await kv.collect() == 0  # adopted as dying now: the grace runs from here
    engine.clock.advance(61)
    assert await kv.collect() == 2
    assert await engine.keys() == {"kv:live", "kv#index", "kv#floor"}
    assert await kv.put("old", b"new", expect_version=0) == 8
    item = await kv.get("live")
    assert item is not None and item.version == 1
