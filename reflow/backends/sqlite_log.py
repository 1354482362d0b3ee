"""The Log primitive over SQLite: streams, consumer groups, leases, trimming.

Four tables hold everything, so any process that opens the file sees the same
streams, groups and leases (nothing is kept only in memory):

* ``log_streams`` — one row per stream with the last id handed out, so ids
  keep increasing across trims and across processes, and its length (kept
  by every append, trim and delete, so ``length`` need not count rows);
* ``log_entries`` — ``(stream, ms, seq) -> data``, clustered on the id;
* ``log_groups`` — per group, the last id delivered to it;
* ``log_pending`` — entries delivered and not acknowledged: who holds each,
  how often it was delivered, and until when its lease runs (clock seconds).

Every operation that reads and then writes (append, read with leases, trim)
runs as one job on the writer lane, inside ``BEGIN IMMEDIATE``: two processes
can never hand out the same id or lease the same entry. Leases are compared
with the injected clock's ``time()``.

Appends (and group and stream changes) are fsynced before they return. The
lease bookkeeping — ``read``, ``ack``, ``trim`` — is committed without an
fsync (see :mod:`.sqlite_db`): a power cut may forget a lease or an ack, and
the entry is then simply delivered again, which at-least-once allows.

A blocking ``read`` polls a cheap read-only "is anything ready?" query with a
short back-off (2 ms doubling to 50 ms), and is woken at once by appends made
in this process (through any :class:`SQLiteLog` on the same file).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import Sequence
from functools import partial

from reflow.backends.protocols import LogEntry, PendingEntry, entry_id_key
from reflow.backends.sqlite_db import Database
from reflow.clock import Clock

__all__ = ["LOG_SCHEMA", "SQLiteLog"]

LOG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS log_streams (
        name TEXT PRIMARY KEY, last_ms INTEGER NOT NULL, last_seq INTEGER NOT NULL,
        length INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS log_entries (
        stream TEXT NOT NULL, ms INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (stream, ms, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS log_groups (
        stream TEXT NOT NULL, name TEXT NOT NULL,
        last_ms INTEGER NOT NULL, last_seq INTEGER NOT NULL,
        PRIMARY KEY (stream, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS log_pending (
        stream TEXT NOT NULL, grp TEXT NOT NULL, ms INTEGER NOT NULL, seq INTEGER NOT NULL,
        consumer TEXT NOT NULL, deliveries INTEGER NOT NULL,
        delivered_at REAL NOT NULL, lease_until REAL NOT NULL,
        PRIMARY KEY (stream, grp, ms, seq)
    ) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS log_pending_lease
        ON log_pending (stream, grp, lease_until)""",
)

# Every SQLiteLog of this process, by database file, for in-process wake-ups.
_NEIGHBOURS: dict[str, weakref.WeakSet[SQLiteLog]] = {}

_MAX = 2**63 - 1  # SQLite's largest integer: the "+" end of a range
_BACKOFF_START = 0.002
_BACKOFF_MAX = 0.05

Key = tuple[int, int]


