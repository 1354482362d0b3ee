"""KV tombstones are collected, and a re-created key still never reuses a version.

Every engine keeps a deleted or expired key's last version (a tombstone) so
that re-creating the key carries on above it. ``collect()`` drops tombstones
older than a grace period and raises a per-store *version floor* over what it
dropped; a key with no tombstone starts above the floor. These tests count
what the store holds (rows, hashes, dictionary entries) to see it shrink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend
from reflow.errors import VersionConflictError
from reflow.testing import FakeClock
from tests.contract.conftest import reopen

GRACE = 60.0


async def collect(backend: Backend, *, grace: float = GRACE, limit: int = 1000) -> int:
    """Run the engine's collector (every engine has one; it is not in the protocol)."""
    kv: Any = backend.kv
    return int(await kv.collect(grace=grace, limit=limit))


async def stored(backend: Backend) -> int:
    """How many keys the store holds anything for: live, expired or tombstoned."""
    kv: Any = backend.kv
    if backend.kind == "memory":
        return len(kv._last_version)
    if backend.kind == "sqlite":
        return int(await kv._db.read(lambda c: c.execute("SELECT count(*) FROM kv").fetchone()[0]))
    count = 0
    async for _ in kv._client.scan_iter(match=kv._ns.kv_prefix + "*", count=500):
        count += 1
    return count


async def test_a_collected_tombstone_is_gone_and_the_key_comes_back_higher(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    kv = backend.kv
    for value in (b"a", b"b", b"c"):
        await kv.put("k", value)
    assert await kv.delete("k") is True
    assert await stored(backend) == 1
    clock.advance(GRACE + 1)
    assert await collect(backend) == 1
    assert await stored(backend) == 0
    version = await kv.put("k", b"again", expect_version=0)
    assert version > 3
    with pytest.raises(VersionConflictError):
        await kv.put("k", b"stale", expect_version=3)
    item = await kv.get("k")
    assert item is not None and (item.value, item.version) == (b"again", version)


async def test_expired_keys_are_collected_too_and_live_keys_untouched(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    kv = backend.kv
    await kv.put("short", b"x", ttl=5)
    await kv.put("short", b"y", ttl=5)
    await kv.put("kept", b"z")
    await kv.put("long", b"w", ttl=10_000)
    clock.advance(5 + GRACE + 1)
    assert await collect(backend) == 1
    assert await stored(backend) == 2
    assert [(i.key, i.version) for i in await kv.scan()] == [("kept", 1), ("long", 1)]
    assert await kv.put("short", b"new", expect_version=0) > 2
    assert await kv.incr("fresh-counter") == 1


async def test_a_tombstone_younger_than_the_grace_is_kept(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    kv = backend.kv
    await kv.put("old", b"1")
    await kv.delete("old")
    clock.advance(GRACE / 2)
    await kv.put("young", b"1")
    await kv.put("young", b"2")
    await kv.delete("young")
    await kv.put("expiring", b"1", ttl=1)
    clock.advance(GRACE / 2 + 1)
    # "old" died GRACE + 1 ago; "young" GRACE / 2 + 1 ago; "expiring" GRACE / 2 ago.
    assert await collect(backend) == 1
    assert await stored(backend) == 2
    assert await kv.put("young", b"3", expect_version=0) == 3  # carried on, not floored


async def test_a_fresh_store_starts_keys_at_one_and_the_floor_only_rises(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    kv = backend.kv
    assert await kv.put("a", b"1") == 1
    for _ in range(6):
        await kv.put("b", b"x")
    await kv.delete("b")
    await kv.put("c", b"1")
    await kv.delete("c")
    clock.advance(GRACE + 1)
    assert await collect(backend) == 2
    # The floor is the highest version dropped ("b": 6), not the last one.
    assert await kv.put("new", b"1") == 7
    assert await kv.put("c", b"1") == 7
    assert await kv.put("a", b"2") == 2  # live keys carry on from their own version


async def test_collection_is_bounded_per_run(clocked: tuple[Backend, FakeClock]) -> None:
    backend, clock = clocked
    kv = backend.kv
    for i in range(25):
        await kv.put(f"k{i:02}", b"v")
        await kv.delete(f"k{i:02}")
    clock.advance(GRACE + 1)
    assert await collect(backend, limit=10) == 10
    assert await stored(backend) == 15
    assert await collect(backend, limit=10) == 10
    assert await collect(backend, limit=10) == 5
    assert await collect(backend, limit=10) == 0
    assert await stored(backend) == 0
    assert await kv.put("k00", b"v", expect_version=0) == 2


async def test_a_transaction_delete_leaves_a_collectable_tombstone(
    clocked: tuple[Backend, FakeClock],
) -> None:
    from reflow.backends import Delete, Put

    backend, clock = clocked
    kv = backend.kv
    await kv.transact([Put("t", b"1"), Put("u", b"1")])
    await kv.transact([Delete("t"), Put("u", b"2")])
    clock.advance(GRACE + 1)
    assert await collect(backend) == 1
    versions = await kv.transact([Put("t", b"x", expect_version=0)])
    assert versions[0] >= 2


async def test_a_floor_raised_by_one_opener_binds_another(
    clocked: tuple[Backend, FakeClock], tmp_path: Path
) -> None:
    backend, clock = clocked
    other = await reopen(backend, tmp_path)
    try:
        for _ in range(4):
            await backend.kv.put("k", b"v")
        await backend.kv.delete("k")
        clock.advance(GRACE + 1)
        assert await collect(backend) == 1
        # The other opener creates keys: the key it re-creates, and new ones,
        # all start above the floor the first one raised.
        assert await other.kv.put("k", b"w", expect_version=0) == 5
        assert await other.kv.incr("counter") == 1
        item = await other.kv.get("counter")
        assert item is not None and item.version == 5
        with pytest.raises(VersionConflictError):
            await other.kv.put("k", b"stale", expect_version=4)
    finally:
        await other.close()
