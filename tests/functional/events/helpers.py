"""Shared pieces of the bus's functional tests: a bus over memory and waiting helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reflow.events.delivery import Delivery


async def eventually(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait (in real time, briefly) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class Recorder:
    """A target body that fails its first ``failures`` calls and records every call."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, int, object]] = []

    def __call__(self, payload: object, delivery: Delivery) -> None:
        self.calls.append((delivery.event.id, delivery.attempt, payload))
        if len(self.calls) <= self.failures:
            raise RuntimeError(f"failure {len(self.calls)}")
