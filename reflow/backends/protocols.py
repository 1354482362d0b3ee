"""The four primitives every backend implements: Log, KV, PubSub and Blobs.

Everything above ``reflow.backends`` is written against these protocols and
never learns which engine is underneath. The contract is pinned down by one
test suite (``tests/contract/``) that runs unchanged against every
implementation: memory, SQLite (and files) and Redis.

Semantics shared by all implementations:

* **Log** — named append-only streams of opaque ``bytes``. Entry ids are
  ``"<ms>-<seq>"`` strings that sort in append order (compare them with
  :func:`entry_id_key`). Consumers read through *consumer groups*: each entry
  goes to one consumer of the group, which holds a *lease* on it until it
  acks. An entry whose lease expires unacknowledged is delivered again, to
  whichever consumer of the group reads next, with its delivery count raised
  by one. Nothing is ever lost by a consumer dying: it simply never acks.
* **KV** — keys are strings, values ``bytes``. Every write gives the key a
  new version (1, 2, 3, …); ``expect_version`` turns a write into a
  compare-and-set, where ``0`` means "the key must not exist". TTLs are
  seconds from now. ``scan`` walks keys in byte order. ``transact`` applies
  several writes and checks all-or-nothing.
* **PubSub** — fire-and-forget broadcast: a subscriber sees messages published
  after it subscribed, none before, and none if it is slow and gone.
* **Blobs** — an object store with S3's shape: content type, user metadata, an
  ETag (the hex MD5 of the bytes, quoted, as S3 gives for single-part puts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "KV",
    "Blob",
    "BlobInfo",
    "Blobs",
    "Check",
    "Delete",
    "Item",
    "Log",
    "LogEntry",
    "Message",
    "Operation",
    "PendingEntry",
    "Put",
    "PubSub",
    "Subscription",
    "entry_id_key",
]


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a log entry id ``"<ms>-<seq>"``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# --- Log ---------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    """One entry read from a stream."""

    stream: str
    id: str
    data: bytes
    deliveries: int = 1  # 1 on first delivery, 2 on the first redelivery, ...


@dataclass(frozen=True)
class PendingEntry:
    """An entry delivered to a consumer and not yet acknowledged."""

    id: str
    consumer: str
    deliveries: int
    idle: float  # seconds since it was last delivered


@runtime_checkable
class Log(Protocol):
    """Append-only streams with consumer groups, leases, acks and trimming."""

    async def append(self, stream: str, data: bytes) -> str:
        """Append ``data``; return the new entry's id. Durable when it returns."""
        ...

    async def append_many(self, stream: str, items: Sequence[bytes]) -> list[str]:
        """Append every item, in order, as one write; return their ids in that order.

        Durable when it returns, like ``append``, and all or nothing: the
        items are stored together, contiguously, or not at all (one
        transaction on SQLite; one script on Redis, which sends more than
        1,000 items as several scripts, each all or nothing). No items: no
        write, ``[]``.
        """
        ...

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        """Create a consumer group reading from ``start`` (``"0"``: the beginning,
        ``"$"``: only entries appended from now on). Return False if it existed."""
        ...

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
        """Read up to ``count`` entries for ``consumer``, holding each for ``lease`` s.

        Entries whose lease expired are redelivered first (to this consumer),
        then new ones. With ``block`` > 0, wait up to that many seconds for
        something to arrive when nothing is ready. The group is created from
        the beginning of the stream if it does not exist.
        """
        ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; return how many were pending and are now done."""
        ...

    async def pending(
        self, stream: str, group: str, *, count: int = 100, consumer: str | None = None
    ) -> list[PendingEntry]:
        """Entries delivered and not acknowledged, oldest first."""
        ...

    async def range(
        self, stream: str, *, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[LogEntry]:
        """Entries with ids in ``[start, end]`` (``-``/``+`` for the ends), in order."""
        ...

    async def length(self, stream: str) -> int:
        """How many entries the stream holds."""
        ...

    async def trim(
        self, stream: str, *, max_length: int | None = None, max_age: float | None = None
    ) -> int:
        """Drop the oldest entries beyond ``max_length`` or older than ``max_age``
        seconds; return how many were dropped."""
        ...

    async def delete_stream(self, stream: str) -> bool:
        """Remove a stream and its groups; return whether it existed."""
        ...


# --- KV ----------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A key's value as stored."""

    key: str
    value: bytes
    version: int
    expires_at: float | None = None  # seconds since the epoch, on the backend's clock


