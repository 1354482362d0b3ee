"""One SQLite database file, driven from asyncio without blocking the loop.

A :class:`Database` owns two connections, each on a thread of its own:

* the **writer** runs every read-modify-write. Jobs queue up in order (the
  jobs of one event-loop turn are handed over together, at the end of the
  turn); the thread takes all that are waiting (up to :data:`_BATCH`) and runs
  them in one ``BEGIN IMMEDIATE`` transaction, each inside a savepoint so that
  one job's error (a lost compare-and-set, say) undoes only that job. One commit, one
  fsync, for the whole batch: this "group commit" is what lets fifty
  concurrent writers cost little more than one. A job's future resolves only
  after the ``COMMIT`` returned, so a write is durable when it is awaited.
* the **reader** runs plain queries. In WAL mode readers never wait for the
  writer, and every query sees every transaction committed before it began.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL`` fsyncs the WAL on
every commit. (``NORMAL`` would only fsync at checkpoints, and a power cut
could then lose the last commits after ``append()``/``put()`` returned —
which the protocols promise never happens.) A job may say it needs no fsync
(``durable=False``): the Log's lease bookkeeping (``read``, ``ack``, ``trim``)
does, because losing it to a power cut only means an entry is delivered once
more — the at-least-once promise holds. A batch runs at ``FULL`` as soon as
one of its jobs is durable, and since the WAL is written in order, syncing it
also makes every earlier commit durable. A process that is killed loses
nothing either way: its commits are already in the operating system's hands.

Several processes may open the same file: ``BEGIN IMMEDIATE`` takes SQLite's
write lock before the transaction reads anything, so read-modify-write jobs of
different processes serialise, and ``busy_timeout`` makes a process wait its
turn rather than fail. Nothing that matters lives only in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from reflow.errors import BackendUnavailableError

__all__ = ["Database", "Job"]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

_BATCH = 128  # most jobs one write transaction takes from the queue
BUSY_TIMEOUT = 30.0  # seconds a process waits for another's write lock


# One queued job: (job, durable, single, loop, future). A plain tuple, not a
# dataclass: one is built per write on the event loop, and a tuple costs a
# fraction of an object with an ``__init__``. ``single`` means the job changes
# the database with one statement at most, or fails having changed nothing:
# it needs no savepoint (a statement is atomic by itself).
_Work = tuple[Job[Any], bool, bool, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Outcome = tuple[Any, BaseException | None]

# Bumped in a child after fork(): a lane made before it has no threads there.
# (Checked per write instead of os.getpid(), which is a system call.)
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def _settle_all(settled: list[tuple[asyncio.Future[Any], _Outcome]]) -> None:
    for future, (result, error) in settled:
        if future.done():  # the caller was cancelled; the job ran anyway
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, busy-waiting."""
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        _enter_wal(connection)
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    except BaseException:
        connection.close()
        raise
    return connection


