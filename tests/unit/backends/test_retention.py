"""``AckedTrimmer`` on every engine: only entries delivered, acknowledged and old go.

Real time (Redis entry ids carry the server's clock), so ``keep`` is short
and the waits are a few tenths of a second.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, memory_backend, open_backend
from reflow.backends.retention import AckedTrimmer
from reflow.clock import SYSTEM_CLOCK
from tests.conftest import REDIS_URL, require_server

KEEP = 0.2


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        opened = memory_backend()
    elif request.param == "sqlite":
        opened = await open_backend(f"sqlite:///{tmp_path}/log.db")
    else:
        require_server(REDIS_URL, "the Redis server")
        separator = "&" if "?" in REDIS_URL else "?"
        prefix = f"test-retention-{uuid.uuid4().hex[:12]}:"
        opened = await open_backend(f"{REDIS_URL}{separator}prefix={prefix}", data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


async def test_only_acknowledged_old_entries_are_trimmed(backend: Backend) -> None:
    log = backend.log
    trimmer = AckedTrimmer(log, SYSTEM_CLOCK, keep=KEEP, every=0.0)
    assert await trimmer.trim("s", ["g"]) == 0  # nothing acknowledged here yet
    old = [await log.append("s", f"old{n}".encode()) for n in range(4)]
    await asyncio.sleep(3 * KEEP)
    old.append(await log.append("s", b"old4"))  # KEEP and more after the others
    held = await log.read("s", "g", "busy", count=1, lease=60.0)  # old0: pending
    done = await log.read("s", "g", "me", count=4)
    await log.ack("s", "g", [entry.id for entry in done])
    trimmer.acked("s", "g", [entry.id for entry in done])
    await asyncio.sleep(3 * KEEP)
    fresh = [await log.append("s", f"new{n}".encode()) for n in range(3)]  # never read
    assert await trimmer.trim("s", ["g"]) == 0  # old0 is pending: nothing after it goes
    await log.ack("s", "g", [held[0].id])
    await asyncio.sleep(3 * KEEP)
    # Now old0..old3 go (KEEP older than old4, the newest acked here); the unread stay.
    assert await trimmer.trim("s", ["g"]) == 4
    assert [entry.id for entry in await log.range("s")] == [old[4], *fresh]
    # A second group that acknowledged nothing here blocks trimming altogether.
    assert await trimmer.trim("s", ["g", "other"]) == 0
