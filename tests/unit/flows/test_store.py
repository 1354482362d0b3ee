"""The execution store: history split between chunks and the record's tail reads back whole."""

from __future__ import annotations

import json

import pytest

from reflow.backends import memory_backend
from reflow.flows.store import (
    FLUSH_EVENTS,
    ExecutionRecord,
    ExecutionStore,
    FencedError,
    execution_arn,
)


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


async def test_a_record_in_the_older_object_form_reads_back_with_its_history() -> None:
    backend = memory_backend()
    store = ExecutionStore(backend.kv)
    fields = {**record().__dict__, "events": 2, "seq": 1}
    for private in ("tail", "tail_count", "_fixed"):
        fields.pop(private, None)
    older = {
        "record": fields,
        "tail": [
            {"type": "ExecutionStarted", "timestamp": 1.0, "details": {"input": {}}},
            {"type": "PassStateEntered", "timestamp": 2.0, "details": {"name": "A", "input": {}}},
        ],
    }
    await backend.kv.put("flows/x/e", json.dumps(older).encode())
    loaded = await store.load("e")
    assert loaded is not None
    current, version = loaded
    assert (current.name, current.id, current.seq, current.tail_count) == ("e", "id", 1, 2)
    current.seq += 1
    await store.save(current, version, [["PassStateExited", 3.0, "A", "output", {"x": 1}]])
    history = await store.history("e")
    assert [event["type"] for event in history] == [
        "ExecutionStarted",
        "PassStateEntered",
        "PassStateExited",
    ]
    assert history[2]["details"] == {"name": "A", "output": {"x": 1}}
    await backend.close()


async def test_a_record_with_small_state_stays_under_a_kilobyte_as_its_history_grows() -> None:
    # A SQLite row over about 1 KB spills onto an overflow page: a second page write
    # on every transition. The history tail moves to a chunk before that.
    backend = memory_backend()
    store = ExecutionStore(backend.kv)
    current = ExecutionRecord(
        name="n" * 80,
        flow="publish",
        id=execution_arn("publish", "n" * 80),
        input={"article": 7},
        state="S0",
        state_input={"article": 7},
    )
    version = 0
    for index in range(200):
        value = {"article": 7, "last": index}
        events = [
            ["PassStateEntered", 1.7e9 + index, f"S{index}", "input", value],
            ["PassStateExited", 1.7e9 + index, f"S{index}", "output", value],
        ]
        current.seq += 1
        current.state, current.state_input = f"S{index + 1}", value
        version = await store.save(current, version, events)
        stored = await backend.kv.get("flows/x/" + "n" * 80)
        assert stored is not None and len(stored.value) < 900
    history = await store.history("n" * 80)
    assert len(history) == 400
    assert history[-1]["details"] == {"name": "S199", "output": {"article": 7, "last": 199}}
    await backend.close()
