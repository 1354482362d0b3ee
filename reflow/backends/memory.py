"""In-process implementations of the four primitives, for unit tests.

They hold everything in dictionaries guarded by the event loop (no awaits in
the middle of an update), read time from an injected :class:`Clock`, and
follow the contract exactly, so a subsystem tested on them behaves the same
on SQLite and Redis. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from reflow.backends.protocols import (
    Blob,
    BlobInfo,
    Check,
    Delete,
    Item,
    LogEntry,
    Message,
    Operation,
    PendingEntry,
    Put,
    entry_id_key,
)
from reflow.backends.subscription import QueuedSubscription
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.errors import TransactionConflictError, VersionConflictError

__all__ = ["MemoryBlobs", "MemoryKV", "MemoryLog", "MemoryPubSub", "etag_of"]

GRACE = 60.0  # seconds a KV tombstone is kept before collect() may drop it
COLLECT_LIMIT = 1000  # most tombstones one collection drops
COLLECT_EVERY = 1000  # KV writes between collections


def etag_of(data: bytes) -> str:
    """The S3-style ETag of a single-part object: its quoted hex MD5."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


# --- Log ---------------------------------------------------------------------


@dataclass
class _Pending:
    consumer: str
    deliveries: int
    delivered_at: float
    lease_until: float


@dataclass
class _Group:
    last_delivered: tuple[int, int]
    pending: dict[str, _Pending] = field(default_factory=dict)


@dataclass
class _Stream:
    ids: list[tuple[int, int]] = field(default_factory=list)
    entries: dict[tuple[int, int], bytes] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    last_id: tuple[int, int] = (0, 0)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


