"""The backend fixture: every contract test runs once per implementation.

``memory`` and ``sqlite`` always run; ``redis`` runs against the real server
(``REFLOW_TEST_REDIS`` or 127.0.0.1:6379), skips with a reason when it is
unreachable, and fails instead under ``CI=true``. Each Redis test gets a
namespace of its own (``?prefix=``), so tests never see each other's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend
from reflow.testing import FakeClock
from tests.conftest import REDIS_URL, require_server

KINDS = ["memory", "sqlite", "redis"]


def backend_url(kind: str, tmp_path: Path) -> str:
    """The URL of a fresh, empty backend of ``kind``."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}prefix=test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    opened = await open_backend(backend_url(request.param, tmp_path), data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(params=KINDS)
async def clocked(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Backend, FakeClock]]:
    """A fresh backend of each kind reading a :class:`FakeClock`, and that clock."""
    clock = FakeClock()
    url = backend_url(request.param, tmp_path)
    opened = await open_backend(url, data_dir=tmp_path, clock=clock)
    try:
        yield opened, clock
    finally:
        await opened.close()


async def reopen(backend: Backend, tmp_path: Path) -> Backend:
    """A second, independent Backend on the same store (the same URL and data dir),
    as another process would open it. Memory backends share nothing: skip."""
    if backend.kind == "memory":
        pytest.skip("a memory:// backend is private to the object that holds it")
    return await open_backend(backend.url, data_dir=tmp_path, clock=backend.clock)