@dataclass(frozen=True)
class Put:
    """A transaction write: set ``key`` (optionally only at ``expect_version``)."""

    key: str
    value: bytes
    expect_version: int | None = None
    ttl: float | None = None


@dataclass(frozen=True)
class Delete:
    """A transaction delete of ``key`` (optionally only at ``expect_version``)."""

    key: str
    expect_version: int | None = None


@dataclass(frozen=True)
class Check:
    """A transaction condition: ``key`` must be at ``expect_version`` (0: absent)."""

    key: str
    expect_version: int


Operation = Put | Delete | Check


@runtime_checkable
class KV(Protocol):
    """Versioned keys with compare-and-set, TTLs, counters, scans and transactions."""

    async def get(self, key: str) -> Item | None:
        """The item, or None when absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[Item | None]:
        """Items for several keys, in the order asked."""
        ...

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        ttl: float | None = None,
    ) -> int:
        """Store ``value``; return the new version.

        With ``expect_version`` the write happens only if the key is at that
        version (``0``: absent), else :class:`VersionConflictError`.
        """
        ...

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        """Remove ``key``; return whether it existed. Conditional like ``put``."""
        ...

    async def incr(self, key: str, by: int = 1, *, ttl: float | None = None) -> int:
        """Atomically add ``by`` to the integer at ``key`` (absent: 0); return the result.

        ``ttl`` applies only when the counter is created.
        """
        ...

    async def scan(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> list[Item]:
        """Live items whose key starts with ``prefix``, in key order."""
        ...

    async def transact(self, operations: Sequence[Operation]) -> list[int]:
        """Apply every operation or none.

        Return, per operation, the new version (``Put``), 0 (``Delete``) or the
        checked version (``Check``). A failed expectation raises
        :class:`TransactionConflictError` naming the key, and nothing is written.
        """
        ...


# --- PubSub ------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message received on a channel."""

    channel: str
    data: bytes


class Subscription(Protocol):
    """An open subscription: iterate it for messages; close it when done."""

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds."""
        ...

    async def close(self) -> None:
        """Stop receiving; iteration ends."""
        ...


@runtime_checkable
class PubSub(Protocol):
    """Fire-and-forget broadcast on named channels."""

    async def publish(self, channel: str, data: bytes) -> int:
        """Send ``data`` to current subscribers; return how many received it
        (a lower bound in distributed backends)."""
        ...

    async def subscribe(self, *channels: str) -> Subscription:
        """Subscribe to ``channels``; messages published after this returns arrive."""
        ...


# --- Blobs -------------------------------------------------------------------


@dataclass(frozen=True)
class BlobInfo:
    """What ``head`` tells of an object."""

    key: str
    size: int
    etag: str  # quoted hex MD5, like S3
    content_type: str
    modified: float  # seconds since the epoch
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Blob:
    """An object and its bytes."""

    info: BlobInfo
    data: bytes


@runtime_checkable
class Blobs(Protocol):
    """An object store with content types, user metadata and ETags."""

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Store an object, replacing any under ``key``; atomic for readers."""
        ...

    async def get(self, key: str) -> Blob | None:
        """The object, or None."""
        ...

    async def head(self, key: str) -> BlobInfo | None:
        """The object's information without its bytes, or None."""
        ...

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> list[BlobInfo]:
        """Objects whose key starts with ``prefix``, in key order."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove an object; return whether it existed."""
        ...
