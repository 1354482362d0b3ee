"""The embedded engine: SQLite for Log and KV, files for Blobs, a polled table for PubSub.

``sqlite:///PATH`` opens (creating if needed) one database file holding every
stream, group, lease and key, so several processes on one machine pointed at
the same file share one backend — the embedded mode's worker processes do
exactly that. What lives where:

=========  ==========================================  ==========================
primitive  storage                                     module
=========  ==========================================  ==========================
Log        tables ``log_*`` in ``PATH``                :mod:`.sqlite_log`
KV         table ``kv`` in ``PATH``                    :mod:`.sqlite_kv`
PubSub     ``PATH.pubsub`` (no fsync) + in-process     :mod:`.sqlite_pubsub`
Blobs      files under ``<data_dir>/blobs``            :mod:`.files`
=========  ==========================================  ==========================

The URL option ``?blobs=DIR`` puts the objects elsewhere (every process must
then be given the same one). :mod:`.sqlite_db` explains the threads, the
group commit and why ``synchronous=FULL``.
"""

from __future__ import annotations

from pathlib import Path

from reflow.backends import Backend
from reflow.backends.files import FileBlobs
from reflow.backends.sqlite_db import Database
from reflow.backends.sqlite_kv import KV_SCHEMA, SQLiteKV
from reflow.backends.sqlite_log import LOG_SCHEMA, SQLiteLog
from reflow.backends.sqlite_pubsub import PUBSUB_SCHEMA, SQLitePubSub
from reflow.clock import Clock
from reflow.config import BackendURL
from reflow.errors import BackendUnavailableError

__all__ = ["SCHEMA_VERSION", "open_sqlite"]

SCHEMA_VERSION = "1"
# The version is written once, by whoever creates the file; a later reflow
# whose tables differ raises its number and migrates, an older one refuses.
_META_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', '{SCHEMA_VERSION}')",
)


async def open_sqlite(url: BackendURL, *, data_dir: Path, clock: Clock) -> Backend:
    """Open the embedded backend a ``sqlite:///PATH`` URL names."""
    path = url.path if url.path is not None else data_dir / "reflow.db"
    database = await Database.open(path, (*_META_SCHEMA, *LOG_SCHEMA, *KV_SCHEMA))
    try:
        row = await database.read(
            lambda c: c.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        )
        if row is None or row[0] != SCHEMA_VERSION:
            found = "none" if row is None else row[0]
            raise BackendUnavailableError(
                str(url), f"{path} has schema version {found}; this reflow reads {SCHEMA_VERSION}"
            )
        # Pub/sub messages are fire-and-forget: no fsync, and their own file so
        # that publishing never waits for the main file's write lock.
        messages = await Database.open(
            path.with_name(path.name + ".pubsub"), PUBSUB_SCHEMA, synchronous="OFF"
        )
    except BaseException:
        await database.close()
        raise
    pubsub = SQLitePubSub(messages)
    blobs_dir = url.options.get("blobs")
    backend = Backend(
        url=url,
        log=SQLiteLog(database, clock),
        kv=SQLiteKV(database, clock),
        pubsub=pubsub,
        blobs=FileBlobs(Path(blobs_dir) if blobs_dir else data_dir / "blobs", clock),
        clock=clock,
    )
    # Closed in reverse order: subscriptions first, then the files.
    backend._closers.extend([database.close, messages.close, pubsub.close])
    return backend
