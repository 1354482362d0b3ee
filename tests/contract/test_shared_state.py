"""The contract across time and across openers.

Two promises the single-object tests cannot show:

* **Time is the backend's clock.** Leases, pending idle times and TTLs read
  the ``Clock`` the backend was opened with, so a ``FakeClock`` moves them
  without any real waiting. (Entry ids, and so trimming by age, may follow
  the store's own clock: Redis stamps stream ids with the server's time.)
* **State lives in the store, not in the object.** A second ``Backend``
  opened on the same URL — what another worker process does — sees the
  first one's entries, groups, leases, keys and objects, and compare-and-set
  holds between them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from reflow.backends import Backend, Check, Put
from reflow.errors import TransactionConflictError, VersionConflictError
from reflow.testing import FakeClock
from tests.contract.conftest import reopen

# --- the backend's clock -----------------------------------------------------


async def test_a_lease_expires_when_the_backend_clock_passes_it(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    entry_id = await backend.log.append("s", b"job")
    (first,) = await backend.log.read("s", "g", "worker-1", lease=30)
    assert first.deliveries == 1
    clock.advance(29)
    assert await backend.log.read("s", "g", "worker-2", lease=30) == []
    clock.advance(2)
    (again,) = await backend.log.read("s", "g", "worker-2", lease=30)
    assert (again.id, again.deliveries) == (entry_id, 2)
    clock.advance(31)
    (third,) = await backend.log.read("s", "g", "worker-3", lease=30)
    assert (third.id, third.deliveries) == (entry_id, 3)


async def test_pending_idle_time_is_measured_on_the_backend_clock(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    await backend.log.append("s", b"x")
    await backend.log.read("s", "g", "c", lease=600)
    clock.advance(42)
    (row,) = await backend.log.pending("s", "g")
    assert row.idle == pytest.approx(42, abs=0.01)


async def test_an_acked_entry_is_never_redelivered_however_much_time_passes(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    await backend.log.append("s", b"x")
    (entry,) = await backend.log.read("s", "g", "c", lease=10)
    assert await backend.log.ack("s", "g", [entry.id]) == 1
    clock.advance(3600)
    assert await backend.log.read("s", "g", "other", lease=10) == []


async def test_a_ttl_expires_on_the_backend_clock(clocked: tuple[Backend, FakeClock]) -> None:
    backend, clock = clocked
    await backend.kv.put("session", b"s", ttl=60)
    item = await backend.kv.get("session")
    assert item is not None
    assert item.expires_at == pytest.approx(clock.time() + 60, abs=0.01)
    clock.advance(59)
    assert await backend.kv.get("session") is not None
    clock.advance(2)
    assert await backend.kv.get("session") is None
    assert await backend.kv.get_many(["session"]) == [None]
    assert await backend.kv.scan("sess") == []
    with pytest.raises(VersionConflictError):
        await backend.kv.put("session", b"t", expect_version=1)
    assert await backend.kv.put("session", b"t", expect_version=0) >= 2


async def test_a_counter_window_resets_on_the_backend_clock(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    assert await backend.kv.incr("hits", ttl=10) == 1
    clock.advance(5)
    assert await backend.kv.incr("hits", ttl=10) == 2  # the window is not extended
    clock.advance(6)
    assert await backend.kv.incr("hits", ttl=10) == 1


async def test_a_transaction_put_with_ttl_expires_on_the_backend_clock(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    await backend.kv.transact([Put("lock", b"me", expect_version=0, ttl=30)])
    with pytest.raises(TransactionConflictError):
        await backend.kv.transact([Put("lock", b"you", expect_version=0, ttl=30)])
    clock.advance(31)
    versions = await backend.kv.transact([Put("lock", b"you", expect_version=0, ttl=30)])
    assert versions[0] >= 2
    item = await backend.kv.get("lock")
    assert item is not None and item.value == b"you"


# --- a second opener ---------------------------------------------------------


async def test_a_second_opener_sees_entries_keys_and_objects(
    backend: Backend, tmp_path: Path
) -> None:
    entry_id = await backend.log.append("s", b"from-first")
    await backend.kv.put("k", b"v")
    await backend.blobs.put("dir/o.txt", b"obj", content_type="text/plain")
    other = await reopen(backend, tmp_path)
    try:
        assert [(e.id, e.data) for e in await other.log.range("s")] == [(entry_id, b"from-first")]
        item = await other.kv.get("k")
        assert item is not None and (item.value, item.version) == (b"v", 1)
        blob = await other.blobs.get("dir/o.txt")
        assert blob is not None and blob.data == b"obj"
        assert blob.info.content_type == "text/plain"
        # And back: the first sees what the second writes.
        assert await other.kv.put("k", b"w", expect_version=1) == 2
        item = await backend.kv.get("k")
        assert item is not None and item.value == b"w"
    finally:
        await other.close()


async def test_a_group_is_shared_between_openers(backend: Backend, tmp_path: Path) -> None:
    for i in range(4):
        await backend.log.append("s", str(i).encode())
    other = await reopen(backend, tmp_path)
    try:
        mine = await backend.log.read("s", "g", "a", count=2)
        theirs = await other.log.read("s", "g", "b", count=10)
        assert [e.data for e in mine] == [b"0", b"1"]
        assert [e.data for e in theirs] == [b"2", b"3"]
        rows = await other.log.pending("s", "g")
        assert [r.consumer for r in rows] == ["a", "a", "b", "b"]
        assert await other.log.ack("s", "g", [e.id for e in mine]) == 2
        assert [r.consumer for r in await backend.log.pending("s", "g")] == ["b", "b"]
    finally:
        await other.close()


async def test_append_many_from_two_openers_keeps_each_batch_whole_and_ids_unique(
    backend: Backend, tmp_path: Path
) -> None:
    other = await reopen(backend, tmp_path)
    try:
        batches = await asyncio.gather(
            *(
                (backend if i % 2 else other).log.append_many(
                    "s", [f"{i}.{j}".encode() for j in range(3)]
                )
                for i in range(10)
            )
        )
        ids = [entry_id for batch in batches for entry_id in batch]
        assert len(set(ids)) == 30
        entries = await other.log.range("s")
        assert sorted(e.id for e in entries) == sorted(ids)
        tags = [e.data.split(b".")[0] for e in entries]
        for i in range(10):
            at = tags.index(str(i).encode())
            assert tags[at : at + 3] == [str(i).encode()] * 3
        assert await backend.log.length("s") == 30
    finally:
        await other.close()


async def test_an_expired_lease_moves_to_a_consumer_of_another_opener(
    backend: Backend, tmp_path: Path
) -> None:
    entry_id = await backend.log.append("s", b"work")
    (first,) = await backend.log.read("s", "g", "dies", lease=0.2)
    other = await reopen(backend, tmp_path)
    try:
        assert await other.log.read("s", "g", "survives", lease=0.2) == []
        await asyncio.sleep(0.3)
        (again,) = await other.log.read("s", "g", "survives", lease=5)
        assert (again.id, again.deliveries, again.data) == (entry_id, 2, b"work")
        assert first.id == again.id
    finally:
        await other.close()


async def test_compare_and_set_between_openers_loses_no_update(
    backend: Backend, tmp_path: Path
) -> None:
    await backend.kv.put("counter", json.dumps([]).encode())
    other = await reopen(backend, tmp_path)

    async def writer(opener: Backend, index: int) -> None:
        while True:
            item = await opener.kv.get("counter")
            assert item is not None
            seen = json.loads(item.value)
            try:
                await opener.kv.put(
                    "counter", json.dumps([*seen, index]).encode(), expect_version=item.version
                )
                return
            except VersionConflictError:
                await asyncio.sleep(0)

    try:
        await asyncio.gather(*(writer(backend if i % 2 else other, i) for i in range(50)))
        item = await backend.kv.get("counter")
        assert item is not None
        assert sorted(json.loads(item.value)) == list(range(50))
        assert item.version == 51
    finally:
        await other.close()


async def test_concurrent_transfers_keep_the_total(backend: Backend) -> None:
    # Each transfer reads two balances and rewrites both only if neither moved:
    # all-or-nothing under contention means money is never made or lost.
    await backend.kv.put("alice", b"100")
    await backend.kv.put("bob", b"100")

    async def transfer(amount: int) -> None:
        while True:
            a, b = await backend.kv.get_many(["alice", "bob"])
            assert a is not None and b is not None
            try:
                await backend.kv.transact(
                    [
                        Put("alice", str(int(a.value) - amount).encode(), a.version),
                        Put("bob", str(int(b.value) + amount).encode(), b.version),
                    ]
                )
                return
            except TransactionConflictError:
                await asyncio.sleep(0)

    await asyncio.gather(*(transfer(amount) for amount in range(-10, 11)))
    a, b = await backend.kv.get_many(["alice", "bob"])
    assert a is not None and b is not None
    assert int(a.value) + int(b.value) == 200
    assert int(a.value) == 100  # the transfers sum to zero
    assert a.version == b.version == 22


async def test_a_check_guards_a_write_to_another_key(backend: Backend) -> None:
    await backend.kv.put("config", b"v1")
    await backend.kv.put("config", b"v2")
    with pytest.raises(TransactionConflictError) as caught:
        await backend.kv.transact([Check("config", 1), Put("derived", b"from v1")])
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("config", 1, 2)
    assert await backend.kv.get("derived") is None


async def test_a_message_reaches_a_subscriber_of_another_opener(
    backend: Backend, tmp_path: Path
) -> None:
    other = await reopen(backend, tmp_path)
    try:
        sub = await other.pubsub.subscribe("purge")
        try:
            await backend.pubsub.publish("purge", b"key:home")
            message = await sub.get(timeout=5)
            assert message is not None and (message.channel, message.data) == (
                "purge",
                b"key:home",
            )
        finally:
            await sub.close()
    finally:
        await other.close()


async def test_a_blocked_read_wakes_for_an_append_by_another_opener(
    backend: Backend, tmp_path: Path
) -> None:
    await backend.log.create_group("s", "g", start="$")
    other = await reopen(backend, tmp_path)
    try:

        async def late_append() -> str:
            await asyncio.sleep(0.1)
            return await other.log.append("s", b"late")

        task = asyncio.create_task(late_append())
        entries = await backend.log.read("s", "g", "c", block=5)
        assert [e.id for e in entries] == [await task]
    finally:
        await other.close()
