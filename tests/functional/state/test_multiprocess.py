"""Several processes on one SQLite file or one Redis server: the state guarantees hold.

* 1,000 reservations against a stock of 100 from 4 processes: exactly 100 win,
  the stock ends at 0, and the change stream shows it never went negative.
* 10,000 rate-limit hits from 4 processes against 100/second: no interval of
  one second ever holds more than 100 admitted hits.
* A change-stream consumer killed with SIGKILL mid-batch: its successor
  handles every record, none lost, each item's records in write order.
* Three processes writing and relaying at once: each record in the stream
  exactly once, each item's records in write order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend
from reflow.state import Counters, StreamRecord, StreamRelay, Table
from reflow.state.streams import stream_name
from tests.conftest import REDIS_URL, require_server

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}prefix=test-mp-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def backend(url: str, tmp_path: Path) -> AsyncIterator[Backend]:
    opened = await open_backend(url, data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


def spawn(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, STATE_TEST_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.functional.state.worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def results(workers: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    out = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


async def test_thousand_reservations_from_four_processes_sell_exactly_the_stock(
    url: str, backend: Backend, tmp_path: Path
) -> None:
    table = Table("stock", backend.kv, key="sku", stream=True)
    await table.put({"sku": "flash", "stock": 100})
    workers = [spawn(tmp_path, "reserve", url, "250") for _ in range(4)]
    outcome = results(workers)
    assert sum(int(r["won"]) for r in outcome) == 100  # type: ignore[call-overload]
    assert sum(int(r["lost"]) for r in outcome) == 900  # type: ignore[call-overload]
    assert await table.get("flash") == {"sku": "flash", "stock": 0}
    await StreamRelay(backend.kv, backend.log, "stock").pump()
    entries = await backend.log.range(stream_name("stock"))
    levels = [StreamRecord.from_bytes(e.data).new["stock"] for e in entries]  # type: ignore[index]
    assert levels == list(range(100, -1, -1))  # every unit sold once, never below zero


async def test_thousand_counter_reservations_from_four_processes_never_oversell(
    url: str, backend: Backend, tmp_path: Path
) -> None:
    counters = Counters.for_backend(backend)
    try:
        await counters.set("flash", 100)
        workers = [spawn(tmp_path, "reserve-counter", url, "250") for _ in range(4)]
        outcome = results(workers)
        assert sum(int(r["won"]) for r in outcome) == 100  # type: ignore[call-overload]
        assert sum(int(r["lost"]) for r in outcome) == 900  # type: ignore[call-overload]
        assert await counters.get("flash") == 0
    finally:
        await counters.close()


async def test_ten_thousand_hits_from_four_processes_respect_the_rate(
    url: str, tmp_path: Path
) -> None:
    workers = [spawn(tmp_path, "limit", url, "100/second", "--count", "2500") for _ in range(4)]
    admitted = sorted(t for r in results(workers) for t in r["admitted"])  # type: ignore[attr-defined]
    assert admitted, "nothing was admitted"
    for first, later in zip(admitted, admitted[100:], strict=False):
        assert later - first >= 1.0
    span = admitted[-1] - admitted[0]
    # Not a starved limiter either: roughly the budget per second was used.
    assert len(admitted) >= min(10_000, 100 * int(span))


async def test_consumer_killed_mid_batch_resumes_without_losing_or_reordering(
    url: str, backend: Backend, tmp_path: Path
) -> None:
    docs = Table("docs", backend.kv, stream=True)
    for n in range(1, 21):
        for item in ("a", "b", "c"):
            await docs.update(item, set={"n": n})
    assert await StreamRelay(backend.kv, backend.log, "docs").pump() == 60
    sink = tmp_path / "handled.jsonl"
    first = spawn(tmp_path, "consume", url, str(sink), "--name", "c1", "--pause", "0.02")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = sink.read_text().count("\n") if sink.exists() else 0
        if lines >= 15 and lines % 10 not in (0, 9):  # somewhere inside a batch
            break
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    killed_after = sink.read_text().count("\n")
    assert 0 < killed_after < 60, "the consumer must die mid-stream for this test to mean much"
    second = spawn(tmp_path, "consume", url, str(sink), "--name", "c2", "--lease", "1")
    results([second])
    handled = [json.loads(line) for line in sink.read_text().splitlines()]
    sequences = {h["seq"] for h in handled}
    assert len(sequences) == 60  # none lost
    first_seen: dict[str, list[int]] = {}
    done: set[int] = set()
    for h in handled:
        if h["seq"] not in done:
            done.add(h["seq"])
            first_seen.setdefault(h["item"], []).append(h["n"])
    assert first_seen == {item: list(range(1, 21)) for item in ("a", "b", "c")}


async def test_writers_relaying_concurrently_put_each_record_in_the_stream_once(
    url: str, backend: Backend, tmp_path: Path
) -> None:
    workers = [spawn(tmp_path, "write-and-relay", url, "100") for _ in range(3)]
    results(workers)
    await StreamRelay(backend.kv, backend.log, "feed").pump()
    records = [
        StreamRecord.from_bytes(e.data) for e in await backend.log.range(stream_name("feed"))
    ]
    assert len(records) == 300
    assert len({r.sequence for r in records}) == 300
    for item in range(4):
        counts = [r.new["n"] for r in records if r.keys["id"] == f"item{item}"]  # type: ignore[index]
        assert counts == list(range(1, 76))
