"""The Log contract: streams, consumer groups, leases, acks, trimming."""

from __future__ import annotations

import asyncio

from reflow.backends import Backend, entry_id_key
from reflow.testing import FakeClock


async def test_append_returns_increasing_ids_and_range_reads_them_in_order(
    backend: Backend,
) -> None:
    ids = [await backend.log.append("s", f"e{i}".encode()) for i in range(20)]
    assert ids == sorted(ids, key=entry_id_key)
    assert len(set(ids)) == 20
    entries = await backend.log.range("s")
    assert [e.id for e in entries] == ids
    assert [e.data for e in entries] == [f"e{i}".encode() for i in range(20)]
    assert await backend.log.length("s") == 20


async def test_range_bounds_are_inclusive_and_count_limits(backend: Backend) -> None:
    ids = [await backend.log.append("s", b"x") for _ in range(5)]
    middle = await backend.log.range("s", start=ids[1], end=ids[3])
    assert [e.id for e in middle] == ids[1:4]
    first_two = await backend.log.range("s", count=2)
    assert [e.id for e in first_two] == ids[:2]
    assert await backend.log.range("empty") == []


async def test_a_group_delivers_each_entry_to_one_consumer(backend: Backend) -> None:
    for i in range(6):
        await backend.log.append("s", str(i).encode())
    a = await backend.log.read("s", "g", "a", count=4)
    b = await backend.log.read("s", "g", "b", count=4)
    assert [e.data for e in a] == [b"0", b"1", b"2", b"3"]
    assert [e.data for e in b] == [b"4", b"5"]
    assert all(e.deliveries == 1 for e in a + b)
    assert await backend.log.read("s", "g", "c", count=4) == []


async def test_groups_are_independent(backend: Backend) -> None:
    await backend.log.append("s", b"one")
    first = await backend.log.read("s", "g1", "c")
    second = await backend.log.read("s", "g2", "c")
    assert [e.data for e in first] == [b"one"]
    assert [e.data for e in second] == [b"one"]


async def test_group_created_at_dollar_sees_only_later_entries(backend: Backend) -> None:
    await backend.log.append("s", b"old")
    assert await backend.log.create_group("s", "g", start="$") is True
    assert await backend.log.create_group("s", "g", start="$") is False
    await backend.log.append("s", b"new")
    entries = await backend.log.read("s", "g", "c")
    assert [e.data for e in entries] == [b"new"]


# Lease tests run on a FakeClock: under load, real sleeps race the lease.


async def test_acked_entries_are_not_redelivered(clocked: tuple[Backend, FakeClock]) -> None:
    backend, clock = clocked
    await backend.log.append("s", b"a")
    (entry,) = await backend.log.read("s", "g", "c1", lease=20)
    assert await backend.log.ack("s", "g", [entry.id]) == 1
    assert await backend.log.ack("s", "g", [entry.id]) == 0
    clock.advance(30)
    assert await backend.log.read("s", "g", "c2", lease=20) == []
    assert await backend.log.pending("s", "g") == []