def _fmt(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


def _bound(text: str, *, low: bool) -> Key:
    """A range bound: ``-``, ``+``, a full id, or a bare millisecond time."""
    if text == "-":
        return (0, 0)
    if text == "+":
        return (_MAX, _MAX)
    if "-" in text:
        return entry_id_key(text)
    return (int(text), 0 if low else _MAX)


class SQLiteLog:
    """Streams with consumer groups and leases in a SQLite file."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        # Appends made in this process wake its blocked readers at once (every
        # SQLiteLog on the same file is told); other processes' appends are
        # found by polling.
        self._arrived: dict[str, tuple[asyncio.Event, asyncio.AbstractEventLoop]] = {}
        self._file = str(db.path.resolve())
        _NEIGHBOURS.setdefault(self._file, weakref.WeakSet()).add(self)

    def _wake(self, stream: str) -> None:
        waiting = self._arrived.pop(stream, None)
        if waiting is None:
            return
        event, loop = waiting
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            event.set()
        else:  # a reader on another thread's loop
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    # --- writes ------------------------------------------------------------

    async def append(self, stream: str, data: bytes) -> str:
        """Append ``data``; return the new id. Durable when it returns."""
        return (await self.append_many(stream, [data]))[0]

    async def append_many(self, stream: str, items: Sequence[bytes]) -> list[str]:
        """Append ``items`` in one transaction; return their ids. Durable when it returns."""
        if not items:
            return []
        now_ms = int(self._clock.time() * 1000)
        payloads = [bytes(data) for data in items]
        keys = await self._db.write(partial(_append, stream=stream, now_ms=now_ms, items=payloads))
        for log in list(_NEIGHBOURS.get(self._file, ())):
            log._wake(stream)
        return [_fmt(key) for key in keys]

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        """Create ``group`` at ``start`` (``"0"`` or ``"$"`` or an id); False if it existed."""
        return await self._db.write(lambda c: _create_group(c, stream, group, start))

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
        """Expired leases first, then new entries; each held for ``lease`` seconds."""
        deadline = self._clock.monotonic() + block
        backoff = _BACKOFF_START
        while True:
            now = self._clock.time()
            entries = await self._db.write(
                durable=False,
                job=partial(
                    _take,
                    stream=stream,
                    group=group,
                    consumer=consumer,
                    count=count,
                    lease=lease,
                    now=now,
                ),
            )
            if entries or block <= 0:
                return entries
            # Wait until something is ready, without holding the write lock.
            while True:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    return []
                event, _ = self._arrived.setdefault(
                    stream, (asyncio.Event(), asyncio.get_running_loop())
                )
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that lands as the event fires.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, backoff)):
                        await event.wait()
                backoff = min(backoff * 2, _BACKOFF_MAX)
                now = self._clock.time()
                if event.is_set() or await self._db.read(
                    partial(_ready, stream=stream, group=group, now=now)
                ):
                    break

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge ``ids``; return how many were pending."""
        keys = [entry_id_key(i) for i in ids]

        def job(c: sqlite3.Connection) -> int:
            done = 0
            for ms, seq in keys:
                cursor = c.execute(
                    "DELETE FROM log_pending WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?",
                    (stream, group, ms, seq),
                )
                done += cursor.rowcount
            return done

        return await self._db.write(job, durable=False) if keys else 0

    async def trim(
        self, stream: str, *, max_length: int | None = None, max_age: float | None = None
    ) -> int:
        """Drop the oldest entries beyond ``max_length`` or older than ``max_age`` s."""
        oldest_ms = None if max_age is None else int((self._clock.time() - max_age) * 1000)

        def job(c: sqlite3.Connection) -> int:
            dropped = 0
            if oldest_ms is not None:
                dropped += c.execute(
                    "DELETE FROM log_entries WHERE stream = ? AND ms < ?", (stream, oldest_ms)
                ).rowcount
            if max_length is not None:
                row = c.execute(
                    "SELECT length FROM log_streams WHERE name = ?", (stream,)
                ).fetchone()
                cut = (row[0] if row else 0) - dropped - max(0, max_length)
                if cut > 0:
                    # The oldest entry to keep is the cut-th from the start.
                    keep = c.execute(
                        "SELECT ms, seq FROM log_entries WHERE stream = ? "
                        "ORDER BY ms, seq LIMIT 1 OFFSET ?",
                        (stream, cut),
                    ).fetchone()
                    if keep is None:
                        dropped += c.execute(
                            "DELETE FROM log_entries WHERE stream = ?", (stream,)
                        ).rowcount
                    else:
                        dropped += c.execute(
                            "DELETE FROM log_entries WHERE stream = ? AND (ms, seq) < (?, ?)",
                            (stream, keep[0], keep[1]),
                        ).rowcount
            if dropped:
                c.execute(
                    "UPDATE log_streams SET length = length - ? WHERE name = ?", (dropped, stream)
                )
            return dropped

        return await self._db.write(job, durable=False)

    async def delete_stream(self, stream: str) -> bool:
        """Remove the stream, its entries, groups and leases; whether it existed."""

        def job(c: sqlite3.Connection) -> bool:
            existed = c.execute("DELETE FROM log_streams WHERE name = ?", (stream,)).rowcount
            existed += c.execute("DELETE FROM log_groups WHERE stream = ?", (stream,)).rowcount
            existed += c.execute("DELETE FROM log_entries WHERE stream = ?", (stream,)).rowcount
            c.execute("DELETE FROM log_pending WHERE stream = ?", (stream,))
            return existed > 0

        return await self._db.write(job)

    # --- reads -------------------------------------------------------------

    async def pending(
        self, stream: str, group: str, *, count: int = 100, consumer: str | None = None
    ) -> list[PendingEntry]:
        """Entries delivered and not acknowledged, oldest first."""
        now = self._clock.time()
        sql = (
            "SELECT ms, seq, consumer, deliveries, delivered_at FROM log_pending "
            "WHERE stream = ? AND grp = ?"
        )
        params: list[object] = [stream, group]
        if consumer is not None:
            sql += " AND consumer = ?"
            params.append(consumer)
        sql += " ORDER BY ms, seq LIMIT ?"
        params.append(max(0, count))
        rows = await self._db.read(lambda c: c.execute(sql, params).fetchall())
        return [
            PendingEntry(_fmt((ms, seq)), who, deliveries, max(0.0, now - at))
            for ms, seq, who, deliveries, at in rows
        ]

    async def range(
        self, stream: str, *, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[LogEntry]:
        """Entries with ids in ``[start, end]``, in order."""
        lo, hi = _bound(start, low=True), _bound(end, low=False)
        limit = -1 if count is None else max(0, count)
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT ms, seq, data FROM log_entries WHERE stream = ? "
                "AND (ms, seq) >= (?, ?) AND (ms, seq) <= (?, ?) ORDER BY ms, seq LIMIT ?",
                (stream, lo[0], lo[1], hi[0], hi[1], limit),
            ).fetchall()
        )
        return [LogEntry(stream, _fmt((ms, seq)), bytes(data)) for ms, seq, data in rows]

    async def length(self, stream: str) -> int:
        """How many entries the stream holds."""
        row = await self._db.read(
            lambda c: c.execute(
                "SELECT length FROM log_streams WHERE name = ?", (stream,)
            ).fetchone()
        )
        return 0 if row is None else int(row[0])


