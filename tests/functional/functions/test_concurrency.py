"""Provisioned and reserved concurrency, and retiring idle workers."""

from __future__ import annotations

import asyncio

import pytest

from reflow.errors import FunctionCrashedError, ThrottledError
from reflow.functions import Runtime
from reflow.functions.pools import ProcessPool
from reflow.testing.clock import FakeClock
from tests.functional.functions.sample_app import app


async def test_provisioned_four_serve_four_concurrent_calls_with_zero_cold_starts(
    runtime: Runtime,
) -> None:
    pids = await asyncio.gather(*(runtime.invoke("warm", {"hold": 0.2}) for _ in range(4)))
    assert len(set(pids)) == 4
    assert runtime.metrics["warm"].cold_starts == 0
    assert runtime.metrics["warm"].max_concurrent == 4


async def test_a_fifth_concurrent_call_over_provisioned_four_is_a_cold_start(
    runtime: Runtime,
) -> None:
    pids = await asyncio.gather(*(runtime.invoke("warm", {"hold": 0.3}) for _ in range(5)))
    assert len(set(pids)) == 5
    assert runtime.metrics["warm"].cold_starts == 1


async def test_a_fifth_synchronous_call_under_reserved_four_is_throttled(
    runtime: Runtime,
) -> None:
    calls = [asyncio.create_task(runtime.invoke("capped", {"hold": 0.3})) for _ in range(4)]
    await asyncio.sleep(0.05)
    with pytest.raises(ThrottledError) as caught:
        await runtime.invoke("capped", {"hold": 0})
    assert caught.value.limit == 4
    await asyncio.gather(*calls)
    metrics = runtime.metrics["capped"]
    assert (metrics.throttles, metrics.cold_starts, metrics.max_concurrent) == (1, 0, 4)


async def test_a_waiting_call_over_reserved_four_queues_instead_of_failing(
    runtime: Runtime,
) -> None:
    results = await asyncio.gather(
        *(runtime.invoke("capped", {"hold": 0.1}, wait=True) for _ in range(6))
    )
    assert len(results) == 6
    metrics = runtime.metrics["capped"]
    assert metrics.throttles == 0
    assert metrics.max_concurrent == 4
    assert metrics.cold_starts == 0


async def test_a_provisioned_worker_that_dies_idle_is_skipped_and_replaced(
    runtime: Runtime,
) -> None:
    pool = runtime.pool("warm")
    assert isinstance(pool, ProcessPool)
    assert pool.workers == 4
    dead = pool._idle[-1]
    dead.kill()
    for _ in range(100):  # until the runtime has seen the worker's socket close
        if dead.at_eof():
            break
        await asyncio.sleep(0.01)
    # The dead idle worker is skipped, not handed the invocation.
    assert await runtime.invoke("warm", {}) != dead.pid
    assert runtime.metrics["warm"].crashes == 0
    for _ in range(100):
        if pool.workers == 4 and pool.idle == 4:
            break
        await asyncio.sleep(0.02)
    assert (pool.workers, pool.idle) == (4, 4)


async def test_closing_the_pool_ends_a_call_in_flight_as_a_crash_not_a_timeout(
    runtime: Runtime,
) -> None:
    pool = runtime.pool("warm")
    assert isinstance(pool, ProcessPool)
    busy = asyncio.create_task(runtime.invoke("warm", {"hold": 4}))
    for _ in range(200):  # until the call holds a worker and waits for its answer
        if pool.idle == 3:
            break
        await asyncio.sleep(0.005)
    assert pool.idle == 3
    await pool.close()
    # The closed socket ends the wait for the answer at once (the timeout is 5 s).
    async with asyncio.timeout(3):
        with pytest.raises(FunctionCrashedError):
            await busy


async def test_idle_workers_beyond_provisioned_retire_after_keep_alive() -> None:
    clock = FakeClock()
    async with Runtime(app, clock=clock, keep_alive=60.0) as runtime:
        await asyncio.gather(*(runtime.invoke("warm", {"hold": 0.1}) for _ in range(6)))
        await runtime.invoke("echo", {})
        warm, echo = runtime.pool("warm"), runtime.pool("echo")
        assert isinstance(warm, ProcessPool) and isinstance(echo, ProcessPool)
        assert (warm.workers, echo.workers) == (6, 1)
        clock.advance(30)
        await asyncio.sleep(0.05)
        assert (warm.workers, echo.workers) == (6, 1)  # not idle long enough yet
        clock.advance(45)
        for _ in range(50):
            await asyncio.sleep(0.02)
            if warm.workers == 4 and echo.workers == 0:
                break
        # Provisioned workers stay however long they idle.
        assert (warm.workers, echo.workers) == (4, 0)
