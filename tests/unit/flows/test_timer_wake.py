"""The flows service's timer loop wakes when a timer is due, not at its next poll.

The process that parks a Wait stores its timer and tells its own timer loop,
which sleeps only until the earliest timer it knows of (re-armed when an
earlier one is stored); timers other processes store are still found by the
poll. ``poll`` is set far beyond the waits here, so only the early wake can
end them in time. A manual clock (no autojump: the loops sleep on it), memory
and SQLite.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from reflow.backends import Backend
from reflow.flows.service import FlowService
from reflow.testing import FakeClock
from tests.unit.flows.helpers import until


def wait(seconds: int) -> dict[str, object]:
    return {
        "StartAt": "W",
        "States": {
            "W": {"Type": "Wait", "Seconds": seconds, "Next": "Done"},
            "Done": {"Type": "Pass", "End": True},
        },
    }


FLOWS = {"short": wait(5), "long": wait(30)}


@pytest.fixture
def backend(memory_or_sqlite: Backend) -> Backend:
    """Each test on memory and on SQLite (conftest.py)."""
    return memory_or_sqlite


def status_is(service: FlowService, name: str, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool((await service.describe(name))["status"] == status)

    return check


def parked(service: FlowService, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool((await service.describe(name)).get("waiting_for") == "timer")

    return check


async def test_a_parked_wait_ends_at_its_due_time_not_at_the_next_poll(
    backend: Backend, clock: FakeClock
) -> None:
    service = FlowService(backend, FLOWS, poll=600.0, block=0.01)
    await service.start()
    try:
        await service.start_execution("short", {}, name="s")
        await until(parked(service, "s"), "the Wait parks")
        clock.advance(5)
        await until(status_is(service, "s", "SUCCEEDED"), "the Wait ends at 5 s")
    finally:
        await service.stop()


async def test_an_earlier_timer_stored_during_the_sleep_cuts_it_short(
    backend: Backend, clock: FakeClock
) -> None:
    service = FlowService(backend, FLOWS, poll=600.0, block=0.01)
    await service.start()
    try:
        await service.start_execution("long", {}, name="l")
        await until(parked(service, "l"), "the 30 s Wait parks")
        # The timer loop now sleeps until 30 s; a 5 s Wait parks after it.
        await service.start_execution("short", {}, name="s")
        await until(parked(service, "s"), "the 5 s Wait parks")
        clock.advance(5)
        await until(status_is(service, "s", "SUCCEEDED"), "the 5 s Wait ends at 5 s")
        assert (await service.describe("l"))["status"] == "RUNNING"
        clock.advance(25)
        await until(status_is(service, "l", "SUCCEEDED"), "the 30 s Wait ends at 30 s")
    finally:
        await service.stop()


async def test_a_timer_another_process_stores_is_found_by_the_poll(
    backend: Backend, clock: FakeClock
) -> None:
    # No workers: this service only watches timers; `other` (another process) runs
    # the execution and parks it, so this one is never told of the timer.
    service = FlowService(backend, FLOWS, workers=0, poll=2.0, block=0.01)
    other = FlowService(backend, FLOWS)
    await service.start()
    try:
        await other.start_execution("short", {}, name="s")
        await other.drain()
        assert (await other.describe("s")).get("waiting_for") == "timer"
        clock.advance(5)

        async def fired() -> bool:
            return await service.store.next_timer() is None

        await until(fired, "the poll fires the timer")
        await other.drain()
        assert (await other.describe("s"))["status"] == "SUCCEEDED"
    finally:
        await service.stop()