# --- jobs (run on the database threads) ------------------------------------


def _append(c: sqlite3.Connection, stream: str, now_ms: int, items: list[bytes]) -> list[Key]:
    row = c.execute(
        "SELECT last_ms, last_seq FROM log_streams WHERE name = ?", (stream,)
    ).fetchone()
    last: Key = (row[0], row[1]) if row else (0, -1)
    # Ids keep increasing even if the clock went back: the same millisecond
    # as the last id (or an earlier one) continues its sequence.
    ms, seq = (last[0], last[1] + 1) if now_ms <= last[0] else (now_ms, 0)
    keys = [(ms, seq + offset) for offset in range(len(items))]
    c.execute(
        "INSERT INTO log_streams (name, last_ms, last_seq, length) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET last_ms = excluded.last_ms, "
        "last_seq = excluded.last_seq, length = length + excluded.length",
        (stream, keys[-1][0], keys[-1][1], len(keys)),
    )
    c.executemany(
        "INSERT INTO log_entries (stream, ms, seq, data) VALUES (?, ?, ?, ?)",
        [(stream, key[0], key[1], data) for key, data in zip(keys, items, strict=True)],
    )
    return keys


def _create_group(c: sqlite3.Connection, stream: str, group: str, start: str) -> bool:
    if c.execute(
        "SELECT 1 FROM log_groups WHERE stream = ? AND name = ?", (stream, group)
    ).fetchone():
        return False
    row = c.execute(
        "SELECT last_ms, last_seq FROM log_streams WHERE name = ?", (stream,)
    ).fetchone()
    if row is None:
        # Creating a group creates the stream, as Redis' MKSTREAM does.
        c.execute("INSERT INTO log_streams (name, last_ms, last_seq) VALUES (?, 0, -1)", (stream,))
    if start == "$":
        last: Key = (row[0], row[1]) if row else (0, -1)
    elif start == "0":
        last = (0, -1)
    else:
        last = _bound(start, low=True)
    c.execute(
        "INSERT INTO log_groups (stream, name, last_ms, last_seq) VALUES (?, ?, ?, ?)",
        (stream, group, last[0], last[1]),
    )
    return True


