"""The KV primitive on Redis hashes, with every conditional write in Lua.

A key is a hash (value, version, expiry); the layout and its reasons are in
``lua/kv_common.lua``. Reads are plain HMGETs; every write is one Lua
script, so a compare-and-set, a conditional delete, an increment or a whole
transaction is atomic on the server with no WATCH/retry loop.

Versions: a delete or an expiry keeps the key's last version in its hash
(a tombstone, also listed in the dead set by when it died), so a re-created
key carries on from there and never reuses a version a reader may still
hold. :meth:`RedisKV.collect` deletes tombstones dead longer than a grace
period and raises the namespace's version floor (``kv#floor``) over their
versions in the same script; a key with no hash starts above the floor.
It runs every 1,000 writes, one bounded script at a time.

TTLs run on the injected :class:`~reflow.clock.Clock`, like every other
timer in reflow: the caller's ``time()`` is passed to each script as "now"
and expiries are stored as seconds since the epoch, so ``Item.expires_at``
is exactly ``clock.time() + ttl``. Processes sharing one server should keep
their clocks in sync (NTP), as they must for anything else time-based.
Expired keys read as absent at once; their values are reclaimed a few at a
time by later writes (or when read, scanned or deleted).

Scans: Redis SCAN is unordered, so live keys are also kept in a sorted set
whose members all score 0, which ZRANGEBYLEX walks in byte order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from reflow.backends.protocols import Check, Delete, Item, Operation, Put
from reflow.backends.redis_batch import Batcher
from reflow.backends.redis_keys import Namespace, load_script
from reflow.clock import Clock
from reflow.errors import TransactionConflictError, VersionConflictError

__all__ = ["RedisKV"]

_COMMON = "kv_common.lua"
_SCAN_PAGE = 256
GRACE = 60.0  # seconds a tombstone is kept before the collector may drop it
COLLECT_LIMIT = 1000  # most keys one collection looks at
_COLLECT_BATCH = 250  # ... in scripts of at most this many (about 1.5 ms of server time each)
_COLLECT_EVERY = 1000  # writes (of this process) between collections


def _number(value: float) -> str:
    """A float as text that Lua's tonumber reads back to the same double."""
    return repr(float(value))


