"""Rate limits: ``hit(key, rate="100/minute")`` → allowed, remaining, reset time.

The algorithm is a **sliding log**: a key remembers the times of the hits it
admitted during the last period, and a hit is admitted only if fewer than
``limit`` remain. That is the one algorithm here whose guarantee is exact:
*in any interval shorter than the period, at most ``limit`` hits are
admitted* — no boundary burst (a fixed window admits 2× across a boundary)
and no approximation (a sliding-window counter or GCRA with a burst of
``limit`` admit more than ``limit`` in some interval of one period). The
price is memory: up to ``limit`` timestamps per key, which is small for
request-path limits (100/second, 1000/minute) and the reason this module is
not meant for a daily quota of millions.

Atomicity, in one round trip where it matters:

* on Redis, one Lua script (a sorted set per key: trim, count, add, expire)
  runs atomically on the server — global across every process;
* on SQLite and in memory, the log is a JSON list in one KV key, updated by
  compare-and-set and retried on a lost race (SQLite serialises writers, so
  that is one transaction per hit when uncontended).

Time comes from the injected :class:`Clock` (sent to the script as an
argument), so limits are property-tested on a ``FakeClock``. Processes'
clocks disagree a little, and a hit may reach the store after one stamped
later; so a key's time line never goes backwards: a hit is judged at the
later of its own time and the newest time the log holds (``Decision.at``).
On that time line the guarantee is exact whatever the skew.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from dataclasses import dataclass
from typing import Any

from reflow.backends.protocols import KV
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.errors import InvalidRateError, VersionConflictError

__all__ = ["Decision", "InvalidRateError", "Rate", "RateLimiter", "parse_rate"]

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")

# KEYS[1] the log; ARGV: now, period, limit, cost, a unique member prefix.
_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) > now then
  now = tonumber(newest[2])
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
local count = redis.call('ZCARD', key)
local allowed = 0
if count + cost <= limit then
  for i = 1, cost do
    redis.call('ZADD', key, now, ARGV[5] .. ':' .. i)
  end
  count = count + cost
  allowed = 1
end
if count > 0 then
  redis.call('PEXPIRE', key, math.ceil(period * 1000) + 1000)
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {allowed, count, oldest[2] or '', string.format('%.17g', now)}
"""


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` hits in any ``period`` seconds."""

    limit: int
    period: float


@dataclass(frozen=True)
class Decision:
    """The answer to one hit."""

    allowed: bool
    limit: int
    remaining: int  # hits still admissible right now
    reset_at: float  # when the oldest remembered hit leaves the window (now if none)
    retry_after: float  # seconds until a refused hit could pass (0 when allowed)
    at: float  # the time the hit was judged at, on the limiter's time line


def parse_rate(rate: str | Rate) -> Rate:
    """``"100/minute"``, ``"10/second"``, ``"5/10s"``, ``"1000/2 hours"`` → :class:`Rate`."""
    if isinstance(rate, Rate):
        return rate
    match = _RATE.match(rate.lower()) if isinstance(rate, str) else None
    if match is None or match.group(3) not in _UNITS:
        raise InvalidRateError(str(rate), "expected N/unit, e.g. 100/minute or 10/5s")
    limit = int(match.group(1))
    period = float(match.group(2) or 1) * _UNITS[match.group(3)]
    if limit < 1 or period <= 0:
        raise InvalidRateError(rate, "limit and period must be positive")
    return Rate(limit, period)


class RateLimiter:
    """Sliding-log rate limits over a KV store, or a Lua script on Redis."""

    def __init__(
        self,
        kv: KV,
        *,
        clock: Clock = SYSTEM_CLOCK,
        namespace: str = "rl/",
        redis: Any = None,
        redis_prefix: str = "",
    ) -> None:
        self._kv = kv
        self._clock = clock
        self._namespace = namespace
        self._redis = redis
        self._redis_prefix = redis_prefix
        self._script: Any = redis.register_script(_SCRIPT) if redis is not None else None
        self._node = uuid.uuid4().hex[:12]
        self._counter = 0

    @classmethod
    def for_backend(cls, backend: Any, *, clock: Clock | None = None) -> RateLimiter:
        """A limiter on ``backend``, with the one-round-trip Lua path when it is Redis.

        Call :meth:`close` when done: on Redis it holds a connection pool.
        """
        url = backend.url
        redis_client = None
        if url.kind == "redis":
            from reflow.backends.redis_client import CancelSafeRedis  # loads redis-py: Redis only

            redis_client = CancelSafeRedis(
                host=url.host or "127.0.0.1",
                port=url.port or 6379,
                db=url.db,
                password=url.password,
                ssl=url.scheme == "rediss",
            )
        return cls(
            backend.kv,
            clock=clock or backend.clock,
            redis=redis_client,
            redis_prefix=url.options.get("prefix", ""),
        )

    async def close(self) -> None:
        """Release the Redis connection pool, if any."""
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def hit(self, key: str, rate: str | Rate = "100/minute", *, cost: int = 1) -> Decision:
        """Count one hit (or ``cost`` hits) on ``key``; say whether it is admitted."""
        parsed = parse_rate(rate)
        if cost < 1:
            raise InvalidRateError(str(rate), f"cost must be >= 1, got {cost}")
        if self._script is not None:
            now = self._clock.time()
            self._counter += 1
            member = f"{self._node}:{self._counter}"
            raw = await self._script(
                keys=[f"{self._redis_prefix}rl:{key}"],
                args=[repr(now), repr(parsed.period), parsed.limit, cost, member],
            )
            allowed, count = bool(int(raw[0])), int(raw[1])
            oldest = float(raw[2]) if raw[2] not in (b"", "") else None
            return _decision(allowed, count, oldest, float(raw[3]), parsed)
        return await self._hit_kv(f"{self._namespace}{key}", parsed, cost)

    async def _hit_kv(self, kv_key: str, rate: Rate, cost: int) -> Decision:
        attempt = 0
        while True:
            stored = await self._kv.get(kv_key)
            times: list[float] = json.loads(stored.value) if stored is not None else []
            now = max([self._clock.time(), *times[-1:]])
            times = [t for t in times if t > now - rate.period]
            allowed = len(times) + cost <= rate.limit
            if allowed:
                times.extend([now] * cost)
            oldest = times[0] if times else None
            if not allowed and stored is not None and len(times) == len(json.loads(stored.value)):
                return _decision(False, len(times), oldest, now, rate)  # nothing to write
            try:
                await self._kv.put(
                    kv_key,
                    json.dumps(times).encode(),
                    expect_version=stored.version if stored is not None else 0,
                    ttl=rate.period + 1.0,
                )
            except VersionConflictError:
                attempt += 1
                # Contention jitter on the real loop, not domain time (see tables.py).
                await asyncio.sleep(random.uniform(0, min(0.01, 0.0002 * 2 ** min(attempt, 8))))
                continue
            return _decision(allowed, len(times), oldest, now, rate)


def _decision(allowed: bool, count: int, oldest: float | None, now: float, rate: Rate) -> Decision:
    reset_at = oldest + rate.period if oldest is not None else now
    retry_after = 0.0 if allowed else max(0.0, reset_at - now)
    remaining = max(0, rate.limit - count)
    return Decision(allowed, rate.limit, remaining, reset_at, retry_after, now)
