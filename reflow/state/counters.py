"""Counters and inventory: atomic increments, and decrements that respect a floor.

``incr`` is the KV's own atomic counter. ``decrement_if(key, by, minimum=0)``
is what keeps a flash sale from overselling: it takes ``by`` units only if at
least ``minimum`` remain afterwards, as one compare-and-set — read the
count with its version, check, write only if the version is unchanged, and
retry on a lost race. Correctness therefore rests on the engine's atomic
compare-and-set alone, so it holds across processes on SQLite and Redis.

Counters share the KV's integer encoding (the value is the decimal text), so
``incr`` and ``decrement_if`` may be mixed on one key.
"""

from __future__ import annotations

import asyncio
import random

from reflow.backends.protocols import KV
from reflow.errors import InsufficientError, VersionConflictError

__all__ = ["Counters", "InsufficientError"]


class Counters:
    """Named integer counters in a KV store (keys under ``namespace``)."""

    def __init__(self, kv: KV, *, namespace: str = "c/") -> None:
        self._kv = kv
        self._namespace = namespace

    async def get(self, key: str) -> int:
        """The counter's value (0 when it was never set)."""
        stored = await self._kv.get(self._namespace + key)
        return int(stored.value) if stored is not None else 0

    async def set(self, key: str, value: int) -> None:
        """Set the counter (restocking, tests)."""
        await self._kv.put(self._namespace + key, str(int(value)).encode())

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` (negative to subtract, unbounded); return the new value."""
        return await self._kv.incr(self._namespace + key, by)

    async def decrement_if(self, key: str, by: int = 1, *, minimum: int = 0) -> int:
        """Take ``by`` only if at least ``minimum`` remains; return the new value.

        Raises :class:`InsufficientError` (with what is available) otherwise,
        and changes nothing.
        """
        if by < 0:
            raise ValueError(f"decrement_if takes a non-negative amount, got {by}")
        kv_key = self._namespace + key
        attempt = 0
        while True:
            stored = await self._kv.get(kv_key)
            current = int(stored.value) if stored is not None else 0
            if current - by < minimum:
                raise InsufficientError(key, current, by, minimum)
            try:
                await self._kv.put(
                    kv_key,
                    str(current - by).encode(),
                    expect_version=stored.version if stored is not None else 0,
                )
            except VersionConflictError:
                attempt += 1
                # Contention jitter on the real loop, not domain time: see tables.py.
                await asyncio.sleep(random.uniform(0, min(0.01, 0.0002 * 2 ** min(attempt, 8))))
                continue
            return current - by
