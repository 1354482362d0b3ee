"""The backend fixture: every contract test runs once per implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend

KINDS = ["memory"]


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    opened = await open_backend("memory://", data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
