"""The KV primitive over SQLite: versions, compare-and-set, TTL, scans, transactions.

One table, ``kv (key, value, version, expires_at)``. A deleted key keeps its
row as a *tombstone* (``value`` NULL, ``expires_at`` the time it died) so
that its version survives: the contract promises a re-created key never
reuses an old version, and with several processes on one file that memory
must live in the file. An expired key is absent for every reader and for
compare-and-set, but its row (and so its version) stays until it is written
again or swept into a tombstone.

Tombstones do not stay forever: :meth:`SQLiteKV.collect` deletes those dead
longer than a grace period and, in the same transaction, raises the store's
*version floor* (table ``kv_floor``, one row) to at least the highest
version it dropped. A key with no row starts at ``floor + 1``, so a
re-created key still gets a version above any it had, and a fresh store
still starts every key at 1. Collection runs every 1,000 writes, a bounded
number of rows at a time (see ``docs/backends.md``, "KV tombstones").

Keys are ``TEXT`` compared with SQLite's ``BINARY`` collation, which is
``memcmp`` of the UTF-8 bytes: byte order, the order ``scan`` promises (and
the same as Python's ``str`` order, since UTF-8 preserves code point order).

Every write is one job on the writer lane (``BEGIN IMMEDIATE``), so the check
and the write of a compare-and-set, an ``incr`` or a whole ``transact`` are
atomic against every other process on the file. Expiry times are seconds on
the injected clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from reflow.backends.protocols import Check, Delete, Item, Operation, Put
from reflow.backends.sqlite_db import Database
from reflow.clock import Clock
from reflow.errors import TransactionConflictError, VersionConflictError

__all__ = ["COLLECT_LIMIT", "GRACE", "KV_SCHEMA", "SQLiteKV", "prefix_upper_bound"]

T = TypeVar("T")

KV_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY, value BLOB, version INTEGER NOT NULL, expires_at REAL
    ) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at)
        WHERE expires_at IS NOT NULL AND value IS NOT NULL""",
    # Tombstones by when they died (NULL: before deaths were recorded), for
    # the collector. Added to older files on open: no schema version change.
    """CREATE INDEX IF NOT EXISTS kv_dead ON kv (expires_at) WHERE value IS NULL""",
    # The version floor: every version ever dropped by the collector is at
    # most this, and a key with no row starts above it.
    """CREATE TABLE IF NOT EXISTS kv_floor (
        id INTEGER PRIMARY KEY CHECK (id = 0), floor INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO kv_floor (id, floor) VALUES (0, 0)",
)

GRACE = 60.0  # seconds a tombstone is kept before the collector may drop it
COLLECT_LIMIT = 1000  # most rows one collection transaction drops

_LIVE = "value IS NOT NULL AND (expires_at IS NULL OR expires_at > ?)"
_SWEEP_EVERY = 1000  # writes between sweeps + collections of expired values and tombstones
_FLOOR = "(SELECT floor FROM kv_floor WHERE id = 0)"
_IN_CHUNK = 500  # keys per "IN (...)" query, well under SQLite's variable limit


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    None when there is none (the empty prefix, or one made only of the
    largest code point).
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            following = last + 1
            if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be stored as UTF-8
                following = 0xE000
            return "".join(chars) + chr(following)
    return None


def _floor(c: sqlite3.Connection) -> int:
    """The store's version floor: a key with no row starts above it."""
    row = c.execute(f"SELECT {_FLOOR}").fetchone()
    return int(row[0] or 0)


def _current(c: sqlite3.Connection, key: str, now: float) -> tuple[int, int]:
    """``(live version or 0, the version a new write continues from)`` of ``key``:
    its last version, or the floor when it has no row."""
    row = c.execute(
        "SELECT version, value IS NOT NULL AND (expires_at IS NULL OR expires_at > ?) "
        "FROM kv WHERE key = ?",
        (now, key),
    ).fetchone()
    if row is None:
        return 0, _floor(c)
    return (row[0] if row[1] else 0), row[0]


def _store(
    c: sqlite3.Connection, key: str, value: bytes, last: int, expires_at: float | None
) -> int:
    version = last + 1
    c.execute(
        "INSERT INTO kv (key, value, version, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
        "version = excluded.version, expires_at = excluded.expires_at",
        (key, value, version, expires_at),
    )
    return version


# The three forms of a put, each one statement returning the new version (no
# row: the compare-and-set did not apply). Versions continue past tombstones;
# a key with no row (never written, or its tombstone collected) starts above
# the floor.
_PUT = (
    f"INSERT INTO kv (key, value, version, expires_at) VALUES (?, ?, {_FLOOR} + 1, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
    "version = kv.version + 1, expires_at = excluded.expires_at "
    "RETURNING version"
)
_CREATE = (
    f"INSERT INTO kv (key, value, version, expires_at) VALUES (?, ?, {_FLOOR} + 1, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
    "version = kv.version + 1, expires_at = excluded.expires_at "
    "WHERE NOT (kv.value IS NOT NULL AND (kv.expires_at IS NULL OR kv.expires_at > ?)) "
    "RETURNING version"
)
_REPLACE = (
    "UPDATE kv SET value = ?, version = version + 1, expires_at = ? "
    f"WHERE key = ? AND version = ? AND {_LIVE} RETURNING version"
)


