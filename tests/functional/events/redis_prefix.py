"""A Redis backend under a fresh key prefix, with that prefix's keys removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from reflow.backends import Backend, open_backend
from reflow.clock import SYSTEM_CLOCK, Clock
from tests.conftest import REDIS_URL, require_server


def fresh_prefix(name: str) -> str:
    """A key prefix no other run uses: ``test-<name>-<random>:`` (swept under CI)."""
    return f"test-{name}-{uuid.uuid4().hex[:8]}:"


async def unlink_prefix(prefix: str) -> None:
    """Remove this prefix's keys (``SCAN MATCH`` + ``UNLINK``), never anything else."""
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in raw.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await raw.unlink(*keys[start : start + 500])
    finally:
        await raw.aclose()


@asynccontextmanager
async def redis_backend(
    name: str, data_dir: Path, clock: Clock | None = None
) -> AsyncIterator[Backend]:
    """Open Redis under a fresh prefix (skip without a server); remove its keys after."""
    require_server(REDIS_URL, "Redis")
    prefix = fresh_prefix(name)
    url = f"{REDIS_URL}?prefix={prefix}"
    backend = await open_backend(url, data_dir=data_dir, clock=clock or SYSTEM_CLOCK)
    try:
        yield backend
    finally:
        await backend.close()
        await unlink_prefix(prefix)
