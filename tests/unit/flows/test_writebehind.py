"""Write-behind saves (reflow.flows.writebehind): one write in flight, the next ones merged.

The writes here go to a memory KV that holds each one until the test lets
it through, standing for a SQLite or Redis write that takes a while.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends import memory_backend, open_backend
from reflow.backends.memory import MemoryKV
from reflow.backends.protocols import Operation
from reflow.flows import run
from reflow.flows.service import FlowService
from reflow.flows.store import ExecutionRecord, ExecutionStore, FencedError
from reflow.flows.writebehind import AHEAD, SaveQueue
from tests.unit.flows.test_durable_pure import counter, writes_of


class GatedKV(MemoryKV):
    """A memory KV whose writes wait for :attr:`gate`; counts the writes that landed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.writes = 0
        self.started = 0

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        ttl: float | None = None,
    ) -> int:
        self.started += 1
        await self.gate.wait()
        version = await super().put(key, value, expect_version=expect_version, ttl=ttl)
        self.writes += 1
        return version

    async def transact(self, operations: Sequence[Operation]) -> list[int]:
        self.started += 1
        await self.gate.wait()
        versions = await super().transact(operations)
        self.writes += 1
        return versions


def record() -> ExecutionRecord:
    return ExecutionRecord(name="e", flow="f", id="id", input={}, state="A", state_input={})


def events(first: int, count: int, size: int = 10) -> list[Any]:
    return [[f"E{first + i}", 0.0, {"pad": "x" * size}] for i in range(count)]


async def test_saves_queued_behind_a_write_go_out_as_one_with_every_history_chunk() -> None:
    kv = GatedKV()
    store = ExecutionStore(kv)
    phases: list[tuple[str, int]] = []
    queue = SaveQueue(store, 0, lambda phase, name, seq: phases.append((phase, seq)))
    current = record()
    kv.gate.clear()
    written = 0
    for seq in range(1, 41):
        current.seq = seq
        queue.add(store.prepare(current, events(written, 3)))
        written += 3
        await queue.pace()
    # The first save is still in flight; the 39 after it wait, merged, with their chunks.
    assert (kv.started, kv.writes) == (1, 0)
    assert phases == [("before", 1)]
    assert await store.history("e") == []
    kv.gate.set()
    version = await queue.flush()
    assert kv.writes == 2
    assert phases[1:] == [("after", 1)] + [
        (phase, seq) for phase in ("before", "after") for seq in range(2, 41)
    ]
    loaded = await store.load("e")
    assert loaded is not None and loaded[1] == version and loaded[0].seq == 40
    history = await store.history("e")
    assert [event["type"] for event in history] == [f"E{i}" for i in range(written)]
    assert [event["id"] for event in history] == list(range(1, written + 1))


async def test_a_fenced_write_drops_what_was_queued_behind_it() -> None:
    kv = GatedKV()
    store = ExecutionStore(kv)
    current = record()
    await store.save(current, 0, events(0, 1))
    queue = SaveQueue(store, 1, None)
    kv.gate.clear()
    current.seq = 1
    queue.add(store.prepare(current, events(1, 1)))
    await queue.pace()
    current.seq = 2
    queue.add(store.prepare(current, events(2, 1)))
    await queue.pace()
    # Someone else moves the record on meanwhile (a stop, say).
    await MemoryKV.put(kv, "flows/x/e", b"taken", expect_version=1)
    kv.gate.set()
    with pytest.raises(FencedError):
        await queue.flush()
    # The first save (unqueued), then the fenced one; the one merged behind it never went.
    assert (kv.started, kv.writes) == (2, 1)
    item = await kv.get("flows/x/e")
    assert item is not None and item.value == b"taken"


async def test_the_runner_waits_for_the_write_once_far_enough_ahead() -> None:
    kv = GatedKV()
    store = ExecutionStore(kv)
    queue = SaveQueue(store, 0, None)
    current = record()
    kv.gate.clear()

    async def ahead() -> int:
        for seq in range(1, 2 * AHEAD):
            current.seq = seq
            queue.add(store.prepare(current, events(seq, 1)))
            await queue.pace()
        return current.seq

    running = asyncio.ensure_future(ahead())
    for _ in range(3 * AHEAD):
        await asyncio.sleep(0)
    # One save in flight and AHEAD queued behind it: the loop waits, however long.
    assert not running.done() and current.seq == AHEAD + 1
    kv.gate.set()
    assert await running == 2 * AHEAD - 1
    await queue.flush()
    loaded = await store.load("e")
    assert loaded is not None and loaded[0].seq == 2 * AHEAD - 1