def _fmt(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


def _bound(text: str, *, low: bool) -> tuple[int, int]:
    if text == "-":
        return (0, 0)
    if text == "+":
        return (2**63, 2**63)
    if "-" in text:
        return entry_id_key(text)
    return (int(text), 0 if low else 2**63)


class MemoryLog:
    """Streams in dictionaries; leases measured on the injected clock."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._streams: dict[str, _Stream] = {}

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    def _next_id(self, stream: _Stream) -> tuple[int, int]:
        ms = int(self._clock.time() * 1000)
        last_ms, last_seq = stream.last_id
        return (last_ms, last_seq + 1) if ms <= last_ms else (ms, 0)

    async def append(self, stream: str, data: bytes) -> str:
        s = self._stream(stream)
        key = self._next_id(s)
        s.ids.append(key)
        s.entries[key] = bytes(data)
        s.last_id = key
        s.arrived.set()
        s.arrived = asyncio.Event()
        return _fmt(key)

    async def append_many(self, stream: str, items: Sequence[bytes]) -> list[str]:
        if not items:
            return []
        s = self._stream(stream)
        ids = []
        for data in items:
            key = self._next_id(s)
            s.ids.append(key)
            s.entries[key] = bytes(data)
            s.last_id = key
            ids.append(_fmt(key))
        s.arrived.set()
        s.arrived = asyncio.Event()
        return ids

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        s = self._stream(stream)
        if group in s.groups:
            return False
        last = s.last_id if start == "$" else _bound(start, low=True)
        if start == "0":
            last = (0, 0)
        s.groups[group] = _Group(last_delivered=last)
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
        deadline = self._clock.monotonic() + block
        while True:
            s = self._stream(stream)
            if group not in s.groups:
                await self.create_group(stream, group)
            entries = self._take(stream, s, s.groups[group], consumer, count, lease)
            remaining = deadline - self._clock.monotonic()
            if entries or remaining <= 0:
                return entries
            waiter = s.arrived
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that lands as the waiter completes, and the reader
            # would then loop on forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await waiter.wait()

    def _take(
        self, name: str, s: _Stream, g: _Group, consumer: str, count: int, lease: float
    ) -> list[LogEntry]:
        now = self._clock.time()
        out: list[LogEntry] = []
        # Expired leases first: their entries go to whoever reads next.
        for entry_id, p in sorted(g.pending.items(), key=lambda kv: entry_id_key(kv[0])):
            if len(out) >= count:
                return out
            if p.lease_until > now:
                continue
            key = entry_id_key(entry_id)
            if key not in s.entries:  # trimmed away while pending
                del g.pending[entry_id]
                continue
            p.consumer, p.deliveries = consumer, p.deliveries + 1
            p.delivered_at, p.lease_until = now, now + lease
            out.append(LogEntry(name, entry_id, s.entries[key], p.deliveries))
        start = bisect.bisect_right(s.ids, g.last_delivered)
        for key in s.ids[start : start + (count - len(out))]:
            entry_id = _fmt(key)
            g.pending[entry_id] = _Pending(consumer, 1, now, now + lease)
            g.last_delivered = key
            out.append(LogEntry(name, entry_id, s.entries[key], 1))
        return out

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        s = self._streams.get(stream)
        g = s.groups.get(group) if s else None
        if g is None:
            return 0
        return sum(1 for i in ids if g.pending.pop(i, None) is not None)

    async def pending(
        self, stream: str, group: str, *, count: int = 100, consumer: str | None = None
    ) -> list[PendingEntry]:
        s = self._streams.get(stream)
        g = s.groups.get(group) if s else None
        if g is None:
            return []
        now = self._clock.time()
        rows = [
            PendingEntry(i, p.consumer, p.deliveries, max(0.0, now - p.delivered_at))
            for i, p in g.pending.items()
            if consumer is None or p.consumer == consumer
        ]
        rows.sort(key=lambda r: entry_id_key(r.id))
        return rows[:count]

    async def range(
        self, stream: str, *, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[LogEntry]:
        s = self._streams.get(stream)
        if s is None:
            return []
        lo = bisect.bisect_left(s.ids, _bound(start, low=True))
        hi = bisect.bisect_right(s.ids, _bound(end, low=False))
        keys = s.ids[lo:hi] if count is None else s.ids[lo:hi][:count]
        return [LogEntry(stream, _fmt(k), s.entries[k]) for k in keys]

    async def length(self, stream: str) -> int:
        s = self._streams.get(stream)
        return len(s.ids) if s else 0

    async def trim(
        self, stream: str, *, max_length: int | None = None, max_age: float | None = None
    ) -> int:
        s = self._stream(stream)
        cut = 0
        if max_length is not None:
            cut = max(cut, len(s.ids) - max(0, max_length))
        if max_age is not None:
            oldest = (int((self._clock.time() - max_age) * 1000), 0)
            cut = max(cut, bisect.bisect_left(s.ids, oldest))
        for key in s.ids[:cut]:
            del s.entries[key]
        del s.ids[:cut]
        return cut

    async def delete_stream(self, stream: str) -> bool:
        return self._streams.pop(stream, None) is not None


# --- KV ----------------------------------------------------------------------


class MemoryKV:
    """A sorted dictionary of versioned values; TTLs on the injected clock."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._items: dict[str, Item] = {}
        self._keys: list[str] = []  # sorted, for scans
        # Versions outlive deletes so that a re-created key never reuses a
        # version: a dead key keeps its last version (a tombstone) until
        # collect() drops it and raises the floor, above which a key with no
        # recorded version starts.
        self._last_version: dict[str, int] = {}
        self._dead: dict[str, float] = {}  # tombstoned key -> when it died
        self._floor = 0
        self._writes = 0

    def _live(self, key: str) -> Item | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires_at is not None and item.expires_at <= self._clock.time():
            self._remove(key, since=item.expires_at)
            return None
        return item

    def _remove(self, key: str, since: float | None = None) -> None:
        if self._items.pop(key, None) is not None:
            index = bisect.bisect_left(self._keys, key)
            del self._keys[index]
            self._dead.pop(key, None)  # re-inserted last: the dict stays in death order
            self._dead[key] = self._clock.time() if since is None else since

    def _wrote(self) -> None:
        # Collection rides on writes, like the SQLite engine's.
        self._writes += 1
        if self._writes % COLLECT_EVERY == 0:
            self.collect_now()

    def collect_now(self, *, grace: float = GRACE, limit: int = COLLECT_LIMIT) -> int:
        """Drop up to ``limit`` tombstones (and expired values) dead for more
        than ``grace`` seconds and raise the version floor over them; how many
        went. Not needed for correctness: it only frees memory."""
        before = self._clock.time() - grace
        for key, item in list(self._items.items()):
            if item.expires_at is not None and item.expires_at <= before:
                self._remove(key, since=item.expires_at)
        dropped = 0
        for key, since in list(self._dead.items()):
            if dropped >= limit:
                break
            if since > before:
                continue
            del self._dead[key]
            self._floor = max(self._floor, self._last_version.pop(key))
            dropped += 1
        return dropped

    async def collect(self, *, grace: float = GRACE, limit: int = COLLECT_LIMIT) -> int:
        """:meth:`collect_now`, as the other engines spell it."""
        return self.collect_now(grace=grace, limit=limit)

    def _store(self, key: str, value: bytes, ttl: float | None, keep_ttl: bool = False) -> int:
        old = self._live(key)
        version = self._last_version.get(key, self._floor) + 1
        self._last_version[key] = version
        self._dead.pop(key, None)
        if keep_ttl and old is not None:
            expires = old.expires_at
        else:
            expires = self._clock.time() + ttl if ttl is not None else None
        if old is None:
            bisect.insort(self._keys, key)
        self._items[key] = Item(key, bytes(value), version, expires)
        return version

    async def get(self, key: str) -> Item | None:
        return self._live(key)

    async def get_many(self, keys: Sequence[str]) -> list[Item | None]:
        return [self._live(k) for k in keys]

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        ttl: float | None = None,
    ) -> int:
        if expect_version is not None:
            current = self._live(key)
            actual = current.version if current else 0
            if actual != expect_version:
                raise VersionConflictError(key, expect_version, actual)
        self._wrote()
        return self._store(key, value, ttl)

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        current = self._live(key)
        if expect_version is not None:
            actual = current.version if current else 0
            if actual != expect_version:
                raise VersionConflictError(key, expect_version, actual)
        if current is None:
            return False
        self._wrote()
        self._remove(key)
        return True

    async def incr(self, key: str, by: int = 1, *, ttl: float | None = None) -> int:
        current = self._live(key)
        base = int(current.value) if current else 0
        total = base + by
        self._wrote()
        self._store(key, str(total).encode(), ttl, keep_ttl=current is not None)
        return total

    async def scan(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> list[Item]:
        lo = bisect.bisect_left(self._keys, prefix)
        if start_after is not None and start_after >= prefix:
            lo = bisect.bisect_right(self._keys, start_after)
        out: list[Item] = []
        for key in list(self._keys[lo:]):
            if not key.startswith(prefix):
                break
            item = self._live(key)
            if item is not None:
                out.append(item)
                if limit is not None and len(out) >= limit:
                    break
        return out

    async def transact(self, operations: Sequence[Operation]) -> list[int]:
        for op in operations:
            if op.expect_version is None:
                continue
            current = self._live(op.key)
            actual = current.version if current else 0
            if actual != op.expect_version:
                raise TransactionConflictError(op.key, op.expect_version, actual)
        results: list[int] = []
        self._wrote()
        for op in operations:
            if isinstance(op, Put):
                results.append(self._store(op.key, op.value, op.ttl))
            elif isinstance(op, Delete):
                self._remove(op.key)
                results.append(0)
            elif isinstance(op, Check):
                results.append(op.expect_version)
        return results


# --- PubSub ------------------------------------------------------------------


class _MemorySubscription(QueuedSubscription):
    def __init__(self, hub: MemoryPubSub, channels: tuple[str, ...]) -> None:
        super().__init__(channels)
        self._hub = hub

    async def _detach(self) -> None:
        self._hub._drop(self)


class MemoryPubSub:
    """Broadcast within one process."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[_MemorySubscription]] = {}

    async def publish(self, channel: str, data: bytes) -> int:
        receivers = self._subscribers.get(channel, [])
        for sub in receivers:
            sub.queue.put_nowait(Message(channel, bytes(data)))
        return len(receivers)

    async def subscribe(self, *channels: str) -> _MemorySubscription:
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        sub = _MemorySubscription(self, channels)
        for channel in channels:
            self._subscribers.setdefault(channel, []).append(sub)
        return sub

    def _drop(self, sub: _MemorySubscription) -> None:
        for channel in sub.channels:
            subs = self._subscribers.get(channel, [])
            if sub in subs:
                subs.remove(sub)


# --- Blobs -------------------------------------------------------------------


class MemoryBlobs:
    """Objects in a dictionary."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._objects: dict[str, Blob] = {}

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        check_blob_key(key)
        info = BlobInfo(
            key=key,
            size=len(data),
            etag=etag_of(data),
            content_type=content_type,
            modified=self._clock.time(),
            metadata=dict(metadata or {}),
        )
        self._objects[key] = Blob(info, bytes(data))
        return info

    async def get(self, key: str) -> Blob | None:
        return self._objects.get(key)

    async def head(self, key: str) -> BlobInfo | None:
        blob = self._objects.get(key)
        return blob.info if blob else None

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> list[BlobInfo]:
        keys = sorted(k for k in self._objects if k.startswith(prefix))
        if start_after is not None:
            keys = [k for k in keys if k > start_after]
        if limit is not None:
            keys = keys[:limit]
        return [self._objects[k].info for k in keys]

    async def delete(self, key: str) -> bool:
        return self._objects.pop(key, None) is not None


def check_blob_key(key: str) -> None:
    """Refuse keys that could not be stored as a file path on every backend."""
    if not key or key.startswith("/") or len(key.encode()) > 1024:
        raise ValueError(f"blob key {key!r} must be 1-1024 bytes and not start with '/'")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\x00" in key:
        raise ValueError(f"blob key {key!r} has an empty, '.' or '..' segment or a NUL byte")
