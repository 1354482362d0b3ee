"""A stop that gives up on a task says where the task is stuck (invocations.cancelled)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from reflow.functions.invocations import cancelled


async def test_the_give_up_log_names_the_call_that_swallowed_the_cancellations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listening = [False]

    async def client_call() -> None:  # stands for a library call deep in a reader
        while not listening[0]:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    async def reader() -> None:
        await client_call()

    task = asyncio.create_task(reader(), name="reader-of-x")
    await asyncio.sleep(0)
    task.cancel()
    with caplog.at_level(logging.ERROR, logger="reflow.functions"):
        async with asyncio.timeout(5):
            await cancelled([task], patience=0.6)
    listening[0] = True
    task.cancel()
    await task
    (record,) = [r for r in caplog.records if "would not stop" in r.getMessage()]
    message = record.getMessage()
    # repr(task) names only reader(); the chain goes down to where it really waits.
    assert "reader-of-x" in message
    assert "reader (" in message and "client_call (" in message and "sleep (" in message
    assert message.index("reader (") < message.index("client_call (") < message.index("sleep (")