def _tombstone(c: sqlite3.Connection, key: str, now: float) -> None:
    # expires_at of a tombstone: when it died, for the collector's grace.
    c.execute("UPDATE kv SET value = NULL, expires_at = ? WHERE key = ?", (now, key))


# What the collector drops, in turn: tombstones from before deaths were
# recorded, tombstones dead since before the cut-off, values expired before
# it. Each is a search of a partial index (no scan of young tombstones).
_DEAD = (
    "value IS NULL AND expires_at IS NULL AND ? IS NOT NULL",
    "value IS NULL AND expires_at <= ?",
    "value IS NOT NULL AND expires_at IS NOT NULL AND expires_at <= ?",
)


def _collect(c: sqlite3.Connection, *, before: float, limit: int) -> int:
    """Drop up to ``limit`` rows dead since before ``before`` and raise the
    floor over their versions, in the caller's transaction; how many went."""
    top, dropped = 0, 0
    for where in _DEAD:
        if dropped >= limit:
            break
        for (version,) in c.execute(
            f"DELETE FROM kv WHERE key IN (SELECT key FROM kv WHERE {where} LIMIT ?) "
            "RETURNING version",
            (before, limit - dropped),
        ):
            top = max(top, version)
            dropped += 1
    if dropped:
        c.execute("UPDATE kv_floor SET floor = max(floor, ?) WHERE id = 0", (top,))
    return dropped


