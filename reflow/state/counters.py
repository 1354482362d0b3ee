"""Counters and inventory: atomic increments, and decrements that respect a floor.

``decrement_if(key, by, minimum=0)`` is what keeps a flash sale from
overselling: it takes ``by`` units only if at least ``minimum`` remain
afterwards, atomically, or raises :class:`InsufficientError` and changes
nothing.

Two paths, one behaviour:

* over any ``KV`` (memory, SQLite): ``incr`` is the KV's atomic counter, and
  ``decrement_if`` one compare-and-set — read the count with its version,
  check, write only if the version is unchanged, retry on a lost race. It
  rests on the engine's atomic compare-and-set alone, so it holds across
  processes;
* on Redis (:meth:`Counters.for_backend`): plain Redis integers under the
  URL's prefix (``ctr:<key>``), ``INCRBY``, and ``decrement_if`` as one Lua
  script — one round trip and no retries however many buyers contend for
  the same key, which is what a flash sale looks like.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from reflow.backends.protocols import KV
from reflow.errors import InsufficientError, VersionConflictError

__all__ = ["Counters", "InsufficientError"]

# KEYS[1] the counter; ARGV: by, minimum. Returns {taken (0/1), value}.
_DECREMENT_IF = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
local by = tonumber(ARGV[1])
if value - by < tonumber(ARGV[2]) then
  return {0, value}
end
return {1, redis.call('DECRBY', KEYS[1], by)}
"""


class Counters:
    """Named integer counters: in a KV store (keys under ``namespace``), or in Redis."""

    def __init__(
        self, kv: KV, *, namespace: str = "c/", redis: Any = None, redis_prefix: str = ""
    ) -> None:
        self._kv = kv
        self._namespace = namespace
        self._redis = redis
        self._redis_prefix = redis_prefix
        self._script: Any = redis.register_script(_DECREMENT_IF) if redis is not None else None

    @classmethod
    def for_backend(cls, backend: Any) -> Counters:
        """Counters on ``backend``, native Redis integers when it is Redis.

        Call :meth:`close` when done: on Redis it holds a connection pool.
        """
        url = backend.url
        if url.kind != "redis":
            return cls(backend.kv)
        from reflow.backends.redis_client import CancelSafeRedis  # loads redis-py: Redis only

        client = CancelSafeRedis(
            host=url.host or "127.0.0.1",
            port=url.port or 6379,
            db=url.db,
            password=url.password,
            ssl=url.scheme == "rediss",
        )
        return cls(backend.kv, redis=client, redis_prefix=url.options.get("prefix", ""))

    async def close(self) -> None:
        """Release the Redis connection pool, if any."""
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._script = None

    def _redis_key(self, key: str) -> str:
        return f"{self._redis_prefix}ctr:{key}"

    async def get(self, key: str) -> int:
        """The counter's value (0 when it was never set)."""
        if self._redis is not None:
            raw = await self._redis.get(self._redis_key(key))
            return int(raw) if raw is not None else 0
        stored = await self._kv.get(self._namespace + key)
        return int(stored.value) if stored is not None else 0

    async def set(self, key: str, value: int) -> None:
        """Set the counter (restocking, tests)."""
        if self._redis is not None:
            await self._redis.set(self._redis_key(key), int(value))
            return
        await self._kv.put(self._namespace + key, str(int(value)).encode())

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` (negative to subtract, unbounded); return the new value."""
        if self._redis is not None:
            return int(await self._redis.incrby(self._redis_key(key), by))
        return await self._kv.incr(self._namespace + key, by)

    async def decrement_if(self, key: str, by: int = 1, *, minimum: int = 0) -> int:
        """Take ``by`` only if at least ``minimum`` remains; return the new value.

        Raises :class:`InsufficientError` (with what is available) otherwise,
        and changes nothing.
        """
        if by < 0:
            raise ValueError(f"decrement_if takes a non-negative amount, got {by}")
        if self._script is not None:
            taken, value = await self._script(keys=[self._redis_key(key)], args=[by, minimum])
            if not int(taken):
                raise InsufficientError(key, int(value), by, minimum)
            return int(value)
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
