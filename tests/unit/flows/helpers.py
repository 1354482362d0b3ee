"""Helpers shared by the flows unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (real time, at most ~5 s) until ``check()`` holds: the service's own loops run."""
    for _ in range(1000):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")
