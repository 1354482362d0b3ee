"""Rolling deploys: a flows service hands executions of flows it lacks to one that has them.

Two services share one backend and the work queue ``flows.work``: ``new``
runs an app version with flows ``x`` and ``y``, ``old`` an older one with
``y`` only. An entry for an ``x`` execution that ``old`` takes must reach
``new`` without a restart (and without waiting for a lease), and ``old``
must not take it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend, memory_backend, open_backend
from reflow.flows import TaskContext
from reflow.flows.service import WORK_STREAM, FlowService, handoff_stream
from reflow.flows.store import InvalidExecutionRequestError
from reflow.testing import FakeClock
from tests.conftest import REDIS_URL, require_server

X = {
    "StartAt": "Pause",
    "States": {
        "Pause": {"Type": "Wait", "Seconds": 5, "Next": "Work"},
        "Work": {"Type": "Task", "Resource": "work", "End": True},
    },
}
X_NOW = {"StartAt": "Work", "States": {"Work": {"Type": "Task", "Resource": "work", "End": True}}}
Y = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "Result": "y", "End": True}}}


def work(event: Any, context: TaskContext) -> Any:
    return {"worked": event}


def redis_url() -> str:
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}prefix=test-flows-handoff-{uuid.uuid4().hex[:12]}:"


async def open_kind(kind: str, tmp_path: Path, clock: Any = None) -> Backend:
    extra = {} if clock is None else {"clock": clock}
    if kind == "memory":
        return memory_backend(clock) if clock is not None else memory_backend()
    if kind == "sqlite":
        return await open_backend(f"sqlite:///{tmp_path}/flows.db", **extra)
    return await open_backend(redis_url(), data_dir=tmp_path, **extra)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def shared(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Backend]:
    opened = await open_kind(request.param, tmp_path, clock)
    try:
        yield opened
    finally:
        await opened.close()


def versions(backend: Backend, **options: Any) -> tuple[FlowService, FlowService]:
    """(new, old): the app version with flow x, and the older one without it."""
    new = FlowService(backend, {"x": X, "y": Y}, functions={"work": work}, **options)
    old = FlowService(backend, {"y": Y}, **options)
    return new, old


async def statuses(service: FlowService, names: list[str]) -> list[str]:
    return [(await service.describe(name))["status"] for name in names]


async def test_an_entry_the_old_version_takes_is_passed_on_and_finished_by_the_new(
    shared: Backend, clock: FakeClock
) -> None:
    new, old = versions(shared, lease=60.0)
    names = [f"x-{index}" for index in range(5)]
    for name in names:
        await new.start_execution("x", {"n": name}, name=name)
    await new.start_execution("y", {}, name="y-1")
    # Only the old version reads the queue: it takes every entry, runs y's, passes x's on.
    assert await old.drain() == 6
    assert old.passed_on == {"x": 5}
    assert await statuses(old, names) == ["RUNNING"] * 5
    assert (await old.describe("y-1"))["status"] == "SUCCEEDED"
    # It never sees them again: nothing to spin on.
    assert await old.drain() == 0
    assert old.passed_on == {"x": 5}
    # The new version takes them from x's hand-off stream (no lease, no restart) ...
    assert await new.drain() == 5
    assert await statuses(new, names) == ["RUNNING"] * 5  # ... and they wait 5 s.
    # The old version fires their timers and passes the wakes on again; the new finishes.
    clock.advance(5)
    assert await old.drain() == 5
    assert old.passed_on == {"x": 10}
    assert await new.drain() == 5
    assert await statuses(new, names) == ["SUCCEEDED"] * 5
    assert (await new.describe("x-0"))["output"] == {"worked": {"n": "x-0"}}
    assert new.passed_on == {}
    assert await new.drain() == 0


async def test_a_hand_off_taken_by_a_service_that_died_is_redelivered_after_its_lease(
    shared: Backend, clock: FakeClock
) -> None:
    new, old = versions(shared, lease=30.0)
    await new.start_execution("x", {}, name="orphan")
    await old.drain()
    # A service with flow x takes the hand-off and dies before it acknowledges it.
    taken = await shared.log.read(handoff_stream("x"), "flow-workers", "dead", lease=30.0)
    assert [entry.data for entry in taken] == [b"orphan"]
    survivor = FlowService(shared, {"x": X}, functions={"work": work}, lease=30.0)
    assert await survivor.drain() == 0  # still leased to the dead one
    clock.advance(29)
    assert await survivor.drain() == 0
    clock.advance(1)
    assert await survivor.drain() == 1  # the lease ended: redelivered
    clock.advance(5)
    await survivor.drain()
    assert (await survivor.describe("orphan"))["status"] == "SUCCEEDED"


async def test_recovery_queues_only_the_flows_a_service_has(shared: Backend) -> None:
    new, old = versions(shared)
    await new.start_execution("x", {}, name="x-1")
    await new.start_execution("y", {}, name="y-1")
    # Their queue entries are lost (read and acknowledged by no one who ran them).
    lost = await shared.log.read(WORK_STREAM, "flow-workers", "lost", count=10)
    await shared.log.ack(WORK_STREAM, "flow-workers", [entry.id for entry in lost])
    assert len(lost) == 2
    assert await old.recover() == 1  # y-1 only: x-1 is for the services that have x
    assert old.passed_on == {}
    assert await new.recover() == 2
    await old.drain()
    await new.drain()
    assert await statuses(new, ["x-1", "y-1"]) == ["RUNNING", "SUCCEEDED"]  # x-1 waits 5 s


async def test_the_old_version_warns_once_per_flow_then_logs_quietly(
    shared: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    new, old = versions(shared)
    for index in range(3):
        await new.start_execution("x", {}, name=f"x-{index}")
    with caplog.at_level(logging.DEBUG, logger="reflow.flows"):
        await old.drain()
    passed = [record for record in caplog.records if "passed on" in record.getMessage()]
    assert [record.levelno for record in passed] == [logging.WARNING] + [logging.DEBUG] * 2
    assert "no flow 'x'" in passed[0].getMessage()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_running_services_finish_every_execution_well_inside_a_lease(
    kind: str, tmp_path: Path
) -> None:
    backend = await open_kind(kind, tmp_path)
    new = FlowService(
        backend, {"x": X_NOW, "y": Y}, functions={"work": work}, lease=60.0, poll=0.05
    )
    old = FlowService(backend, {"y": Y}, lease=60.0, poll=0.05)
    try:
        # The old version runs alone first: it takes every x entry and passes it on.
        await old.start()
        names = [f"x-{index}" for index in range(20)]
        for name in names:
            await new.start_execution("x", {"n": name}, name=name)
        await wait_for(lambda: old.passed_on["x"] >= 20, 10.0)
        assert await statuses(new, names) == ["RUNNING"] * 20
        # The new version starts: the hand-offs reach it within a poll or two.
        started = time.monotonic()
        await new.start()
        await wait_until_finished(new, names)
        first = time.monotonic() - started
        # Both running: entries land on either, and every one finishes.
        more = [f"x-more-{index}" for index in range(20)]
        started = time.monotonic()
        for name in more:
            await new.start_execution("x", {"n": name}, name=name)
        await wait_until_finished(new, more)
        second = time.monotonic() - started
        assert first < 5.0 and second < 5.0, (first, second)  # a lease is 60 s
    finally:
        await old.stop()
        await new.stop()
        await backend.close()


async def wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def wait_until_finished(service: FlowService, names: list[str]) -> None:
    deadline = time.monotonic() + 10.0
    while await statuses(service, names) != ["SUCCEEDED"] * len(names):
        assert time.monotonic() < deadline, await statuses(service, names)
        await asyncio.sleep(0.02)


async def test_the_old_version_refuses_to_redrive_a_flow_it_lacks(shared: Backend) -> None:
    new, old = versions(shared)
    await new.start_execution("x", {}, name="x-stopped")
    await new.stop_execution("x-stopped")
    with pytest.raises(InvalidExecutionRequestError) as caught:
        await old.redrive("x-stopped")
    assert "no flow 'x'" in str(caught.value)
    assert (await new.redrive("x-stopped"))["status"] == "RUNNING"
