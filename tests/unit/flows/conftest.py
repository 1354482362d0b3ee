"""Fixtures shared by the durable-execution tests: a manual clock and a memory backend on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from reflow.backends import Backend, memory_backend
from reflow.testing.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def backend(clock: FakeClock) -> AsyncIterator[Backend]:
    opened = memory_backend(clock)
    try:
        yield opened
    finally:
        await opened.close()
