"""Processes sharing one Redis share one store: what the scaled-out mode is for.

Each test starts worker processes that open the same ``redis://…?prefix=``
URL as the test itself (this file is also the worker: run as a script it
plays the role it is given), and checks that their KV writes are seen across
processes, that compare-and-set holds between them, and that the consumers of
one group split the entries between them, each entry going to exactly one.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend
from reflow.errors import VersionConflictError

STARTUP = 60.0  # seconds a worker may take to import and connect on a busy machine
CAS_ROUNDS = 40
ENTRIES = 120


# --- the worker side (run as a script) ---------------------------------------


async def _cas_worker(backend: Backend, name: str) -> dict[str, object]:
    """Write a key of our own, then add our name to a shared list CAS_ROUNDS times."""
    await backend.kv.put(f"hello/{name}", name.encode())
    conflicts = 0
    for _ in range(CAS_ROUNDS):
        while True:
            item = await backend.kv.get("shared")
            assert item is not None
            try:
                value = json.dumps([*json.loads(item.value), name]).encode()
                await backend.kv.put("shared", value, expect_version=item.version)
                break
            except VersionConflictError:
                conflicts += 1
    seen = [i.key for i in await backend.kv.scan("hello/")]
    return {"conflicts": conflicts, "seen": seen}


async def _group_worker(backend: Backend, name: str) -> dict[str, object]:
    """Read, ack and record entries of the shared group until none are left."""
    acked: list[str] = []
    idle_rounds = 0
    while idle_rounds < 3:
        entries = await backend.log.read("jobs", "workers", name, count=5, lease=30, block=0.1)
        if not entries:
            idle_rounds += 1
            continue
        idle_rounds = 0
        await backend.log.ack("jobs", "workers", [e.id for e in entries])
        acked.extend(e.id for e in entries)
        await asyncio.sleep(0.005)  # leave the other worker a turn
    return {"acked": acked}


async def _worker_main(url: str, data_dir: str, role: str, name: str) -> None:
    backend = await open_backend(url, data_dir=Path(data_dir))
    try:
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
        work = _cas_worker if role == "cas" else _group_worker
        print("RESULT " + json.dumps(await work(backend, name)), flush=True)
    finally:
        await backend.close()


# --- the test side -----------------------------------------------------------


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    from tests.conftest import REDIS_URL, require_server

    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{separator}prefix=multi-{uuid.uuid4().hex[:12]}:"
    opened = await open_backend(url, data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.log.delete_stream("jobs")
        for item in await opened.kv.scan():
            await opened.kv.delete(item.key)
        await opened.close()


async def _run_workers(
    backend: Backend, tmp_path: Path, role: str, names: list[str]
) -> list[dict[str, object]]:
    """Start one worker per name, release them together, return their results."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            str(backend.url),
            str(tmp_path),
            role,
            name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        for name in names
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), STARTUP)
            assert line.strip() == b"READY", line
        for process in processes:  # all are connected: release them at once
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        results = []
        for process in processes:
            out, err = await asyncio.wait_for(process.communicate(), STARTUP)
            assert process.returncode == 0, err.decode()[-2000:]
            (result,) = [ln for ln in out.decode().splitlines() if ln.startswith("RESULT ")]
            results.append(json.loads(result.removeprefix("RESULT ")))
        return results
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_processes_see_each_others_writes_and_cas_holds_between_them(
    backend: Backend, tmp_path: Path
) -> None:
    await backend.kv.put("shared", b"[]")
    await backend.kv.put("hello/test", b"test")
    names = ["alpha", "beta"]
    results = await _run_workers(backend, tmp_path, "cas", names)
    # Each worker saw the test's key and its own; the one finishing last saw both.
    for name, result in zip(names, results, strict=True):
        assert {"hello/test", f"hello/{name}"} <= set(result["seen"])  # type: ignore[call-overload]
    assert {i.key for i in await backend.kv.scan("hello/")} == {
        "hello/test",
        "hello/alpha",
        "hello/beta",
    }
    item = await backend.kv.get("shared")
    assert item is not None
    written = json.loads(item.value)
    assert sorted(written) == sorted(names * CAS_ROUNDS), "no update lost"
    assert item.version == 1 + 2 * CAS_ROUNDS


async def test_two_processes_split_one_groups_entries(backend: Backend, tmp_path: Path) -> None:
    ids = [await backend.log.append("jobs", f"job-{i}".encode()) for i in range(ENTRIES)]
    await backend.log.create_group("jobs", "workers")
    first, second = await _run_workers(backend, tmp_path, "group", ["w1", "w2"])
    mine, theirs = set(first["acked"]), set(second["acked"])  # type: ignore[call-overload]
    assert mine and theirs, "both processes got a share"
    assert not mine & theirs, "no entry went to both"
    assert mine | theirs == set(ids), "no entry was lost"
    assert await backend.log.pending("jobs", "workers") == []


if __name__ == "__main__":
    asyncio.run(_worker_main(*sys.argv[1:5]))
