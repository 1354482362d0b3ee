"""Stopping readers whose library call swallowed a cancellation (invocations.cancelled)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from reflow.functions.invocations import cancelled


async def test_a_task_that_swallows_one_cancellation_is_cancelled_again() -> None:
    swallowed: list[bool] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # as a client tidying its connection might

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(5):
        await cancelled([task])
    assert swallowed == [True] and task.cancelled()


async def test_a_task_that_never_stops_is_given_up_on_after_the_patience(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listening = [False]

    async def deaf() -> None:
        while not listening[0]:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    task.cancel()
    with caplog.at_level(logging.ERROR, logger="reflow.functions"):
        async with asyncio.timeout(5):
            await cancelled([task], patience=0.6)
    assert not task.done()
    assert "would not stop" in caplog.text
    listening[0] = True
    task.cancel()
    await task


async def test_finished_and_cancelled_tasks_return_at_once() -> None:
    async def quick() -> int:
        return 1

    done = asyncio.create_task(quick())
    await done
    sleeping = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    sleeping.cancel()
    async with asyncio.timeout(1):
        await cancelled([done, sleeping])
    assert sleeping.cancelled()
