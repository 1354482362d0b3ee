"""Global tables in one process: three regions on memory backends and a FakeClock.

Derived from the issue's rules for global tables: last writer wins by hybrid
logical clock, ties broken by region id; deletes are tombstones until every
region has seen them; replicated writes never re-replicate; apply is
idempotent; a region cut off catches up; lag is measured from stamp to apply.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends.memory import MemoryKV, MemoryLog
from reflow.errors import ConditionFailedError, InvalidItemError
from reflow.state.conditions import attr
from reflow.state.hlc import HLC
from reflow.state.replication import GlobalTable, Region, Replicator
from reflow.testing import FakeClock

NAMES = ("ap", "eu", "us")


class World:
    """Three regions, each with its own KV and Log, a global table and a replicator."""

    def __init__(self, clock: FakeClock, *, in_flight: float = 60.0) -> None:
        self.clock = clock
        self.regions = {n: Region(n, MemoryKV(clock), MemoryLog(clock)) for n in NAMES}
        self.tables = {
            n: GlobalTable("articles", n, r.kv, clock=clock) for n, r in self.regions.items()
        }
        self.replicators = {
            n: Replicator(
                self.tables[n],
                self.regions[n],
                {p: r for p, r in self.regions.items() if p != n},
                clock=clock,
                in_flight=in_flight,
            )
            for n in NAMES
        }

    async def sync(self, *names: str) -> None:
        for name in names or NAMES:
            await self.replicators[name].step()

    async def raw(self, name: str) -> list[dict[str, object]]:
        return await self.tables[name].raw_items()


@pytest.fixture
def world() -> World:
    return World(FakeClock())


async def test_reads_hide_the_stamp_and_origin_attributes(world: World) -> None:
    eu = world.tables["eu"]
    await eu.put({"id": "a", "title": "hello"})
    assert await eu.get("a") == {"id": "a", "title": "hello"}
    (raw,) = await eu.raw_items()
    assert raw["_origin"] == "eu"
    assert HLC.parse(str(raw["_hlc"])).region == "eu"


async def test_a_reserved_attribute_in_a_write_is_rejected_by_name(world: World) -> None:
    with pytest.raises(InvalidItemError) as caught:
        await world.tables["eu"].put({"id": "a", "_hlc": "x"})
    assert "_hlc" in str(caught.value)


async def test_a_write_in_one_region_reaches_every_other(world: World) -> None:
    await world.tables["eu"].put({"id": "a", "n": 1})
    await world.sync()
    for name in NAMES:
        assert await world.tables[name].get("a") == {"id": "a", "n": 1}


async def test_update_and_delete_replicate(world: World) -> None:
    await world.tables["eu"].put({"id": "a", "n": 1, "tag": "x"})
    await world.sync()
    await world.tables["us"].update("a", set={"n": 2}, remove=("tag",))
    await world.sync()
    assert await world.tables["ap"].get("a") == {"id": "a", "n": 2}
    await world.tables["ap"].delete("a")
    await world.sync()
    for name in NAMES:
        assert await world.tables[name].get("a") is None
        assert await world.tables[name].scan_all() == []


async def test_a_condition_is_checked_against_the_local_copy(world: World) -> None:
    eu = world.tables["eu"]
    await eu.put({"id": "a", "stock": 0})
    with pytest.raises(ConditionFailedError) as caught:
        await eu.update("a", set={"stock": -1}, condition=attr("stock") >= 1)
    assert caught.value.item == {"id": "a", "stock": 0}


async def test_concurrent_conflicting_writes_converge_on_the_later_stamp(world: World) -> None:
    await world.tables["eu"].put({"id": "a", "by": "eu"})
    world.clock.advance(0.010)
    await world.tables["us"].put({"id": "a", "by": "us"})  # later by 10 ms
    await world.sync()
    for name in NAMES:
        assert await world.tables[name].get("a") == {"id": "a", "by": "us"}


async def test_a_tie_on_time_is_won_by_the_greater_region_id(world: World) -> None:
    # Same millisecond, same counter: the stamps differ only in region id.
    await world.tables["us"].put({"id": "a", "by": "us"})
    await world.tables["ap"].put({"id": "a", "by": "ap"})
    await world.tables["eu"].put({"id": "a", "by": "eu"})
    await world.sync()
    await world.sync()
    for name in NAMES:
        assert await world.tables[name].get("a") == {"id": "a", "by": "us"}


async def test_a_delete_beats_an_older_write_that_arrives_after_it(world: World) -> None:
    await world.tables["ap"].put({"id": "a", "v": "old"})  # not yet shipped
    world.clock.advance(0.005)
    await world.tables["eu"].put({"id": "a", "v": "new"})
    await world.tables["eu"].delete("a")
    await world.sync("us")  # us hears of eu's delete first, then ap's older write
    await world.sync()
    for name in NAMES:
        assert await world.tables[name].get("a") is None
    assert {r["_deleted"] for n in NAMES for r in await world.raw(n)} == {True}


async def test_replicated_writes_are_not_shipped_again(world: World) -> None:
    await world.tables["eu"].put({"id": "a"})
    await world.sync("us")  # us applies eu's write; it is in us's stream too
    await world.sync("ap")
    ap = world.replicators["ap"]
    assert ap.applied == 1  # from eu only; the copy in us's stream was skipped
    await world.sync()
    assert world.replicators["eu"].applied == 0


async def test_applying_the_same_image_twice_changes_nothing(world: World) -> None:
    await world.tables["eu"].put({"id": "a", "n": 1})
    (image,) = await world.raw("eu")
    us = world.tables["us"]
    assert await us.apply(image) is True
    assert await us.apply(image) is False
    assert await world.raw("us") == [image]


async def test_a_region_cut_off_catches_up_from_where_it_stopped(world: World) -> None:
    for n in range(5):
        await world.tables["eu"].put({"id": f"k{n}", "n": n})
    await world.sync()
    # ap is cut off: its replicator does not run while eu and us keep writing.
    for n in range(5, 30):
        await world.tables["eu" if n % 2 else "us"].put({"id": f"k{n}", "n": n})
        await world.tables["ap"].put({"id": f"k{n}", "n": -n})  # conflicting, earlier
        world.clock.advance(0.001)
    await world.sync("eu", "us")
    applied_before = world.replicators["ap"].applied
    await world.sync("ap")
    await world.sync()
    # ap applied only what it missed (25 new writes), not the 5 it had.
    assert world.replicators["ap"].applied - applied_before == 25
    rows = [await world.raw(n) for n in NAMES]
    assert rows[0] == rows[1] == rows[2]
    assert len(rows[0]) == 30


async def test_tombstones_are_kept_until_every_region_has_seen_them(world: World) -> None:
    await world.tables["eu"].put({"id": "a"})
    await world.sync()
    await world.tables["eu"].delete("a")
    await world.sync("us", "eu")  # ap has not seen the delete
    world.clock.advance(3600)
    for name in ("eu", "us"):
        assert await world.replicators[name].collect() == 0
    assert len(await world.raw("eu")) == 1  # the tombstone is still there
    await world.sync("ap")
    await world.sync()  # every pair drained after the delete
    world.clock.advance(61)
    assert [await world.replicators[n].collect() for n in NAMES] == [1, 1, 1]
    for name in NAMES:
        assert await world.raw(name) == []


async def test_a_tombstone_within_the_in_flight_grace_is_kept(world: World) -> None:
    await world.tables["eu"].put({"id": "a"})
    await world.tables["eu"].delete("a")
    await world.sync()
    await world.sync()
    assert await world.replicators["eu"].collect() == 0


async def test_lag_is_apply_time_minus_the_write_stamp(world: World) -> None:
    for n in range(10):
        await world.tables["eu"].put({"id": f"k{n}"})
    world.clock.advance(2.0)
    await world.sync("us")
    stats = world.replicators["us"].lag()
    assert stats.count == 10
    assert stats.p50 == pytest.approx(2.0)
    assert stats.p99 == pytest.approx(2.0)
    metrics = world.replicators["us"].metrics()
    assert metrics["replication_lag_p99_seconds"] == pytest.approx(2.0)
    assert metrics["replication_applied_total"] == 10


# -- property: order and duplicates do not matter --------------------------------------

_images = st.lists(
    st.builds(
        lambda key, wall, counter, region, deleted, value: {
            "id": key,
            "_hlc": str(HLC(wall, counter, region)),
            "_origin": region,
            **({"_deleted": True} if deleted else {"value": value}),
        },
        st.sampled_from(["a", "b", "c"]),
        st.integers(1_700_000_000_000, 1_700_000_000_005),
        st.integers(0, 2),
        st.sampled_from(NAMES),
        st.booleans(),
        st.integers(0, 9),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda image: (image["id"], image["_hlc"]),
)


@settings(max_examples=60, deadline=None)
@given(_images, st.randoms(use_true_random=False), st.integers(0, 6))
def test_any_order_with_duplicates_converges_to_the_latest_stamp_per_item(
    images: list[dict[str, object]], rng: random.Random, duplicates: int
) -> None:
    async def replay(order: list[dict[str, object]]) -> list[dict[str, object]]:
        clock = FakeClock()
        table = GlobalTable("articles", "zz", MemoryKV(clock), clock=clock)
        for image in order:
            await table.apply(image)
        return await table.raw_items()

    shuffled = list(images) + [rng.choice(images) for _ in range(duplicates)]
    rng.shuffle(shuffled)

    async def both() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        return await replay(list(images)), await replay(shuffled)

    results = asyncio.run(both())
    latest = {
        key: max(group, key=lambda image: HLC.parse(str(image["_hlc"])))
        for key, group in itertools.groupby(
            sorted(images, key=lambda image: str(image["id"])), key=lambda image: image["id"]
        )
    }
    assert results[0] == results[1] == [latest[key] for key in sorted(latest)]


async def test_a_running_replicator_collects_tombstones_on_its_period(world: World) -> None:
    await world.tables["eu"].put({"id": "a"})
    await world.tables["eu"].delete("a")
    await world.sync()
    await world.sync()
    world.clock.advance(120)  # past the in-flight grace
    await world.sync()  # every pair drained again, after the delete's grace
    world.clock.advance(61)
    eu = Replicator(
        world.tables["eu"],
        world.regions["eu"],
        {p: world.regions[p] for p in ("ap", "us")},
        clock=world.clock,
        collect_every=10,
    )
    running = asyncio.create_task(eu.run(interval=1))
    try:
        for _ in range(5):  # 5 s: not yet a collection period
            await _turns()
            world.clock.advance(1)
        await _turns()
        assert len(await world.raw("eu")) == 1
        assert eu.applied == 0 and world.clock.sleepers >= 1  # it ran, and is sleeping
        for _ in range(20):
            await _turns()
            world.clock.advance(1)
            if not await world.raw("eu"):
                break
        assert await world.raw("eu") == []
    finally:
        eu.stop()
        world.clock.advance(1)
        await running


async def _turns(count: int = 50) -> None:
    for _ in range(count):
        await asyncio.sleep(0)