async def test_expired_lease_redelivers_to_another_consumer_with_delivery_count_2(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    entry_id = await backend.log.append("s", b"payload")
    (first,) = await backend.log.read("s", "g", "worker-1", lease=20)
    assert (first.id, first.deliveries) == (entry_id, 1)
    # Within the lease nobody else gets it.
    clock.advance(19)
    assert await backend.log.read("s", "g", "worker-2", lease=20) == []
    clock.advance(2)
    (again,) = await backend.log.read("s", "g", "worker-2", lease=5)
    assert again.id == entry_id
    assert again.data == b"payload"
    assert again.deliveries == 2
    (pending,) = await backend.log.pending("s", "g")
    assert pending.consumer == "worker-2"
    assert pending.deliveries == 2


async def test_redelivered_entries_come_before_new_ones(
    clocked: tuple[Backend, FakeClock],
) -> None:
    backend, clock = clocked
    old = await backend.log.append("s", b"old")
    await backend.log.read("s", "g", "a", lease=20)
    new = await backend.log.append("s", b"new")
    clock.advance(21)
    entries = await backend.log.read("s", "g", "b", count=10)
    assert [e.id for e in entries] == [old, new]
    assert [e.deliveries for e in entries] == [2, 1]


async def test_pending_lists_unacked_entries_oldest_first(backend: Backend) -> None:
    ids = [await backend.log.append("s", b"x") for _ in range(3)]
    await backend.log.read("s", "g", "a", count=2)
    await backend.log.read("s", "g", "b", count=2)
    rows = await backend.log.pending("s", "g")
    assert [r.id for r in rows] == ids
    assert [r.consumer for r in rows] == ["a", "a", "b"]
    assert all(r.idle >= 0 for r in rows)
    only_b = await backend.log.pending("s", "g", consumer="b")
    assert [r.id for r in only_b] == ids[2:]
    assert len(await backend.log.pending("s", "g", count=1)) == 1


async def test_blocking_read_wakes_when_an_entry_arrives(backend: Backend) -> None:
    await backend.log.create_group("s", "g", start="$")

    async def late_append() -> None:
        await asyncio.sleep(0.1)
        await backend.log.append("s", b"late")

    task = asyncio.create_task(late_append())
    entries = await backend.log.read("s", "g", "c", block=3.0)
    await task
    assert [e.data for e in entries] == [b"late"]


async def test_blocking_read_returns_empty_after_its_timeout(backend: Backend) -> None:
    await backend.log.create_group("s", "g", start="$")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await backend.log.read("s", "g", "c", block=0.2) == []
    assert loop.time() - started >= 0.15


async def test_trim_by_length_keeps_the_newest(backend: Backend) -> None:
    ids = [await backend.log.append("s", str(i).encode()) for i in range(10)]
    assert await backend.log.trim("s", max_length=3) == 7
    assert [e.id for e in await backend.log.range("s")] == ids[7:]
    assert await backend.log.length("s") == 3


async def test_trim_by_age_drops_old_entries(backend: Backend) -> None:
    await backend.log.append("s", b"old")
    await asyncio.sleep(0.3)
    newer = await backend.log.append("s", b"new")
    assert await backend.log.trim("s", max_age=0.15) == 1
    assert [e.id for e in await backend.log.range("s")] == [newer]


async def test_delete_stream_removes_entries_and_groups(backend: Backend) -> None:
    await backend.log.append("s", b"x")
    await backend.log.read("s", "g", "c")
    assert await backend.log.delete_stream("s") is True
    assert await backend.log.length("s") == 0
    assert await backend.log.pending("s", "g") == []
    assert await backend.log.delete_stream("s") is False


async def test_binary_payloads_round_trip(backend: Backend) -> None:
    blob = bytes(range(256)) * 4
    entry_id = await backend.log.append("s", blob)
    (entry,) = await backend.log.read("s", "g", "c")
    assert (entry.id, entry.data) == (entry_id, blob)


async def test_trim_to_zero_empties_the_stream_and_ids_keep_increasing(backend: Backend) -> None:
    ids = [await backend.log.append("s", b"x") for _ in range(4)]
    assert await backend.log.trim("s", max_length=0) == 4
    assert await backend.log.length("s") == 0
    assert await backend.log.range("s") == []
    later = await backend.log.append("s", b"y")
    assert entry_id_key(later) > entry_id_key(ids[-1])
    assert await backend.log.length("s") == 1


async def test_trim_within_the_length_drops_nothing(backend: Backend) -> None:
    for _ in range(3):
        await backend.log.append("s", b"x")
    assert await backend.log.trim("s", max_length=3) == 0
    assert await backend.log.trim("s", max_length=10) == 0
    assert await backend.log.trim("missing", max_length=1) == 0
    assert await backend.log.length("s") == 3


async def test_length_follows_appends_and_trims(backend: Backend) -> None:
    assert await backend.log.length("s") == 0
    for i in range(1, 8):
        await backend.log.append("s", b"x")
        assert await backend.log.length("s") == i
    await backend.log.trim("s", max_length=5)
    assert await backend.log.length("s") == 5
    await backend.log.trim("s", max_length=2)
    assert await backend.log.length("s") == 2


async def test_a_pending_entry_trimmed_away_is_not_redelivered(backend: Backend) -> None:
    first = await backend.log.append("s", b"old")
    (held,) = await backend.log.read("s", "g", "a", lease=0.2)
    assert held.id == first
    kept = await backend.log.append("s", b"new")
    await backend.log.trim("s", max_length=1)
    await asyncio.sleep(0.35)
    entries = await backend.log.read("s", "g", "b", count=10)
    assert [e.id for e in entries] == [kept]


async def test_many_trimmed_pending_entries_do_not_hide_a_live_one(backend: Backend) -> None:
    ids = [await backend.log.append("s", str(i).encode()) for i in range(6)]
    assert len(await backend.log.read("s", "g", "a", count=6, lease=0.2)) == 6
    await backend.log.trim("s", max_length=1)  # five pending entries lose their data
    await asyncio.sleep(0.35)
    entries = await backend.log.read("s", "g", "b", count=2)
    assert [(e.id, e.data, e.deliveries) for e in entries] == [(ids[5], b"5", 2)]


async def test_cancelling_a_blocked_read_as_an_entry_arrives_cancels_it(backend: Backend) -> None:
    # The race that asyncio.wait_for loses on 3.11: the wake-up and the
    # cancellation land in the same loop turn. The read must still end.
    reader = asyncio.create_task(backend.log.read("s", "g", "c", block=5))
    await asyncio.sleep(0.05)
    await backend.log.append("s", b"x")
    reader.cancel()
    done, _ = await asyncio.wait({reader}, timeout=2)
    assert done, "the cancelled read kept running"
    assert reader.cancelled()


async def test_append_many_returns_the_ids_in_order_after_earlier_appends(
    backend: Backend,
) -> None:
    first = await backend.log.append("s", b"before")
    ids = await backend.log.append_many("s", [f"m{i}".encode() for i in range(5)])
    last = await backend.log.append("s", b"after")
    assert len(ids) == 5 and len(set(ids)) == 5
    assert [first, *ids, last] == sorted([first, *ids, last], key=entry_id_key)
    entries = await backend.log.range("s")
    assert [e.id for e in entries] == [first, *ids, last]
    assert [e.data for e in entries] == [b"before", *(f"m{i}".encode() for i in range(5)), b"after"]
    assert await backend.log.length("s") == 7


async def test_append_many_of_nothing_writes_nothing(backend: Backend) -> None:
    assert await backend.log.append_many("s", []) == []
    assert await backend.log.length("s") == 0
    assert await backend.log.range("s") == []


async def test_append_many_entries_are_read_by_a_group_like_single_appends(
    backend: Backend,
) -> None:
    await backend.log.create_group("s", "g", start="$")
    ids = await backend.log.append_many("s", [b"\x00a", b"\xffb", b"c"])
    entries = await backend.log.read("s", "g", "c", count=10)
    assert [(e.id, e.data, e.deliveries) for e in entries] == [
        (ids[0], b"\x00a", 1),
        (ids[1], b"\xffb", 1),
        (ids[2], b"c", 1),
    ]
    assert await backend.log.ack("s", "g", ids) == 3


async def test_a_blocking_read_wakes_on_append_many(backend: Backend) -> None:
    await backend.log.create_group("s", "g", start="$")

    async def late() -> None:
        await asyncio.sleep(0.1)
        await backend.log.append_many("s", [b"one", b"two"])

    task = asyncio.create_task(late())
    entries = await backend.log.read("s", "g", "c", count=5, block=3.0)
    await task
    # Both arrive together: a reader never sees half of a batch.
    assert [e.data for e in entries] == [b"one", b"two"]


async def test_concurrent_append_many_batches_stay_contiguous(backend: Backend) -> None:
    async def batch(tag: int) -> list[str]:
        return await backend.log.append_many("s", [f"{tag}.{i}".encode() for i in range(4)])

    async def single(tag: int) -> str:
        return await backend.log.append("s", f"single.{tag}".encode())

    await asyncio.gather(*(batch(t) for t in range(6)), *(single(t) for t in range(6)))
    tags = [e.data.decode().split(".")[0] for e in await backend.log.range("s")]
    assert len(tags) == 30
    for tag in map(str, range(6)):
        at = tags.index(tag)
        assert tags[at : at + 4] == [tag] * 4, tags


async def test_append_many_takes_more_items_than_one_round_trip_carries(
    backend: Backend,
) -> None:
    items = [str(i).encode() for i in range(2500)]
    ids = await backend.log.append_many("s", items)
    assert len(set(ids)) == 2500
    assert ids == sorted(ids, key=entry_id_key)
    assert [e.data for e in await backend.log.range("s")] == items
    assert await backend.log.length("s") == 2500