def _decoded(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


def _optional(value: int | float | None) -> str:
    return "" if value is None else str(value)


class RedisKV:
    """Versioned keys with compare-and-set, TTLs, counters, scans and transactions."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: Namespace,
        clock: Clock,
        batcher: Batcher | None = None,
    ) -> None:
        self._client = client
        self._batch = batcher or Batcher(client)
        self._ns = namespace
        self._clock = clock
        self._put = client.register_script(load_script("kv_put.lua", common=_COMMON))
        self._delete = client.register_script(load_script("kv_delete.lua", common=_COMMON))
        self._incr = client.register_script(load_script("kv_incr.lua", common=_COMMON))
        self._transact = client.register_script(load_script("kv_transact.lua", common=_COMMON))
        self._collect = client.register_script(load_script("kv_collect.lua", common=_COMMON))
        self._adopt = client.register_script(load_script("kv_adopt.lua"))
        # Beside kv#index and kv#expiring: outside the "kv:" prefix every hash
        # lives under, so no user key can name them.
        self._dead = f"{namespace.prefix}kv#dead"
        self._floor = f"{namespace.prefix}kv#floor"
        self._writes = 0

    @property
    def scripts(self) -> list[AsyncScript]:
        """The Lua scripts this KV runs (to load onto the server up front)."""
        return [self._put, self._delete, self._incr, self._transact, self._collect, self._adopt]

    def _keys(self, key: str) -> list[str]:
        return [self._ns.kv(key), self._ns.kv_index, self._ns.kv_expiring, self._dead, self._floor]

    async def _wrote(self) -> None:
        # Collection rides on writes, like the SQLite engine's sweep.
        self._writes += 1
        if self._writes % _COLLECT_EVERY == 0:
            await self.collect()

    async def collect(self, *, grace: float = GRACE, limit: int = COLLECT_LIMIT) -> int:
        """Drop up to ``limit`` tombstones (and values expired unread) dead for
        more than ``grace`` seconds, raising the version floor over each
        batch in the same script; return how many keys went. Never needed
        for correctness: it only frees memory."""
        now = self._clock.time()
        keys = [self._ns.kv_index, self._ns.kv_expiring, self._dead, self._floor]
        dropped, left = 0, max(0, limit)
        # Several short scripts rather than one long one: a script holds the
        # whole server, and other processes' writes wait behind it.
        while left > 0:
            batch = min(left, _COLLECT_BATCH)
            args = [_number(now - grace), str(batch), self._ns.kv_prefix, _number(now)]
            went, looked = await self._batch.script(self._collect, keys, args)
            dropped += int(went)
            left -= int(looked)
            if int(looked) < batch:
                break
        return dropped

    def _expiry(self, now: float, ttl: float | None) -> str:
        return "" if ttl is None else _number(now + ttl)

    def _item(self, key: str, fields: Sequence[Any], now: float) -> Item | None:
        value, version, expires = fields
        if value is None:
            return None
        expires_at = float(expires) if expires is not None else None
        if expires_at is not None and expires_at <= now:
            return None
        return Item(key, bytes(value), int(version), expires_at)

    async def adopt_tombstones(self, *, count: int = 1000) -> int:
        """Hand the collector the tombstones an older reflow left (before the
        dead set existed); return how many. One SCAN (``count`` keys a step)
        over the database, which walks every key on it, other namespaces'
        too, and one short script per page of matches: run it once after
        upgrading, not routinely."""
        prefix = self._ns.kv_prefix
        pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"
        adopted, cursor = 0, 0
        while True:
            cursor, names = await self._client.scan(cursor, match=pattern, count=count)
            if names:
                args = [_number(self._clock.time()), prefix, *names]
                adopted += int(await self._batch.script(self._adopt, [self._dead], args))
            if cursor == 0:
                return adopted

    async def get(self, key: str) -> Item | None:
        """The item, or None when absent or expired."""
        fields = await self._batch.command("HMGET", self._ns.kv(key), "v", "ver", "exp")
        return self._item(key, fields, self._clock.time())

    async def get_many(self, keys: Sequence[str]) -> list[Item | None]:
        """Items for several keys, in the order asked (one round trip)."""
        if not keys:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(self._ns.kv(key), ["v", "ver", "exp"])
            rows = await pipe.execute()
        now = self._clock.time()
        return [self._item(key, row, now) for key, row in zip(keys, rows, strict=True)]

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        ttl: float | None = None,
    ) -> int:
        """Store ``value``; return the new version (a compare-and-set with ``expect_version``)."""
        now = self._clock.time()
        args: list[str | bytes] = [
            key,
            value,
            _optional(expect_version),
            self._expiry(now, ttl),
            _number(now),
            self._ns.kv_prefix,
        ]
        await self._wrote()
        ok, version = await self._batch.script(self._put, self._keys(key), args)
        if not ok:
            raise VersionConflictError(key, expect_version, int(version))
        return int(version)

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        """Remove ``key``; whether it existed. Conditional like ``put``."""
        args: list[str] = [key, _optional(expect_version), _number(self._clock.time())]
        await self._wrote()
        ok, result = await self._batch.script(self._delete, self._keys(key), args)
        if not ok:
            raise VersionConflictError(key, expect_version, int(result))
        return bool(result)

    async def incr(self, key: str, by: int = 1, *, ttl: float | None = None) -> int:
        """Atomically add ``by`` to the integer at ``key``; ``ttl`` only on creation."""
        now = self._clock.time()
        args: list[str | int] = [key, by, self._expiry(now, ttl), _number(now), self._ns.kv_prefix]
        await self._wrote()
        try:
            return int(await self._batch.script(self._incr, self._keys(key), args))
        except ResponseError as exc:
            if "NOTINTEGER" in str(exc):
                raise ValueError(f"KV key {key!r} does not hold an integer") from None
            raise

    async def scan(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> list[Item]:
        """Live items whose key starts with ``prefix``, in key order."""
        if start_after is not None and start_after >= prefix:
            low = b"(" + start_after.encode()
        else:
            low = b"[" + prefix.encode()
        # No UTF-8 text contains the byte 0xff, so every key that starts with
        # the prefix sorts below prefix + 0xff.
        high = b"(" + prefix.encode() + b"\xff" if prefix else b"+"
        out: list[Item] = []
        while limit is None or len(out) < limit:
            page_size = _SCAN_PAGE if limit is None else min(_SCAN_PAGE, limit - len(out))
            names = await self._client.zrangebylex(
                self._ns.kv_index, low, high, start=0, num=page_size
            )
            if not names:
                break
            keys = [_decoded(n) for n in names]
            for item in await self.get_many(keys):
                if item is not None:
                    out.append(item)
            if len(names) < page_size:
                break
            low = b"(" + _decoded(names[-1]).encode()
        return out if limit is None else out[:limit]

    async def transact(self, operations: Sequence[Operation]) -> list[int]:
        """Apply every operation or none, in one Lua script."""
        if not operations:
            return []
        now = self._clock.time()
        keys = [self._ns.kv_index, self._ns.kv_expiring, self._dead, self._floor]
        args: list[str | bytes] = [_number(now), self._ns.kv_prefix]
        for op in operations:
            keys.append(self._ns.kv(op.key))
            if isinstance(op, Put):
                expect, ttl = op.expect_version, op.ttl
                args += ["P", op.key, op.value, _optional(expect), self._expiry(now, ttl)]
            elif isinstance(op, Delete):
                args += ["D", op.key, b"", _optional(op.expect_version), ""]
            elif isinstance(op, Check):
                args += ["C", op.key, b"", str(op.expect_version), ""]
            else:  # pragma: no cover - Operation is a closed union
                raise TypeError(f"not a KV operation: {op!r}")
        await self._wrote()
        result = await self._batch.script(self._transact, keys, args)
        if not result[0]:
            position, actual = int(result[1]), int(result[2])
            failed = operations[position - 1]
            raise TransactionConflictError(failed.key, failed.expect_version, actual)
        return [int(v) for v in result[1]]
