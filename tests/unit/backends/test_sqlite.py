"""What the SQLite engine promises beyond the shared contract.

Durability settings, several processes on one file, the group commit keeping
jobs apart, cross-process pub/sub, and the key-order helper.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends import Backend, Check, Delete, Put, entry_id_key, open_backend
from reflow.backends.sqlite_kv import prefix_upper_bound
from reflow.errors import BackendUnavailableError, TransactionConflictError, VersionConflictError


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    opened = await open_backend(f"sqlite:///{tmp_path / 'r.db'}", data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


async def reopen(tmp_path: Path) -> Backend:
    return await open_backend(f"sqlite:///{tmp_path / 'r.db'}", data_dir=tmp_path)


# --- the file ----------------------------------------------------------------


async def test_the_database_is_in_wal_mode_with_full_sync(backend: Backend) -> None:
    path = backend.url.path
    assert path is not None and path.exists()
    with closing(sqlite3.connect(path)) as probe:
        assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous is per connection: ask the engine's own writer.
    level = await backend.log._db.write(  # type: ignore[attr-defined]
        lambda c: c.execute("PRAGMA synchronous").fetchone()[0]
    )
    assert level == 2  # FULL
    # Lease bookkeeping may skip the fsync; a batch with one durable job may not.
    db = backend.log._db  # type: ignore[attr-defined]
    ask = "PRAGMA synchronous"
    assert await db.write(lambda c: c.execute(ask).fetchone()[0], durable=False) == 1
    assert await db.write(lambda c: c.execute(ask).fetchone()[0]) == 2


async def test_everything_survives_closing_and_reopening(tmp_path: Path) -> None:
    first = await reopen(tmp_path)
    entry_id = await first.log.append("s", b"kept")
    await first.log.read("s", "g", "c", lease=600)
    await first.kv.put("k", b"v")
    await first.kv.delete("k")
    await first.close()
    second = await reopen(tmp_path)
    try:
        (pending,) = await second.log.pending("s", "g")
        assert (pending.id, pending.consumer) == (entry_id, "c")
        # The tombstone keeps the version: the re-created key goes on from 2.
        assert await second.kv.put("k", b"again", expect_version=0) == 2
        newer = await second.log.append("s", b"after")
        assert entry_id_key(newer) > entry_id_key(entry_id)
    finally:
        await second.close()


async def test_a_closed_backend_refuses_work_naming_the_file(tmp_path: Path) -> None:
    opened = await reopen(tmp_path)
    await opened.close()
    with pytest.raises(BackendUnavailableError) as caught:
        await opened.kv.get("k")
    assert str(tmp_path / "r.db") in caught.value.url
    assert "closed" in caught.value.problem


async def test_an_unopenable_file_raises_backend_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(BackendUnavailableError) as caught:
        await open_backend(f"sqlite:///{blocker / 'r.db'}", data_dir=tmp_path)
    assert "r.db" in caught.value.url


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r.db").write_bytes(b"plain text, not SQLite" * 100)
    with pytest.raises(BackendUnavailableError) as caught:
        await reopen(tmp_path)
    assert "not a database" in caught.value.problem


async def test_a_schema_that_fails_to_apply_closes_the_threads(tmp_path: Path) -> None:
    import threading

    from reflow.backends.sqlite_db import Database

    with pytest.raises(BackendUnavailableError) as caught:
        await Database.open(tmp_path / "x.db", ["CREATE TABLE broken (", "SELECT 1"])
    assert "syntax error" in caught.value.problem or "incomplete" in caught.value.problem
    assert not [t for t in threading.enumerate() if t.name.endswith(":x.db")]


async def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    first = await reopen(tmp_path)
    await first.close()
    with closing(sqlite3.connect(tmp_path / "r.db")) as edit:
        edit.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
        edit.commit()
    with pytest.raises(BackendUnavailableError) as caught:
        await reopen(tmp_path)
    assert "schema version 99" in caught.value.problem


async def test_a_failed_job_in_a_group_commit_leaves_the_others_written(
    backend: Backend,
) -> None:
    await backend.kv.put("cas", b"0")
    results = await asyncio.gather(
        *(backend.kv.put(f"k{i}", b"x") for i in range(20)),
        backend.kv.put("cas", b"lost", expect_version=5),
        *(backend.kv.put(f"m{i}", b"y") for i in range(20)),
        return_exceptions=True,
    )
    assert [type(r) for r in results].count(VersionConflictError) == 1
    assert len(await backend.kv.scan("k")) == 20
    assert len(await backend.kv.scan("m")) == 20
    item = await backend.kv.get("cas")
    assert item is not None and item.value == b"0"


async def test_a_transaction_over_distinct_keys_applies_each_kind_of_operation(
    backend: Backend,
) -> None:
    kv = backend.kv
    await kv.put("replace", b"1")
    await kv.put("reborn", b"1")
    await kv.delete("reborn")  # a tombstone at version 1
    await kv.put("drop", b"1")
    await kv.put("checked", b"1")
    await kv.put("checked", b"2")
    versions = await kv.transact(
        [
            Put("replace", b"2", expect_version=1),
            Put("reborn", b"2", expect_version=0),
            Put("fresh", b"1", expect_version=0),
            Put("blind", b"1"),
            Delete("drop", expect_version=1),
            Check("checked", expect_version=2),
        ]
    )
    # A re-created key carries on from its tombstone's version.
    assert versions == [2, 2, 1, 1, 0, 2]
    items = await kv.get_many(["replace", "reborn", "fresh", "blind", "drop"])
    assert [(i.value, i.version) if i else None for i in items] == [
        (b"2", 2),
        (b"2", 2),
        (b"1", 1),
        (b"1", 1),
        None,
    ]


@pytest.mark.parametrize(
    "failing",
    [
        Put("held", b"x", expect_version=0),
        Put("held", b"x", expect_version=7),
        Delete("held", expect_version=7),
        Check("held", expect_version=0),
    ],
    ids=["create", "replace", "delete", "check"],
)
async def test_a_failed_expectation_after_writes_undoes_them(
    backend: Backend, failing: Put | Delete | Check
) -> None:
    kv = backend.kv
    await kv.put("held", b"1")
    await kv.put("before", b"1")
    with pytest.raises(TransactionConflictError) as caught:
        await kv.transact(
            [Put("before", b"2", expect_version=1), Put("new", b"x"), Delete("gone"), failing]
        )
    assert (caught.value.key, caught.value.actual) == ("held", 1)
    before, new, held = await kv.get_many(["before", "new", "held"])
    assert before is not None and (before.value, before.version) == (b"1", 1)
    assert new is None
    assert held is not None and held.version == 1
    # The undone writes left no versions behind either.
    assert await kv.put("new", b"y", expect_version=0) == 1


async def test_a_transaction_naming_a_key_twice_checks_before_writing(
    backend: Backend,
) -> None:
    # Every expectation holds against the state before the transaction, as
    # on the other engines; applying in order would fail the second put.
    await backend.kv.put("k", b"1")
    versions = await backend.kv.transact(
        [Put("k", b"2", expect_version=1), Put("k", b"3", expect_version=1)]
    )
    assert versions == [2, 3]
    item = await backend.kv.get("k")
    assert item is not None and (item.value, item.version) == (b"3", 3)


def test_a_backend_opened_before_a_fork_refuses_work_in_the_child(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    backend = loop.run_until_complete(
        open_backend(f"sqlite:///{tmp_path / 'r.db'}", data_dir=tmp_path)
    )
    try:
        pid = os.fork()
        if pid == 0:  # the child: the backend's threads did not come along
            code = 1
            try:
                child_loop = asyncio.new_event_loop()
                try:
                    child_loop.run_until_complete(backend.kv.get("k"))
                except BackendUnavailableError as error:
                    code = 0 if "fork" in error.problem else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's backend is untouched.
        assert loop.run_until_complete(backend.kv.put("k", b"v")) == 1
    finally:
        loop.run_until_complete(backend.close())
        loop.close()


async def test_a_blocked_read_sees_an_append_from_another_opener(
    backend: Backend, tmp_path: Path
) -> None:
    await backend.log.create_group("s", "g", start="$")
    other = await reopen(tmp_path)
    try:

        async def late() -> str:
            await asyncio.sleep(0.1)
            return await other.log.append("s", b"from-elsewhere")

        task = asyncio.create_task(late())
        loop = asyncio.get_running_loop()
        started = loop.time()
        entries = await backend.log.read("s", "g", "c", block=5)
        waited = loop.time() - started
        assert [e.id for e in entries] == [await task]
        assert waited < 1.0  # found by polling, not by the timeout
    finally:
        await other.close()


async def test_an_append_wakes_blocked_readers_of_every_opener_in_the_process(
    backend: Backend, tmp_path: Path
) -> None:
    await backend.log.create_group("s", "g", start="$")
    other = await reopen(tmp_path)
    try:
        reading = asyncio.create_task(backend.log.read("s", "g", "c", block=5))
        await asyncio.sleep(0.05)
        waiting = backend.log._arrived  # type: ignore[attr-defined]
        assert "s" in waiting
        event, _ = waiting["s"]
        entry_id = await other.log.append("s", b"x")
        # Told at once, by the append itself, not found later by polling.
        assert event.is_set() and "s" not in waiting
        assert [e.id for e in await reading] == [entry_id]
    finally:
        await other.close()


# --- several processes ---------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from reflow.backends import open_backend

    async def main(url, data_dir, name):
        backend = await open_backend(url, data_dir=Path(data_dir))
        try:
            for i in range(40):
                await backend.kv.incr("counter")
                await backend.log.append("s", f"{name}:{i}".encode())
                while True:
                    item = await backend.kv.get("cas")
                    seen = item.value.decode() if item else ""
                    try:
                        await backend.kv.put(
                            "cas", (seen + name[-1]).encode(),
                            expect_version=item.version if item else 0,
                        )
                        break
                    except Exception:
                        pass
        finally:
            await backend.close()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_four_processes_on_one_file_lose_no_update(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            url,
            str(tmp_path),
            f"worker{n}",
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(4)
    ]
    for process in processes:
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, stderr.decode()[-2000:]
    backend = await reopen(tmp_path)
    try:
        counter = await backend.kv.get("counter")
        assert counter is not None and int(counter.value) == 160
        cas = await backend.kv.get("cas")
        assert cas is not None
        assert sorted(cas.value.decode()) == sorted("0123" * 40)
        entries = await backend.log.range("s")
        assert len(entries) == 160
        assert len({e.id for e in entries}) == 160
        assert [e.id for e in entries] == sorted((e.id for e in entries), key=entry_id_key)
        for n in range(4):  # each process's own entries stay in its order
            mine = [e.data.decode() for e in entries if e.data.startswith(f"worker{n}:".encode())]
            assert mine == [f"worker{n}:{i}" for i in range(40)]
    finally:
        await backend.close()


# --- pub/sub across openers --------------------------------------------------


async def test_a_message_reaches_a_subscriber_of_another_opener(
    backend: Backend, tmp_path: Path
) -> None:
    other = await reopen(tmp_path)
    try:
        await backend.pubsub.publish("purge", b"before")
        sub = await other.pubsub.subscribe("purge")
        try:
            await backend.pubsub.publish("purge", b"key:home")
            await backend.pubsub.publish("elsewhere", b"not for us")
            message = await sub.get(timeout=5)
            assert message is not None and (message.channel, message.data) == (
                "purge",
                b"key:home",
            )
            assert await sub.get(timeout=0.1) is None
        finally:
            await sub.close()
    finally:
        await other.close()


PUBLISHER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from reflow.backends import open_backend

    async def main(url, data_dir):
        backend = await open_backend(url, data_dir=Path(data_dir))
        try:
            for key in ("a", "b", "c"):
                await backend.pubsub.publish("purge", key.encode())
        finally:
            await backend.close()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_a_message_published_by_another_process_arrives_in_order(
    backend: Backend, tmp_path: Path
) -> None:
    sub = await backend.pubsub.subscribe("purge")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PUBLISHER,
            str(backend.url),
            str(tmp_path),
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()[-2000:]
        received = [await sub.get(timeout=5) for _ in range(3)]
        assert [m.data if m else None for m in received] == [b"a", b"b", b"c"]
    finally:
        await sub.close()


async def test_local_subscribers_get_a_message_once(backend: Backend) -> None:
    sub = await backend.pubsub.subscribe("c")
    try:
        assert await backend.pubsub.publish("c", b"one") == 1
        first = await sub.get(timeout=1)
        assert first is not None and first.data == b"one"
        # The poller must not hand back the row this process wrote itself.
        assert await sub.get(timeout=0.1) is None
    finally:
        await sub.close()


async def test_the_message_table_is_trimmed(backend: Backend) -> None:
    from reflow.backends import sqlite_pubsub

    keep, every = sqlite_pubsub.KEEP_MESSAGES, sqlite_pubsub._TRIM_EVERY
    sqlite_pubsub.KEEP_MESSAGES, sqlite_pubsub._TRIM_EVERY = 10, 8
    try:
        for i in range(40):
            await backend.pubsub.publish("c", str(i).encode())
    finally:
        sqlite_pubsub.KEEP_MESSAGES, sqlite_pubsub._TRIM_EVERY = keep, every
    path = backend.url.path
    assert path is not None
    with closing(sqlite3.connect(path.with_name(path.name + ".pubsub"))) as probe:
        (rows,) = probe.execute("SELECT COUNT(*) FROM messages").fetchone()
    assert 10 <= rows < 40


# --- key order ---------------------------------------------------------------


@given(st.text(max_size=6), st.text(max_size=8))
def test_the_prefix_bound_separates_exactly_the_keys_with_the_prefix(prefix: str, key: str) -> None:
    upper = prefix_upper_bound(prefix)
    in_range = key >= prefix and (upper is None or key < upper)
    assert in_range == key.startswith(prefix)
    assert prefix + key >= prefix and (upper is None or prefix + key < upper)


def test_the_prefix_bound_steps_over_surrogates_and_the_last_code_point() -> None:
    assert prefix_upper_bound("a\ud7ff") == "a\ue000"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff") is None
    assert prefix_upper_bound("") is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=12, unique=True))
def test_scan_returns_keys_in_byte_order(keys: list[str]) -> None:
    keys = [k for k in keys if not any(0xD800 <= ord(ch) <= 0xDFFF for ch in k)]

    async def run(directory: Path) -> list[str]:
        backend = await open_backend(f"sqlite:///{directory / 'r.db'}", data_dir=directory)
        try:
            await backend.kv.transact([Put(key, b"") for key in keys])
            return [item.key for item in await backend.kv.scan()]
        finally:
            await backend.close()

    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        scanned = asyncio.run(run(Path(directory)))
    assert scanned == sorted(keys, key=lambda k: k.encode())


async def test_a_sqlite_failure_surfaces_as_backend_unavailable_naming_the_file(
    backend: Backend,
) -> None:
    db = backend.kv._db  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailableError) as caught:
        await db.read(lambda c: c.execute("SELECT * FROM no_such_table").fetchall())
    assert "no_such_table" in caught.value.problem
    assert caught.value.url.endswith("r.db")
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    # The writer survives a failed job, and so does the data.
    await backend.kv.put("k", b"v")
    with pytest.raises(BackendUnavailableError):
        await db.write(lambda c: c.execute("INSERT INTO no_such_table VALUES (1)"))
    item = await backend.kv.get("k")
    assert item is not None and item.value == b"v"


async def test_expired_values_are_swept_into_tombstones_that_keep_the_version(
    tmp_path: Path,
) -> None:
    from reflow.backends import sqlite_kv
    from reflow.testing import FakeClock

    clock = FakeClock()
    backend = await open_backend(f"sqlite:///{tmp_path / 'r.db'}", data_dir=tmp_path, clock=clock)
    every = sqlite_kv._SWEEP_EVERY
    sqlite_kv._SWEEP_EVERY = 4
    try:
        await backend.kv.put("session", b"secret" * 100, ttl=10)
        await backend.kv.put("session", b"secret" * 100, ttl=10)  # version 2
        clock.advance(11)
        for i in range(4):
            await backend.kv.put(f"other{i}", b"x")
        path = backend.url.path
        assert path is not None
        with closing(sqlite3.connect(path)) as probe:
            row = probe.execute("SELECT value, version FROM kv WHERE key = 'session'").fetchone()
        assert row == (None, 2)  # the value is gone from the file; the version stays
        assert await backend.kv.put("session", b"new", expect_version=0) == 3
    finally:
        sqlite_kv._SWEEP_EVERY = every
        await backend.close()
