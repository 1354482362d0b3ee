"""The KV contract: versions, compare-and-set, TTL, counters, scans, transactions."""

from __future__ import annotations

import asyncio
import json

import pytest

from reflow.backends import Backend, Check, Delete, Put
from reflow.errors import TransactionConflictError, VersionConflictError
from reflow.testing import FakeClock


async def test_put_then_get_returns_value_and_version(backend: Backend) -> None:
    assert await backend.kv.get("k") is None
    assert await backend.kv.put("k", b"v1") == 1
    assert await backend.kv.put("k", b"v2") == 2
    item = await backend.kv.get("k")
    assert item is not None
    assert (item.key, item.value, item.version, item.expires_at) == ("k", b"v2", 2, None)


async def test_compare_and_set_succeeds_only_at_the_expected_version(backend: Backend) -> None:
    assert await backend.kv.put("k", b"a", expect_version=0) == 1
    with pytest.raises(VersionConflictError) as caught:
        await backend.kv.put("k", b"b", expect_version=0)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("k", 0, 1)
    assert await backend.kv.put("k", b"b", expect_version=1) == 2
    with pytest.raises(VersionConflictError):
        await backend.kv.put("k", b"c", expect_version=1)
    item = await backend.kv.get("k")
    assert item is not None and item.value == b"b"


async def test_conditional_delete(backend: Backend) -> None:
    await backend.kv.put("k", b"a")
    with pytest.raises(VersionConflictError):
        await backend.kv.delete("k", expect_version=7)
    assert await backend.kv.delete("k", expect_version=1) is True
    assert await backend.kv.delete("k") is False
    assert await backend.kv.get("k") is None


async def test_a_recreated_key_never_reuses_an_old_version(backend: Backend) -> None:
    await backend.kv.put("k", b"a")
    await backend.kv.put("k", b"b")
    await backend.kv.delete("k")
    version = await backend.kv.put("k", b"c", expect_version=0)
    assert version >= 1
    item = await backend.kv.get("k")
    assert item is not None and item.version == version


# TTL tests run on a FakeClock: under load, real sleeps race the TTL.


async def test_ttl_expires_a_key(clocked: tuple[Backend, FakeClock]) -> None:
    backend, clock = clocked
    await backend.kv.put("short", b"x", ttl=20)
    await backend.kv.put("long", b"y", ttl=60)
    item = await backend.kv.get("short")
    assert item is not None and item.expires_at is not None
    clock.advance(21)
    assert await backend.kv.get("short") is None
    assert await backend.kv.get("long") is not None
    assert [i.key for i in await backend.kv.scan("")] == ["long"]
    # An expired key counts as absent for compare-and-set.
    assert await backend.kv.put("short", b"again", expect_version=0) >= 1


async def test_a_put_without_ttl_clears_an_earlier_ttl(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    await backend.kv.put("k", b"x", ttl=20)
    await backend.kv.put("k", b"y")
    clock.advance(21)
    item = await backend.kv.get("k")
    assert item is not None and item.value == b"y" and item.expires_at is None


async def test_incr_is_atomic_and_starts_at_zero(backend: Backend) -> None:
    assert await backend.kv.incr("n") == 1
    assert await backend.kv.incr("n", 5) == 6
    assert await backend.kv.incr("n", -10) == -4
    results = await asyncio.gather(*(backend.kv.incr("c") for _ in range(100)))
    assert sorted(results) == list(range(1, 101))
    item = await backend.kv.get("c")
    assert item is not None and int(item.value) == 100


async def test_incr_ttl_applies_when_the_counter_is_created(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    await backend.kv.incr("window", ttl=20)
    await backend.kv.incr("window", ttl=60)  # does not extend
    clock.advance(21)
    assert await backend.kv.get("window") is None
    assert await backend.kv.incr("window") == 1


async def test_scan_walks_a_prefix_in_key_order(backend: Backend) -> None:
    for key in ["b/2", "a/1", "b/10", "b/1", "c", "b", "ba"]:
        await backend.kv.put(key, key.encode())
    assert [i.key for i in await backend.kv.scan("b/")] == ["b/1", "b/10", "b/2"]
    assert [i.key for i in await backend.kv.scan("b")] == ["b", "b/1", "b/10", "b/2", "ba"]
    assert [i.key for i in await backend.kv.scan("b/", limit=2)] == ["b/1", "b/10"]
    assert [i.key for i in await backend.kv.scan("b/", start_after="b/10")] == ["b/2"]
    everything = await backend.kv.scan()
    assert [i.key for i in everything] == sorted(["b/2", "a/1", "b/10", "b/1", "c", "b", "ba"])
    assert await backend.kv.scan("zzz") == []


async def test_get_many_keeps_the_order_asked(backend: Backend) -> None:
    await backend.kv.put("x", b"1")
    await backend.kv.put("z", b"3")
    items = await backend.kv.get_many(["z", "y", "x"])
    assert [i.value if i else None for i in items] == [b"3", None, b"1"]


async def test_transaction_applies_every_operation(backend: Backend) -> None:
    await backend.kv.put("a", b"1")
    await backend.kv.put("gone", b"x")
    versions = await backend.kv.transact(
        [
            Put("a", b"2", expect_version=1),
            Put("b", b"new", expect_version=0),
            Delete("gone"),
            Check("a", expect_version=1),
        ]
    )
    assert versions[0] == 2 and versions[1] >= 1 and versions[2] == 0
    a, b, gone = await backend.kv.get_many(["a", "b", "gone"])
    assert a is not None and a.value == b"2"
    assert b is not None and b.value == b"new"
    assert gone is None


async def test_transaction_with_one_failed_check_writes_nothing(backend: Backend) -> None:
    await backend.kv.put("a", b"1")
    await backend.kv.put("b", b"1")
    with pytest.raises(TransactionConflictError) as caught:
        await backend.kv.transact(
            [
                Put("a", b"2"),
                Put("new", b"x"),
                Delete("b"),
                Check("b", expect_version=5),
            ]
        )
    assert caught.value.key == "b"
    a, b, new = await backend.kv.get_many(["a", "b", "new"])
    assert a is not None and a.value == b"1" and a.version == 1
    assert b is not None and b.value == b"1"
    assert new is None


async def test_compare_and_set_under_50_concurrent_writers_loses_no_update(
    backend: Backend,
) -> None:
    await backend.kv.put("counter", json.dumps({"n": 0, "by": []}).encode())
    conflicts = 0

    async def writer(index: int) -> None:
        nonlocal conflicts
        while True:
            item = await backend.kv.get("counter")
            assert item is not None
            state = json.loads(item.value)
            state["n"] += 1
            state["by"].append(index)
            try:
                await backend.kv.put(
                    "counter", json.dumps(state).encode(), expect_version=item.version
                )
                return
            except VersionConflictError:
                conflicts += 1
                await asyncio.sleep(0)

    await asyncio.gather(*(writer(i) for i in range(50)))
    item = await backend.kv.get("counter")
    assert item is not None
    state = json.loads(item.value)
    assert state["n"] == 50
    assert sorted(state["by"]) == list(range(50))
    assert item.version == 51


async def test_incr_refuses_a_value_that_is_not_an_integer_and_keeps_it(
    backend: Backend,
) -> None:
    await backend.kv.put("name", b"ada")
    with pytest.raises(ValueError):
        await backend.kv.incr("name")
    item = await backend.kv.get("name")
    assert item is not None and (item.value, item.version) == (b"ada", 1)
