"""The Log primitive on Redis Streams.

Each reflow stream is one Redis stream, and each consumer group a Redis
consumer group, so entry ids are Redis's own ``"<ms>-<seq>"`` ids and the
pending-entries list (PEL) is Redis's: ``pending`` is XPENDING, ``ack`` is
XACK, trimming is XTRIM MAXLEN / MINID.

Leases are the one thing Redis does not model. A pending entry only has an
idle time, and XAUTOCLAIM takes a single minimum idle time from the
*claimer*, whereas reflow's lease is chosen by the reader that took the
entry (a worker holding an entry for 0.2 s must lose it after 0.2 s even if
the next reader asks for 5 s leases). So each group keeps, beside its PEL, a
sorted set of lease deadlines and a hash of delivery times, and one Lua
script (``lua/log_read.lua``) claims the entries whose lease ended with
XCLAIM (which raises the delivery count, so a first redelivery reports 2,
exactly as XPENDING shows it), reads new ones with XREADGROUP and records
every lease, atomically: no entry is ever delivered without its lease.

Time: leases and pending idle times run on the injected
:class:`~reflow.clock.Clock` (passed to the scripts as "now"), like every
timer in reflow, so a :class:`~reflow.testing.FakeClock` moves them. The
processes sharing a server must therefore keep their clocks in sync (NTP),
as they must for TTLs. Entry ids, and so trimming by age, follow the Redis
server's clock, which stamps them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from reflow.backends.protocols import LogEntry, PendingEntry, entry_id_key
from reflow.backends.redis_batch import Batcher
from reflow.backends.redis_keys import Namespace, load_script
from reflow.clock import Clock, SystemClock

__all__ = ["RedisLog"]

_FIELD = b"d"  # every entry stores its payload in one field
# A blocking read re-checks an injected clock this often (seconds): a test's
# FakeClock can jump past a lease deadline while Redis is waiting for entries.
_FAKE_CLOCK_POLL = 0.05
# Lua's unpack() takes a few thousand values at most, so one read returns at
# most this many entries and acks are sent in chunks of this size.
MAX_BATCH = 1000


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(stream: str, flat: Sequence[Any]) -> list[LogEntry]:
    """Entries from a script's flat ``id, data, deliveries, ...`` list."""
    return [
        LogEntry(stream, _text(flat[i]), bytes(flat[i + 1]), int(flat[i + 2]))
        for i in range(0, len(flat), 3)
    ]