def _take(
    c: sqlite3.Connection,
    stream: str,
    group: str,
    consumer: str,
    count: int,
    lease: float,
    now: float,
) -> list[LogEntry]:
    row = c.execute(
        "SELECT last_ms, last_seq FROM log_groups WHERE stream = ? AND name = ?",
        (stream, group),
    ).fetchone()
    if row is None:
        _create_group(c, stream, group, "0")
        row = (0, -1)
    out: list[LogEntry] = []
    # Expired leases first: their entries go to whoever reads next. Paged by
    # id, so a backlog of expired leases is never loaded all at once.
    after: Key = (-1, -1)
    while len(out) < count:
        page = c.execute(
            "SELECT p.ms, p.seq, p.deliveries, e.data FROM log_pending AS p "
            "LEFT JOIN log_entries AS e "
            "  ON e.stream = p.stream AND e.ms = p.ms AND e.seq = p.seq "
            "WHERE p.stream = ? AND p.grp = ? AND p.lease_until <= ? AND (p.ms, p.seq) > (?, ?) "
            "ORDER BY p.ms, p.seq LIMIT ?",
            (stream, group, now, after[0], after[1], count),
        ).fetchall()
        if not page:
            break
        for ms, seq, deliveries, data in page:
            if len(out) >= count:
                break
            after = (ms, seq)
            if data is None:  # trimmed away while pending: nothing left to deliver
                c.execute(
                    "DELETE FROM log_pending WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?",
                    (stream, group, ms, seq),
                )
                continue
            c.execute(
                "UPDATE log_pending SET consumer = ?, deliveries = ?, delivered_at = ?, "
                "lease_until = ? WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?",
                (consumer, deliveries + 1, now, now + lease, stream, group, ms, seq),
            )
            out.append(LogEntry(stream, _fmt((ms, seq)), bytes(data), deliveries + 1))
    room = count - len(out)
    if room <= 0:
        return out
    fresh = c.execute(
        "SELECT ms, seq, data FROM log_entries WHERE stream = ? AND (ms, seq) > (?, ?) "
        "ORDER BY ms, seq LIMIT ?",
        (stream, row[0], row[1], room),
    ).fetchall()
    if not fresh:
        return out
    c.executemany(
        "INSERT OR REPLACE INTO log_pending "
        "(stream, grp, ms, seq, consumer, deliveries, delivered_at, lease_until) "
        "VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
        [(stream, group, ms, seq, consumer, now, now + lease) for ms, seq, _ in fresh],
    )
    last_ms, last_seq, _ = fresh[-1]
    c.execute(
        "UPDATE log_groups SET last_ms = ?, last_seq = ? WHERE stream = ? AND name = ?",
        (last_ms, last_seq, stream, group),
    )
    out.extend(LogEntry(stream, _fmt((ms, seq)), bytes(data), 1) for ms, seq, data in fresh)
    return out


def _ready(c: sqlite3.Connection, stream: str, group: str, now: float) -> bool:
    """Whether a read of ``group`` would deliver something now (read-only)."""
    row = c.execute(
        "SELECT EXISTS (SELECT 1 FROM log_groups AS g JOIN log_entries AS e "
        "  ON e.stream = g.stream AND (e.ms, e.seq) > (g.last_ms, g.last_seq) "
        "  WHERE g.stream = ? AND g.name = ?) "
        "OR EXISTS (SELECT 1 FROM log_pending WHERE stream = ? AND grp = ? AND lease_until <= ?)",
        (stream, group, stream, group, now),
    ).fetchone()
    return bool(row[0])
