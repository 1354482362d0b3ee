"""A runtime over the sample app, started and stopped around each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from reflow.functions import Runtime
from tests.functional.functions.sample_app import app


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with Runtime(app) as started:
        yield started
