"""Fixtures for the state tests: every test runs on memory, SQLite and Redis.

An engine joins the parameter list as soon as its module exists in the
checkout; Redis skips when the server is absent (and fails under CI=true).
Each Redis test gets a key prefix of its own, so tests never see each other.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend
from reflow.testing import FakeClock
from tests.conftest import REDIS_URL, require_server


def _engine_present(name: str) -> bool:
    return importlib.util.find_spec(f"reflow.backends.{name}") is not None


KINDS = ["memory"] + [kind for kind in ("sqlite", "redis") if _engine_present(kind)]


def state_backend_url(kind: str, tmp_path: Path) -> str:
    """The URL of a fresh, empty backend of ``kind``."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}prefix=test-state-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def clock() -> FakeClock:
    """Virtual time shared by the backend and the code under test."""
    return FakeClock()


@pytest.fixture(params=KINDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Backend]:
    opened = await open_backend(
        state_backend_url(request.param, tmp_path), data_dir=tmp_path, clock=clock
    )
    try:
        yield opened
    finally:
        await opened.close()
