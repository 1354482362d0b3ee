"""A cancelled blocking read on Redis ends, though redis-py can lose the cancellation.

redis-py 8 sends each command under ``asyncio.wait_for`` (its default 5 s
socket timeout), and on Python 3.11 ``wait_for`` returns normally when the
write completes as the caller is cancelled. RedisLog.read's blocking loop
never gives up on a FakeClock, so a lost cancellation kept it (and the
functions runtime's stop, which awaited it) going for ever.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend, open_backend
from reflow.testing.clock import FakeClock
from tests.conftest import REDIS_URL, require_server


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{separator}prefix=test-{uuid.uuid4().hex[:12]}:"
    opened = await open_backend(url, data_dir=tmp_path, clock=FakeClock())
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize("turns", [1, 2, 3])
async def test_a_read_cancelled_as_its_xread_is_sent_ends_cancelled(
    backend: Backend, turns: int
) -> None:
    log: Any = backend.log
    await log.create_group("s", "g")
    client = log._client
    started = asyncio.Event()
    real_xread = client.xread

    def xread(*args: Any, **kwargs: Any) -> Any:
        started.set()
        return real_xread(*args, **kwargs)

    client.xread = xread
    # Nothing to read and a clock that never moves: only a cancellation ends it.
    reader = asyncio.create_task(log.read("s", "g", "c", block=5.0))
    await started.wait()
    for _ in range(turns):  # the command's write completes meanwhile
        await asyncio.sleep(0)
    reader.cancel()
    done, _ = await asyncio.wait({reader}, timeout=3)
    for _ in range(50):  # if it went on, stop it anyway: never leave it polling
        if reader.done():
            break
        reader.cancel()
        await asyncio.wait({reader}, timeout=0.1)
    assert reader in done and reader.cancelled()
