"""PubSub for the embedded engine: in-process fan-out, plus the other processes.

The embedded mode runs several worker processes on one machine, and an
invalidation published in one must reach the edge caches of all. Two designs
were weighed:

* **unix datagram sockets**, one per subscriber process: pushes with no
  polling, but needs a registry of live sockets, cleanup of the sockets of
  dead processes, and datagram size limits;
* **a table of recent messages** polled by each subscribing process: a few
  milliseconds of latency and a cheap query every few milliseconds while
  anyone is subscribed, in exchange for nothing to register or clean up —
  a dead process simply stops polling.

We take the table. It lives in its own SQLite file next to the database
(``<db>.pubsub``), with ``synchronous=OFF``: messages are fire-and-forget, so
they need no fsync, and publishing never contends with the main file's write
lock. Each row carries the publishing object's *origin*; subscribers in the
publishing process get the message at once, in memory, and the poller skips
rows of its own origin. The poller asks ``PRAGMA data_version`` (which changes
only when another connection commits) every :data:`POLL_INTERVAL` seconds and
reads new rows only when it moved. The table keeps the newest
:data:`KEEP_MESSAGES` rows; a subscriber further behind than that loses
messages, as a slow Redis pub/sub subscriber would.

A subscriber sees only messages published after ``subscribe`` returned: it
remembers the newest row at that moment and skips everything up to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from functools import partial

from reflow.backends.protocols import Message
from reflow.backends.sqlite_db import Database
from reflow.backends.subscription import QueuedSubscription

__all__ = ["KEEP_MESSAGES", "POLL_INTERVAL", "PUBSUB_SCHEMA", "SQLitePubSub"]

PUBSUB_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL, data BLOB NOT NULL, origin TEXT NOT NULL
    )""",
)
POLL_INTERVAL = 0.005
KEEP_MESSAGES = 10_000
_TRIM_EVERY = 256  # publishes between trims of the message table

_log = logging.getLogger("reflow.backends")

Row = tuple[int, str, bytes, str]


class _Subscription(QueuedSubscription):
    """An open subscription; iterate it, or ``get`` with a timeout."""

    def __init__(self, hub: SQLitePubSub, channels: tuple[str, ...], since: int) -> None:
        super().__init__(channels)
        self._hub = hub
        self.since = since  # rows up to this one were published before we subscribed

    async def _detach(self) -> None:
        await self._hub._drop(self)


class SQLitePubSub:
    """Broadcast to subscribers in this process and, by polling, in others."""

    def __init__(self, db: Database, *, poll_interval: float = POLL_INTERVAL) -> None:
        self._db = db
        self._poll_interval = poll_interval
        self._origin = uuid.uuid4().hex
        self._subscribers: dict[str, list[_Subscription]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._seen = 0
        self._published = 0

    async def publish(self, channel: str, data: bytes) -> int:
        """Deliver to local subscribers now and record the message for other processes.

        Returns how many local subscribers received it (a lower bound).
        """
        payload = bytes(data)
        receivers = list(self._subscribers.get(channel, ()))
        for sub in receivers:
            sub.queue.put_nowait(Message(channel, payload))
        self._published += 1
        trim = self._published % _TRIM_EVERY == 0
        origin = self._origin

        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO messages (channel, data, origin) VALUES (?, ?, ?)",
                (channel, payload, origin),
            )
            if trim:
                c.execute(
                    "DELETE FROM messages WHERE seq <= (SELECT MAX(seq) FROM messages) - ?",
                    (KEEP_MESSAGES,),
                )

        await self._db.write(job)
        return len(receivers)

    async def subscribe(self, *channels: str) -> _Subscription:
        """Subscribe to ``channels``; messages published after this returns arrive."""
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        newest = await self._db.read(_newest)
        sub = _Subscription(self, channels, newest)
        for channel in channels:
            self._subscribers.setdefault(channel, []).append(sub)
        if self._poller is None:
            self._seen = newest
            self._poller = asyncio.create_task(self._poll(), name="reflow-pubsub-poller")
        return sub

    async def _drop(self, sub: _Subscription) -> None:
        for channel in sub.channels:
            subs = self._subscribers.get(channel, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self._subscribers.pop(channel, None)
        if not self._subscribers:
            await self.stop()

    async def stop(self) -> None:
        """Stop polling (subscriptions stay open but receive only local messages)."""
        poller, self._poller = self._poller, None
        if poller is not None and poller is not asyncio.current_task():
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def close(self) -> None:
        """Close every subscription and stop polling."""
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.closed = True
                sub.queue.put_nowait(None)
        self._subscribers.clear()
        await self.stop()

    async def _poll(self) -> None:
        try:
            await self._poll_rows()
        except Exception as exc:
            # Left running without the poller, subscriptions would silently hear
            # only this process. Ending them tells subscribers they may have missed
            # messages; the next subscribe starts a new poller.
            _log.warning("the PubSub poller failed, ending its subscriptions: %r", exc)
            self._poller = None
            await self.close()

    async def _poll_rows(self) -> None:
        version: int | None = None
        while True:
            await asyncio.sleep(self._poll_interval)
            seen = self._seen
            rows, version = await self._db.read(partial(_fetch, seen=seen, version=version))
            for seq, channel, data, origin in rows:
                self._seen = max(self._seen, seq)
                if origin == self._origin:
                    continue  # already delivered in memory when it was published
                for sub in list(self._subscribers.get(channel, ())):
                    if seq > sub.since:
                        sub.queue.put_nowait(Message(channel, bytes(data)))


def _newest(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()
    return int(row[0])


def _fetch(c: sqlite3.Connection, seen: int, version: int | None) -> tuple[list[Row], int]:
    """Rows after ``seen``, read only when another connection has committed since."""
    current = int(c.execute("PRAGMA data_version").fetchone()[0])
    if current == version:
        return [], current
    rows = c.execute(
        "SELECT seq, channel, data, origin FROM messages WHERE seq > ? ORDER BY seq", (seen,)
    ).fetchall()
    return rows, current
