"""Fixtures shared by the durable-execution tests: a manual clock, and backends on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, memory_backend, open_backend
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


@pytest.fixture(params=["memory", "sqlite"])
async def memory_or_sqlite(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Backend]:
    """A backend on the manual clock, once in memory and once on a SQLite file."""
    if request.param == "memory":
        opened = memory_backend(clock)
    else:
        opened = await open_backend(f"sqlite:///{tmp_path}/flows.db", clock=clock)
    try:
        yield opened
    finally:
        await opened.close()