class RedisLog:
    """Streams, consumer groups, leases and trimming on Redis Streams."""

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
        self._read = client.register_script(load_script("log_read.lua"))
        self._ack = client.register_script(load_script("log_ack.lua"))
        self._append = client.register_script(load_script("log_append.lua"))
        self._delete = client.register_script(load_script("log_delete.lua"))

    @property
    def scripts(self) -> list[AsyncScript]:
        """The Lua scripts this Log runs (to load onto the server up front)."""
        return [self._read, self._ack, self._append, self._delete]

    async def append(self, stream: str, data: bytes) -> str:
        """Append ``data``; return the new entry's id (XADD).

        Durable as far as the server's persistence settings make it
        (``appendonly yes`` with ``appendfsync always`` for every write).
        """
        entry_id = await self._batch.command("XADD", self._ns.stream(stream), "*", _FIELD, data)
        return _text(entry_id)

    async def append_many(self, stream: str, items: Sequence[bytes]) -> list[str]:
        """Append ``items`` in order with one script call; return their ids.

        The script is atomic, so the items are stored together (and
        contiguously) or, if the call fails, not at all. Sent in chunks of
        ``MAX_BATCH`` (each chunk atomic on its own).
        """
        if len(items) == 1:  # one entry is atomic anyway; XADD is cheaper than a script
            return [await self.append(stream, items[0])]
        key = self._ns.stream(stream)
        ids: list[str] = []
        for start in range(0, len(items), MAX_BATCH):
            chunk = [bytes(data) for data in items[start : start + MAX_BATCH]]
            reply = await self._batch.script(self._append, [key], [_FIELD, *chunk])
            ids.extend(_text(entry_id) for entry_id in reply)
        return ids

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        """Create ``group`` reading from ``start``; False if it already existed."""
        try:
            await self._client.xgroup_create(self._ns.stream(stream), group, start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def read(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 10,
        lease: float = 30.0,
        block: float = 0.0,
    ) -> list[LogEntry]:
        """Read up to ``count`` entries (at most ``MAX_BATCH``), expired leases first,
        each held ``lease`` s.

        With ``block`` > 0 and nothing ready, wait (XREAD BLOCK, which consumes
        nothing) for a new entry or the earliest lease to end, then try again.
        """
        key = self._ns.stream(stream)
        keys = [key, self._ns.leases(stream, group), self._ns.delivered(stream, group)]
        clock = self._clock
        give_up = clock.monotonic() + block
        while True:
            now = clock.time()
            size = min(max(1, count), MAX_BATCH)
            args: list[str | int] = [group, consumer, size, repr(float(lease)), repr(now)]
            reply = await self._batch.script(self._read, keys, args)
            claimed, fresh, last_id, next_deadline = reply
            entries = sorted(_entries(stream, claimed), key=lambda e: entry_id_key(e.id))
            entries += _entries(stream, fresh)
            remaining = give_up - clock.monotonic()
            if entries or remaining <= 0:
                return entries
            wait = remaining
            if next_deadline:
                wait = min(wait, float(next_deadline) - now)
            if not isinstance(clock, SystemClock):
                wait = min(wait, _FAKE_CLOCK_POLL)
            block_ms = max(1, math.ceil(wait * 1000))
            # The engine's client (CancelSafeRedis) keeps a cancellation redis-py loses here.
            await self._client.xread({key: last_id}, count=1, block=block_ms)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries (XACK); return how many were pending."""
        if not ids:
            return 0
        keys = [
            self._ns.stream(stream),
            self._ns.leases(stream, group),
            self._ns.delivered(stream, group),
        ]
        done = 0
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start : start + MAX_BATCH]
            done += int(await self._batch.script(self._ack, keys, [group, *chunk]))
        return done

    async def pending(
        self, stream: str, group: str, *, count: int = 100, consumer: str | None = None
    ) -> list[PendingEntry]:
        """Delivered, unacknowledged entries, oldest first (XPENDING).

        Idle times come from the delivery times the reads recorded (on the
        injected clock); for an entry some other tool delivered, from Redis.
        """
        key = self._ns.stream(stream)
        try:
            rows = await self._client.xpending_range(
                key, group, min="-", max="+", count=count, consumername=consumer
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        if not rows:
            return []
        ids = [_text(row["message_id"]) for row in rows]
        since = await self._client.hmget(self._ns.delivered(stream, group), ids)
        now = self._clock.time()
        return [
            PendingEntry(
                id=entry_id,
                consumer=_text(row["consumer"]),
                deliveries=int(row["times_delivered"]),
                idle=(
                    max(0.0, now - float(delivered))
                    if delivered is not None
                    else int(row["time_since_delivered"]) / 1000
                ),
            )
            for entry_id, row, delivered in zip(ids, rows, since, strict=True)
        ]

    async def range(
        self, stream: str, *, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[LogEntry]:
        """Entries with ids in ``[start, end]``, in order (XRANGE)."""
        rows = await self._client.xrange(self._ns.stream(stream), min=start, max=end, count=count)
        return [
            LogEntry(stream, _text(entry_id), _payload(fields)) for entry_id, fields in rows or []
        ]

    async def length(self, stream: str) -> int:
        """How many entries the stream holds (XLEN)."""
        return int(await self._client.xlen(self._ns.stream(stream)))

    async def trim(
        self, stream: str, *, max_length: int | None = None, max_age: float | None = None
    ) -> int:
        """Drop the oldest entries beyond ``max_length`` or older than ``max_age`` s."""
        key = self._ns.stream(stream)
        dropped = 0
        if max_length is not None:
            dropped += int(
                await self._client.xtrim(key, maxlen=max(0, max_length), approximate=False)
            )
        if max_age is not None:
            # Ids carry the server's clock, so the cut-off is taken on it too.
            seconds, micros = await self._client.time()
            cutoff = int(seconds) * 1000 + int(micros) // 1000 - math.ceil(max_age * 1000)
            if cutoff > 0:
                dropped += int(
                    await self._client.xtrim(key, minid=f"{cutoff}-0", approximate=False)
                )
        return dropped

    async def delete_stream(self, stream: str) -> bool:
        """Remove a stream, its groups and their leases; whether it existed."""
        key = self._ns.stream(stream)
        prefixes = [self._ns.lease_prefix(stream), self._ns.delivered_prefix(stream)]
        existed = await self._delete(keys=[key], args=prefixes)
        return bool(existed)


def _payload(fields: Mapping[Any, Any] | None) -> bytes:
    if not fields:
        return b""
    data = fields.get(_FIELD)
    if data is None:  # an entry written by another tool: take its first value
        data = next(iter(fields.values()))
    return data if isinstance(data, bytes) else str(data).encode()