async def test_abandoning_a_queue_cancels_its_write_and_keeps_the_last_durable_record() -> None:
    kv = GatedKV()
    store = ExecutionStore(kv)
    queue = SaveQueue(store, 0, None)
    current = record()
    current.seq = 1
    queue.add(store.prepare(current, events(0, 1)))
    await queue.pace()
    await queue.flush()
    kv.gate.clear()
    current.seq = 2
    queue.add(store.prepare(current, events(1, 1)))
    await queue.pace()
    queue.abandon()
    kv.gate.set()
    await asyncio.sleep(0)
    loaded = await store.load("e")
    assert loaded is not None and loaded[0].seq == 1 and kv.writes == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 400), st.booleans()), min_size=1, max_size=60
    )
)
def test_every_landed_write_shows_a_prefix_of_the_final_history(
    steps: list[tuple[int, int, bool]],
) -> None:
    """Transitions of random event counts and sizes; the write in flight lands at random
    moments. Whatever a reader sees in between is the start of what it sees at the end."""

    async def scenario() -> None:
        kv = GatedKV()
        store = ExecutionStore(kv)
        queue = SaveQueue(store, 0, None)
        current = record()
        seen: list[list[str]] = []
        written = 0
        kv.gate.clear()
        for seq, (count, size, release) in enumerate(steps, start=1):
            current.seq = seq
            # Unencoded, as the runner prepares them: the queue encodes the newest.
            queue.add(store.prepare(current, events(written, count, size), encode=False), current)
            written += count
            if release:
                kv.gate.set()
            await queue.pace()
            kv.gate.clear()
            seen.append([event["type"] for event in await store.history("e")])
        kv.gate.set()
        await queue.flush()
        final = [event["type"] for event in await store.history("e")]
        assert final == [f"E{i}" for i in range(written)]
        for prefix in seen:
            assert final[: len(prefix)] == prefix
        loaded = await store.load("e")
        assert loaded is not None and loaded[0].seq == len(steps)

    asyncio.run(scenario())


async def test_a_choice_loop_over_slow_writes_merges_them_and_ends_as_in_memory() -> None:
    backend = memory_backend()
    kv = GatedKV()
    backend.kv = kv
    phases: list[tuple[str, int]] = []
    service = FlowService(
        backend,
        {"loop": counter(300)},
        on_persist=lambda phase, name, seq: phases.append((phase, seq)),
    )
    await service.start_execution("loop", {}, name="slow")
    writes_before = kv.writes

    async def slow_writes() -> None:
        # Each write takes a few turns of the event loop, like a real one.
        while True:
            kv.gate.clear()
            for _ in range(5):
                await asyncio.sleep(0)
            kv.gate.set()
            await asyncio.sleep(0)

    pacing = asyncio.ensure_future(slow_writes())
    try:
        await service.run_execution("slow")
    finally:
        pacing.cancel()
    expected = run(counter(300), {})
    described = await service.describe("slow")
    assert (described["status"], described["output"]) == ("SUCCEEDED", {"i": 300})
    transitions = described["transitions"]
    assert transitions == 603
    assert [event["type"] for event in await service.history("slow")] == expected.event_types()
    # Far fewer writes than transitions; every transition announced before its write
    # and reported after it, once each, in order, one write in flight at a time.
    assert kv.writes - writes_before < transitions // 2
    assert sum(map(len, writes_of(phases))) == transitions
    await backend.close()


async def test_a_runaway_choice_loop_on_sqlite_is_saved_as_it_goes_and_times_out(
    tmp_path: Path,
) -> None:
    backend = await open_backend(f"sqlite:///{tmp_path / 'flows.db'}", data_dir=tmp_path)
    seen: list[int] = []
    service = FlowService(
        backend,
        {"loop": counter(10**9, TimeoutSeconds=1)},
        on_persist=lambda phase, name, seq: seen.append(seq) if phase == "after" else None,
    )
    try:
        await service.start_execution("loop", {}, name="runaway")
        running = asyncio.ensure_future(service.run_execution("runaway"))
        await asyncio.sleep(0.5)
        # Halfway: what a reader sees is durable, and moving on (saved as it goes).
        first = await service.describe("runaway")
        await asyncio.sleep(0.1)
        second = await service.describe("runaway")
        assert first["status"] == second["status"] == "RUNNING"
        # (A read can see a write the writer thread committed before the loop ran that
        # write's "after" hook, so ``seen`` is compared only once the run is over.)
        assert 0 < first["transitions"] < second["transitions"]
        await asyncio.wait_for(running, 10)
        assert second["transitions"] <= max(seen)
        described = await service.describe("runaway")
        assert (described["status"], described["error"]) == ("TIMED_OUT", "States.Timeout")
        history = await service.history("runaway")
        assert history[-1]["type"] == "ExecutionTimedOut"
        assert [event["id"] for event in history] == list(range(1, len(history) + 1))
        assert described["transitions"] == max(seen)
    finally:
        await backend.close()


async def test_a_task_is_called_only_once_the_pure_transitions_before_it_are_durable() -> None:
    backend = memory_backend()
    kv = GatedKV()
    backend.kv = kv
    states: dict[str, Any] = {
        f"P{index}": {
            "Type": "Pass",
            "Result": index,
            "ResultPath": "$.last",
            "Next": f"P{index + 1}",
        }
        for index in range(20)
    }
    states["P20"] = {"Type": "Task", "Resource": "look", "Next": "P21"}
    states["P21"] = {"Type": "Pass", "End": True}
    seen: list[tuple[str, int, Any]] = []
    store = ExecutionStore(kv)

    async def look(event: Any, context: Any) -> Any:
        loaded = await store.load("t1")
        assert loaded is not None
        seen.append((loaded[0].state, loaded[0].seq, loaded[0].state_input))
        return event

    service = FlowService(
        backend, {"chain": {"StartAt": "P0", "States": states}}, functions={"look": look}
    )
    await service.start_execution("chain", {}, name="t1")

    async def slow_writes() -> None:
        while True:
            kv.gate.clear()
            for _ in range(5):
                await asyncio.sleep(0)
            kv.gate.set()
            await asyncio.sleep(0)

    pacing = asyncio.ensure_future(slow_writes())
    try:
        await service.run_execution("t1")
    finally:
        pacing.cancel()
    # What the task saw stored: its own state entered afresh, with the input it got.
    assert seen == [("P20", 20, {"last": 19})]
    described = await service.describe("t1")
    assert (described["status"], described["transitions"]) == ("SUCCEEDED", 22)
