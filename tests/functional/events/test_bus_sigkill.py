"""Killing the consuming process with SIGKILL in the middle of a delivery loses nothing."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend
from reflow.events.bus import EventBus, bus_stream
from reflow.events.delivery import rule_stream
from tests.conftest import REDIS_URL, require_server

ROOT = Path(__file__).resolve().parents[3]
EVENTS = 20


def journal_lines(journal: Path) -> list[str]:
    return journal.read_text(encoding="utf-8").splitlines() if journal.exists() else []


async def wait_for(condition: object, *, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def spawn(url: str, journal: Path, hang_after: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.functional.events.killable_consumer",
        url,
        str(journal),
        str(hang_after),
        cwd=ROOT,
    )


@pytest.fixture(params=["sqlite", "redis"])
async def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reflow.db'}"
        return
    require_server(REDIS_URL, "Redis")
    url = f"{REDIS_URL}?prefix=test-bus-{uuid.uuid4().hex[:8]}:"
    yield url
    backend = await open_backend(url, data_dir=tmp_path)
    for stream in (bus_stream("default"), rule_stream("record")):
        await backend.log.delete_stream(stream)
    await backend.close()


async def test_sigkill_mid_delivery_loses_no_event(backend_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    backend: Backend = await open_backend(backend_url, data_dir=tmp_path)
    try:
        ids = await EventBus(backend).put(
            [{"source": "load", "detail-type": "N", "detail": {"n": n}} for n in range(EVENTS)]
        )
    finally:
        await backend.close()

    first = await spawn(backend_url, journal, hang_after=3)
    try:
        await wait_for(lambda: sum(line.startswith("start") for line in journal_lines(journal)) > 3)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    started = [line.split()[1] for line in journal_lines(journal) if line.startswith("start")]
    done_before = {line.split()[1] for line in journal_lines(journal) if line.startswith("done")}
    assert started[-1] not in done_before  # it really died mid-delivery

    second = await spawn(backend_url, journal, hang_after=-1)
    try:
        await wait_for(
            lambda: (
                {line.split()[1] for line in journal_lines(journal) if line.startswith("done")}
                >= set(ids)
            )
        )
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    done = [line.split()[1] for line in journal_lines(journal) if line.startswith("done")]
    assert set(done) == set(ids)
    assert started[-1] in done  # the interrupted delivery was made again, same event id
