"""The execution store: history split between chunks and the record's tail reads back whole."""

from __future__ import annotations

import pytest

from reflow.backends import memory_backend
from reflow.flows.store import FLUSH_EVENTS, ExecutionRecord, ExecutionStore, FencedError


def record() -> ExecutionRecord:
    return ExecutionRecord(name="e", flow="f", id="id", input={}, state="A", state_input={})


async def test_history_reads_back_every_event_once_in_order_across_chunks_and_tail() -> None:
    backend = memory_backend()
    store = ExecutionStore(backend.kv)
    current, version = record(), 0
    written = 0
    for _ in range(13):
        events = [{"type": f"E{written + i}", "timestamp": 0.0, "details": {}} for i in range(3)]
        written += len(events)
        version = await store.save(current, version, events)
        history = await store.history("e")
        assert [event["type"] for event in history] == [f"E{i}" for i in range(written)]
        assert [event["id"] for event in history] == list(range(1, written + 1))
    assert written > 2 * FLUSH_EVENTS  # chunks were written, and a tail remains
    loaded = await store.load("e")
    assert loaded is not None and 0 < loaded[0].tail_count < FLUSH_EVENTS
    await backend.close()


async def test_a_save_at_a_stale_version_is_fenced_and_leaves_the_record_as_it_was() -> None:
    backend = memory_backend()
    store = ExecutionStore(backend.kv)
    first = record()
    version = await store.save(first, 0, [{"type": "A", "timestamp": 0.0, "details": {}}])
    stale = record()
    with pytest.raises(FencedError):
        await store.save(stale, 0, [{"type": "B", "timestamp": 0.0, "details": {}}])
    assert (stale.events, stale.tail, stale.tail_count) == (0, b"", 0)
    assert [event["type"] for event in await store.history("e")] == ["A"]
    assert (await store.load("e")) is not None and version == 1
    await backend.close()
