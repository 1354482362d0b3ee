"""Change streams: records in the outbox with the write, relayed to the Log exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from reflow.backends import Backend, Log, LogEntry, PendingEntry
from reflow.errors import ConditionFailedError
from reflow.state import StreamConsumer, StreamRecord, StreamRelay, Table, attr, to_event
from reflow.state.keys import outbox_prefix
from reflow.state.streams import stream_name
from reflow.testing import FakeClock


@pytest.fixture
def articles(backend: Backend, clock: FakeClock) -> Table:
    return Table(
        "articles", backend.kv, key="id", ttl_attribute="expires", stream=True, clock=clock
    )


def relay_for(backend: Backend, clock: FakeClock, **options: Any) -> StreamRelay:
    return StreamRelay(backend.kv, backend.log, "articles", clock=clock, **options)


async def relayed(backend: Backend) -> list[StreamRecord]:
    entries = await backend.log.range(stream_name("articles"))
    return [StreamRecord.from_bytes(e.data, entry_id=e.id) for e in entries]


async def test_each_write_kind_produces_its_record_with_both_images(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    await articles.put({"id": "a", "v": 1})
    await articles.update("a", set={"v": 2})
    await articles.delete("a")
    assert await relay_for(backend, clock).pump() == 3
    records = await relayed(backend)
    assert [r.event_name for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert [(r.old, r.new) for r in records] == [
        (None, {"id": "a", "v": 1}),
        ({"id": "a", "v": 1}, {"id": "a", "v": 2}),
        ({"id": "a", "v": 2}, None),
    ]
    assert all(r.keys == {"id": "a"} for r in records)
    sequences = [r.sequence for r in records]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3


async def test_refused_or_unchanged_writes_produce_no_record(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    await articles.put({"id": "a", "v": 1})
    with pytest.raises(ConditionFailedError):
        await articles.put({"id": "a", "v": 9}, condition=attr("id").not_exists())
    await articles.put({"id": "a", "v": 1})  # identical: nothing changes
    await articles.delete("missing")
    assert await relay_for(backend, clock).pump() == 1


async def test_unstreamed_table_writes_no_outbox(backend: Backend, clock: FakeClock) -> None:
    plain = Table("articles", backend.kv, stream=False, clock=clock)
    await plain.put({"id": "a"})
    assert await backend.kv.scan(outbox_prefix("articles")) == []


async def test_transaction_records_every_item_it_changed(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    from reflow.state import DeleteOp, PutOp, UpdateOp

    await articles.put({"id": "gone"})
    await articles.transact([PutOp({"id": "x"}), UpdateOp("y", add={"n": 1}), DeleteOp("gone")])
    await relay_for(backend, clock).pump()
    names = [(r.event_name, r.keys["id"]) for r in await relayed(backend)]
    assert names == [("INSERT", "gone"), ("INSERT", "x"), ("INSERT", "y"), ("REMOVE", "gone")]


async def test_ttl_expiry_emits_a_remove_marked_expired(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    await articles.put({"id": "s", "expires": clock.time() + 5})
    clock.advance(6)
    assert await articles.expire() == 1
    await relay_for(backend, clock).pump()
    last = (await relayed(backend))[-1]
    assert (last.event_name, last.expired, last.old) == (
        "REMOVE",
        True,
        {"id": "s", "expires": clock.time() - 1},
    )


async def test_outbox_is_empty_and_nothing_is_relayed_twice(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    relay = relay_for(backend, clock, batch=3)
    for n in range(10):
        await articles.put({"id": f"i{n}"})
    assert await relay.pump() == 10
    assert await relay.pump() == 0
    assert await backend.kv.scan(outbox_prefix("articles")) == []
    assert len(await relayed(backend)) == 10


class CrashingLog:
    """A Log whose appends succeed and then, after ``survive`` of them, raise.

    It models a relay process dying after writing to the Log but before its
    bookkeeping transaction: the exact crash window the outbox must close.
    """

    def __init__(self, inner: Log, survive: int) -> None:
        self.inner = inner
        self.survive = survive

    async def append(self, stream: str, data: bytes) -> str:
        entry_id = await self.inner.append(stream, data)
        self.survive -= 1
        if self.survive < 0:
            raise ConnectionError("relay died after appending")
        return entry_id

    async def append_many(self, stream: str, items: Sequence[bytes]) -> list[str]:
        ids = await self.inner.append_many(stream, items)
        self.survive -= len(items)
        if self.survive < 0:
            raise ConnectionError("relay died after appending")
        return ids

    # The rest of the Log protocol passes straight through.

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        return await self.inner.create_group(stream, group, start=start)

    async def read(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 10,
        lease: float = 30.0,
        block: float = 0.0,
    ) -> list[LogEntry]:
        return await self.inner.read(stream, group, consumer, count=count, lease=lease, block=block)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        return await self.inner.ack(stream, group, ids)

    async def pending(
        self, stream: str, group: str, *, count: int = 100, consumer: str | None = None
    ) -> list[PendingEntry]:
        return await self.inner.pending(stream, group, count=count, consumer=consumer)

    async def range(
        self, stream: str, *, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[LogEntry]:
        return await self.inner.range(stream, start=start, end=end, count=count)

    async def length(self, stream: str) -> int:
        return await self.inner.length(stream)

    async def trim(
        self, stream: str, *, max_length: int | None = None, max_age: float | None = None
    ) -> int:
        return await self.inner.trim(stream, max_length=max_length, max_age=max_age)

    async def delete_stream(self, stream: str) -> bool:
        return await self.inner.delete_stream(stream)


@pytest.mark.parametrize("survive", [0, 2, 4, 6])
async def test_relay_crash_after_append_never_duplicates_or_loses(
    backend: Backend, articles: Table, clock: FakeClock, survive: int
) -> None:
    for n in range(8):
        await articles.update(f"i{n % 3}", add={"n": 1})
    crashing = StreamRelay(
        backend.kv, CrashingLog(backend.log, survive), "articles", clock=clock, batch=4, lease=0.5
    )
    with pytest.raises(ConnectionError):
        await crashing.pump()
    # The dead relay's lease is released by its finally; a new relay takes over.
    await relay_for(backend, clock).pump()
    records = await relayed(backend)
    assert sorted(r.sequence for r in records) == sorted({r.sequence for r in records})
    assert len(records) == 8
    for item in ("i0", "i1", "i2"):
        counts = [r.new["n"] for r in records if r.keys["id"] == item and r.new]
        assert counts == list(range(1, len(counts) + 1))


async def test_relay_does_nothing_while_another_holds_the_lease(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    await articles.put({"id": "a"})
    await backend.kv.put("t/articles/relay-lease", b"1", expect_version=0, ttl=30)
    assert await relay_for(backend, clock).pump() == 0
    assert len(await backend.kv.scan(outbox_prefix("articles"))) == 1


async def test_concurrent_writers_keep_per_item_order(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    async def bump(item: str) -> None:
        for _ in range(10):
            await articles.update(item, add={"n": 1})

    await asyncio.gather(*(bump(f"i{k}") for k in range(3) for _ in range(3)))
    await relay_for(backend, clock).pump()
    records = await relayed(backend)
    assert len(records) == 90
    for k in range(3):
        counts = [r.new["n"] for r in records if r.keys["id"] == f"i{k}" and r.new]
        assert counts == list(range(1, 31))


async def test_retention_trims_old_records(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    relay = relay_for(backend, clock, retention=0.05)
    await articles.put({"id": "old"})
    await relay.pump()
    clock.advance(1)
    await asyncio.sleep(0.1)  # Redis trims on its own server clock
    await articles.put({"id": "new"})
    await relay.pump()
    assert [r.keys["id"] for r in await relayed(backend)] == ["new"]


async def test_consumer_resumes_unacknowledged_records_in_order(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    for n in range(5):
        await articles.put({"id": f"i{n}"})
    await relay_for(backend, clock).pump()
    first = StreamConsumer(backend.log, "articles", group="g", consumer="c1", lease=0.2)
    batch = await first.read(3)
    await first.ack(batch[:1])  # dies holding two unacknowledged
    second = StreamConsumer(backend.log, "articles", group="g", consumer="c2", lease=0.2)
    # Reading past the held records would break per-item order: nothing comes.
    assert await second.read(10) == []
    clock.advance(1)
    await asyncio.sleep(0.3)  # Redis leases run on the server clock
    seen: list[StreamRecord] = []
    while await second.process(seen.append, count=10):
        pass
    assert [r.keys["id"] for r in seen] == ["i1", "i2", "i3", "i4"]
    assert [r.deliveries for r in seen[:2]] == [2, 2]


async def test_failing_handler_leaves_the_rest_for_redelivery(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    for n in range(3):
        await articles.put({"id": f"i{n}"})
    await relay_for(backend, clock).pump()
    consumer = StreamConsumer(backend.log, "articles", group="g", consumer="c", lease=30)
    done: list[str] = []

    async def handler(record: StreamRecord) -> None:
        if record.keys["id"] == "i1":
            raise RuntimeError("render failed")
        done.append(record.keys["id"])

    with pytest.raises(RuntimeError):
        await consumer.process(handler)
    assert done == ["i0"]
    pending = await backend.log.pending(stream_name("articles"), "g")
    assert len(pending) == 2


def test_record_becomes_an_eventbridge_event() -> None:
    record = StreamRecord(
        "articles", "MODIFY", {"id": "a"}, {"id": "a", "v": 1}, {"id": "a", "v": 2}, 7, 0.0
    )
    event = to_event(record, region="eu")
    assert event["source"] == "reflow.tables"
    assert event["detail-type"] == "Item Modified"
    assert event["resources"] == ["table/articles"]
    assert event["time"] == "1970-01-01T00:00:00Z"
    assert event["region"] == "eu"
    assert event["detail"]["newImage"] == {"id": "a", "v": 2}
    assert event["detail"]["sequenceNumber"] == "7"
    assert to_event(record)["id"] == event["id"]  # redelivery is the same event
    other = StreamRecord("articles", "INSERT", {"id": "b"}, None, {"id": "b"}, 8, 0.0)
    assert to_event(other)["detail-type"] == "Item Inserted"
    assert to_event(other)["id"] != event["id"]


def test_record_survives_its_byte_form() -> None:
    record = StreamRecord("t", "REMOVE", {"id": 1}, {"id": 1}, None, 3, 12.5, expired=True)
    assert StreamRecord.from_bytes(record.to_bytes()) == record


async def test_unordered_consumers_share_a_group_in_parallel(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    for n in range(4):
        await articles.put({"id": f"i{n}"})
    await relay_for(backend, clock).pump()
    one = StreamConsumer(backend.log, "articles", group="g", consumer="a", ordered=False)
    two = StreamConsumer(backend.log, "articles", group="g", consumer="b", ordered=False)
    first, second = await one.read(2), await two.read(2)
    assert [r.keys["id"] for r in first + second] == ["i0", "i1", "i2", "i3"]


async def test_rewriting_an_expired_item_records_its_removal_first(
    backend: Backend, articles: Table, clock: FakeClock
) -> None:
    await articles.put({"id": "s", "expires": clock.time() + 5, "v": 1})
    clock.advance(10)
    await articles.put({"id": "s", "v": 2})
    await relay_for(backend, clock).pump()
    records = await relayed(backend)
    assert [(r.event_name, r.expired) for r in records] == [
        ("INSERT", False),
        ("REMOVE", True),
        ("INSERT", False),
    ]
    assert records[2].old is None and records[2].new == {"id": "s", "v": 2}