def _enter_wal(connection: sqlite3.Connection) -> None:
    """Switch to WAL, retrying while another process is switching or recovering.

    Switching needs a moment of exclusive access, and SQLite answers "database
    is locked" at once, without its busy handler, when another connection is
    opening the same new file (seen with four processes opening one file
    together), so the busy timeout alone does not cover it.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    pause = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class _Lane:
    """One connection on one thread; jobs run in the order they were queued."""

    def __init__(
        self, name: str, path: Path, *, transactional: bool, synchronous: str = "FULL"
    ) -> None:
        self._path = path
        self._transactional = transactional
        self._synchronous = synchronous
        # FULL lanes drop to NORMAL for batches that need no fsync; an OFF
        # lane (pub/sub) stays OFF.
        self._level = synchronous if synchronous == "OFF" else "FULL"
        self._queue: queue.SimpleQueue[list[_Work] | None] = queue.SimpleQueue()
        # Jobs submitted during one turn of an event loop, handed over together
        # at the end of that turn: a gather() of a hundred writes reaches the
        # thread as one list, instead of waking it (and fighting it for the
        # GIL) a hundred times.
        self._pending: dict[asyncio.AbstractEventLoop, list[_Work]] = {}
        self._started: Future[None] = Future()
        self._connection: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._closed = False
        self._forks = _forks

    def start(self) -> Future[None]:
        """Start the thread; the future settles once its connection is open."""
        self._thread.start()
        return self._started

    async def run(self, job: Job[T], *, durable: bool = True, single: bool = False) -> T:
        """Run ``job(connection)`` on the lane's thread and return its result."""
        if self._closed:
            raise BackendUnavailableError(f"sqlite:///{self._path}", "the backend is closed")
        if _forks != self._forks:
            # After fork() the child has the objects but not the threads.
            raise BackendUnavailableError(
                f"sqlite:///{self._path}",
                "opened in another process (before a fork); open the backend again here",
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._hand_over, loop)
        pending.append((job, durable, single, loop, future))
        return await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, None)
        if batch:
            self._queue.put(batch)

    def stop(self) -> None:
        """Let queued jobs finish, then close the connection and end the thread."""
        if not self._closed:
            self._closed = True
            for loop in list(self._pending):
                self._hand_over(loop)
            self._queue.put(None)

    def join(self) -> None:
        """Wait for the thread to end (call after :meth:`stop`)."""
        if self._thread.is_alive():
            self._thread.join()

    def _main(self) -> None:
        try:
            self._connection = connect(self._path, synchronous=self._synchronous)
        except BaseException as exc:
            self._started.set_exception(exc)
            return
        self._started.set_result(None)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                # Take whatever else is already waiting: one transaction (and
                # one wake-up of each waiting event loop) for all of it.
                batch = list(first)
                stop = False
                while len(batch) < _BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.extend(more)
                if self._transactional:
                    outcomes = self._run_transaction(self._connection, batch)
                else:
                    outcomes = [_attempt(self._connection, work) for work in batch]
                self._report(batch, outcomes)
                if stop:
                    return
        finally:
            self._connection.close()

    def _report(self, batch: list[_Work], outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], _Outcome]]] = {}
        for (_, _, _, loop, future), outcome in zip(batch, outcomes, strict=True):
            error = outcome[1]
            if isinstance(error, sqlite3.Error):
                # "database is locked" after the busy timeout, a full disk, an
                # I/O error: callers see reflow's tree, naming the file.
                wrapped = BackendUnavailableError(f"sqlite:///{self._path}", str(error))
                wrapped.__cause__ = error
                outcome = (None, wrapped)
            settled = by_loop.get(loop)
            if settled is None:
                settled = by_loop[loop] = []
            settled.append((future, outcome))
        # One wake-up per waiting event loop for the whole batch.
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle_all, settled)

    def _run_transaction(
        self, connection: sqlite3.Connection, batch: list[_Work]
    ) -> list[_Outcome]:
        try:
            if self._synchronous == "OFF":
                level = "OFF"
            else:
                level = "FULL" if any(work[1] for work in batch) else "NORMAL"
            if level != self._level:
                connection.execute(f"PRAGMA synchronous={level}")
                self._level = level
            connection.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            return [(None, exc)] * len(batch)
        outcomes: list[_Outcome] = []
        try:
            for job, _, single, _, _ in batch:
                if single:
                    try:
                        outcomes.append((job(connection), None))
                    except BaseException as exc:
                        outcomes.append((None, exc))
                    continue
                connection.execute("SAVEPOINT job")
                try:
                    outcomes.append((job(connection), None))
                except BaseException as exc:
                    outcomes.append((None, exc))
                    connection.execute("ROLLBACK TO job")
                connection.execute("RELEASE job")
            connection.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            # Nothing of the batch is durable: every job fails with the cause.
            return [(None, exc)] * len(batch)
        return outcomes


def _attempt(connection: sqlite3.Connection, work: _Work) -> _Outcome:
    try:
        return work[0](connection), None
    except BaseException as exc:
        return None, exc


class Database:
    """A SQLite file with one writer lane and one reader lane."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        name = path.name
        self._writer = _Lane(
            f"reflow-sqlite-writer:{name}", path, transactional=True, synchronous=synchronous
        )
        self._reader = _Lane(
            f"reflow-sqlite-reader:{name}", path, transactional=False, synchronous=synchronous
        )

    @classmethod
    async def open(
        cls, path: Path, schema: Iterable[str], *, synchronous: str = "FULL"
    ) -> Database:
        """Open (creating if needed) the file at ``path`` and apply ``schema``.

        Raises :class:`BackendUnavailableError` naming the file when it cannot
        be opened.
        """
        database = cls(path, synchronous=synchronous)
        statements = list(schema)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The writer first, alone: it switches the file to WAL mode.
            await asyncio.wrap_future(database._writer.start())

            def apply(connection: sqlite3.Connection) -> None:
                for statement in statements:
                    connection.execute(statement)

            await database.write(apply)
            await asyncio.wrap_future(database._reader.start())
        except BackendUnavailableError:
            await database.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            await database.close()
            raise BackendUnavailableError(f"sqlite:///{path}", str(exc)) from exc
        return database

    def write(
        self, job: Job[T], *, durable: bool = True, single: bool = False
    ) -> Coroutine[Any, Any, T]:
        """Run ``job`` inside a write transaction; durable when it returns
        (with ``durable=False``: surviving a crash of the process, not of the machine).

        ``single=True`` promises that the job changes the database with one
        statement at most, or raises having changed nothing, so it runs
        without a savepoint of its own. (A plain function returning the lane's
        coroutine: one coroutine frame less per write.)
        """
        return self._writer.run(job, durable=durable, single=single)

    def read(self, job: Job[T]) -> Coroutine[Any, Any, T]:
        """Run ``job`` on the reader connection (no transaction is held)."""
        return self._reader.run(job)

    async def close(self) -> None:
        """Finish queued jobs, then close both connections."""
        self._writer.stop()
        self._reader.stop()
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        self._writer.join()
        self._reader.join()