class SQLiteKV:
    """Versioned keys in a SQLite file; TTLs on the injected clock."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._writes = 0

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock.time() + ttl

    async def _sweep(self) -> None:
        """Expired values would otherwise stay on disk until rewritten, and
        tombstones forever."""
        now = self._clock.time()
        await self._db.write(
            lambda c: (
                c.execute(
                    # A swept value's tombstone keeps its expiry: when it died.
                    "UPDATE kv SET value = NULL "
                    "WHERE expires_at IS NOT NULL AND value IS NOT NULL AND expires_at <= ?",
                    (now,),
                ).rowcount
            )
        )
        await self.collect()

    async def collect(self, *, grace: float = GRACE, limit: int = COLLECT_LIMIT) -> int:
        """Drop up to ``limit`` tombstones (and expired values) dead for more
        than ``grace`` seconds, raising the version floor over them in the same
        transaction; return how many rows went. Never needed for correctness:
        it only frees space. Runs by itself every 1,000 writes."""
        before = self._clock.time() - grace
        return await self._db.write(partial(_collect, before=before, limit=max(0, limit)))

    async def _write(self, job: Callable[[sqlite3.Connection], T], *, single: bool = False) -> T:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            await self._sweep()
        return await self._db.write(job, single=single)

    async def get(self, key: str) -> Item | None:
        """The item, or None when absent or expired."""
        now = self._clock.time()
        row = await self._db.read(
            lambda c: c.execute(
                f"SELECT value, version, expires_at FROM kv WHERE key = ? AND {_LIVE}",
                (key, now),
            ).fetchone()
        )
        return None if row is None else Item(key, bytes(row[0]), row[1], row[2])

    async def get_many(self, keys: Sequence[str]) -> list[Item | None]:
        """Items for ``keys``, in the order asked."""
        now = self._clock.time()
        wanted = list(dict.fromkeys(keys))

        def job(c: sqlite3.Connection) -> dict[str, Item]:
            found: dict[str, Item] = {}
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, value, version, expires_at in c.execute(
                    f"SELECT key, value, version, expires_at FROM kv "
                    f"WHERE key IN ({marks}) AND {_LIVE}",
                    (*chunk, now),
                ):
                    found[key] = Item(key, bytes(value), version, expires_at)
            return found

        found = await self._db.read(job) if wanted else {}
        return [found.get(key) for key in keys]

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        ttl: float | None = None,
    ) -> int:
        """Store ``value``; compare-and-set when ``expect_version`` is given."""
        now = self._clock.time()
        expires_at = self._expiry(ttl)
        payload = bytes(value)

        # One statement per put (a compare-and-set is a conditional upsert
        # whose row count says whether it applied), so the job needs no
        # savepoint; on a conflict nothing changed and a read names the
        # version that is there.
        args: tuple[object, ...]
        if expect_version is None:
            sql, args = _PUT, (key, payload, expires_at)
        elif expect_version == 0:
            sql, args = _CREATE, (key, payload, expires_at, now)
        else:
            sql, args = _REPLACE, (payload, expires_at, key, expect_version, now)

        def job(c: sqlite3.Connection) -> int:
            row = c.execute(sql, args).fetchone()
            if row is None:
                assert expect_version is not None
                raise VersionConflictError(key, expect_version, _current(c, key, now)[0])
            return int(row[0])

        # Inlined _write: a put is the hot path of durable executions.
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            await self._sweep()
        return await self._db.write(job, single=True)

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        """Remove ``key``; whether it existed. Conditional like ``put``."""
        now = self._clock.time()

        def job(c: sqlite3.Connection) -> int:
            live, _ = _current(c, key, now)
            if expect_version is not None and live != expect_version:
                raise VersionConflictError(key, expect_version, live)
            if not live:
                return 0
            _tombstone(c, key, now)
            return 1

        return bool(await self._write(job))

    async def incr(self, key: str, by: int = 1, *, ttl: float | None = None) -> int:
        """Add ``by`` to the integer at ``key`` (absent: 0); ``ttl`` only on creation."""
        now = self._clock.time()
        new_expiry = self._expiry(ttl)

        def job(c: sqlite3.Connection) -> int:
            row = c.execute(
                f"SELECT value, version, expires_at, {_LIVE} FROM kv WHERE key = ?",
                (now, key),
            ).fetchone()
            last = row[1] if row else _floor(c)
            if row is None or not row[3]:  # absent or expired: a new counter
                total, expires_at = by, new_expiry
            else:
                try:
                    total = int(bytes(row[0])) + by
                except ValueError:
                    raise ValueError(
                        f"key {key!r} holds {bytes(row[0])[:40]!r}, not an integer; "
                        "incr cannot add to it"
                    ) from None
                expires_at = row[2]
            _store(c, key, str(total).encode(), last, expires_at)
            return total

        return await self._write(job)

    async def scan(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> list[Item]:
        """Live items whose key starts with ``prefix``, in key (byte) order."""
        now = self._clock.time()
        sql = f"SELECT key, value, version, expires_at FROM kv WHERE key >= ? AND {_LIVE}"
        params: list[object] = [prefix, now]
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            sql += " AND key < ?"
            params.append(upper)
        if start_after is not None:
            sql += " AND key > ?"
            params.append(start_after)
        sql += " ORDER BY key LIMIT ?"
        params.append(-1 if limit is None else max(0, limit))
        rows = await self._db.read(lambda c: c.execute(sql, params).fetchall())
        return [
            Item(key, bytes(value), version, expires_at)
            for key, value, version, expires_at in rows
            if key.startswith(prefix)
        ]

    async def transact(self, operations: Sequence[Operation]) -> list[int]:
        """Check every expectation, then apply every operation; or raise and write nothing."""
        now = self._clock.time()
        ops = list(operations)
        if not ops:
            return []
        expiries = [self._expiry(op.ttl) if isinstance(op, Put) else None for op in ops]
        self._writes += 1
        if len({op.key for op in ops}) == len(ops):
            # Distinct keys (the usual case): no operation can see another's
            # effect, so each may check and apply in one statement, in order;
            # the first failed expectation raises, and the job's savepoint
            # undoes what the earlier ones wrote.
            return await self._db.write(partial(_apply_each, ops=ops, expiries=expiries, now=now))
        return await self._db.write(partial(_check_then_apply, ops=ops, expiries=expiries, now=now))


def _apply_each(
    c: sqlite3.Connection, *, ops: list[Operation], expiries: list[float | None], now: float
) -> list[int]:
    """A transaction over distinct keys: each operation checked and applied in turn."""
    results: list[int] = []
    for op, expires_at in zip(ops, expiries, strict=True):
        if isinstance(op, Put):
            expected = op.expect_version
            if expected is None:
                row = c.execute(_PUT, (op.key, bytes(op.value), expires_at)).fetchone()
            elif expected == 0:
                row = c.execute(_CREATE, (op.key, bytes(op.value), expires_at, now)).fetchone()
            else:
                row = c.execute(
                    _REPLACE, (bytes(op.value), expires_at, op.key, expected, now)
                ).fetchone()
            if row is None:
                assert expected is not None  # an unconditional put always returns a row
                raise TransactionConflictError(op.key, expected, _current(c, op.key, now)[0])
            results.append(int(row[0]))
            continue
        if op.expect_version is not None:
            live, _ = _current(c, op.key, now)
            if live != op.expect_version:
                raise TransactionConflictError(op.key, op.expect_version, live)
        if isinstance(op, Delete):
            _tombstone(c, op.key, now)
            results.append(0)
        else:
            results.append(op.expect_version)
    return results


def _check_then_apply(
    c: sqlite3.Connection, *, ops: list[Operation], expiries: list[float | None], now: float
) -> list[int]:
    """A transaction naming a key twice: every expectation is checked against
    the state before any operation, then every operation applied in order."""
    for op in ops:
        if op.expect_version is None:
            continue
        live, _ = _current(c, op.key, now)
        if live != op.expect_version:
            raise TransactionConflictError(op.key, op.expect_version, live)
    results: list[int] = []
    for op, expires_at in zip(ops, expiries, strict=True):
        if isinstance(op, Put):
            _, last = _current(c, op.key, now)
            results.append(_store(c, op.key, bytes(op.value), last, expires_at))
        elif isinstance(op, Delete):
            _tombstone(c, op.key, now)
            results.append(0)
        elif isinstance(op, Check):
            results.append(op.expect_version)
    return results
