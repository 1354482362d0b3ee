"""Fleet purges across processes, on SQLite and on Redis.

Two edges run in two child processes (tests/functional/edge/fleet_app.py); a
third process with no edge (``reflow invoke``) runs a function that purges
through ``context.cache``. Both edges must drop the object and the result must
count both; a SIGKILLed edge is ``missing`` until its membership expires.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend, open_backend
from reflow.edge.fleet import PurgePublisher, live_edges
from tests.conftest import REDIS_URL, require_server
from tests.functional.edge.fleet_app import MEMBER_TTL
from tests.functional.edge.test_runtime_hooks import get

ROOT = Path(__file__).resolve().parents[3]
REFLOW = str(Path(sys.executable).with_name("reflow"))
APP = "tests/functional/edge/fleet_app.py"


@dataclass
class Child:
    """One edge process."""

    process: asyncio.subprocess.Process
    port: int
    id: str


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    yield f"{REDIS_URL}{separator}prefix=test-fleet-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def backend(backend_url: str, tmp_path: Path) -> AsyncIterator[Backend]:
    opened = await open_backend(backend_url, data_dir=tmp_path / "data")
    await opened.blobs.put(
        "pages/index.html", b"home", content_type="text/html", metadata={"surrogate-key": "home"}
    )
    await opened.blobs.put("pages/about.html", b"about", content_type="text/html")
    try:
        yield opened
    finally:
        await opened.close()


async def start_edge(url: str, data_dir: Path) -> Child:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.functional.edge.fleet_app",
        url,
        str(data_dir),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    word, port, edge = line.decode().split()
    assert word == "ready", line
    return Child(process, int(port), edge)


async def stop_edge(child: Child) -> None:
    if child.process.returncode is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.process.wait(), 30)
        except TimeoutError:
            child.process.kill()
            await child.process.wait()


async def invoke_purge(url: str, data_dir: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """``reflow invoke purge``: a process with functions and no edge."""
    env = dict(os.environ, REFLOW_DATA_DIR=str(data_dir))
    process = await asyncio.create_subprocess_exec(
        REFLOW,
        "invoke",
        "purge",
        "--app",
        APP,
        "--backend",
        url,
        "--payload",
        json.dumps(payload),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (out + err).decode()
    answer: dict[str, Any] = json.loads(out)
    return answer


async def cached(port: int, path: str) -> None:
    await get(port, path)
    _, headers, _ = await get(port, path)
    assert headers["x-cache"] == "Hit"


async def cache_state(port: int, path: str) -> str:
    _, headers, _ = await get(port, path)
    return headers["x-cache"]


@pytest.mark.slow
async def test_a_process_without_an_edge_purges_every_edge_and_hears_from_each(
    backend: Backend, backend_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    edges = [await start_edge(backend_url, data_dir) for _ in range(2)]
    try:
        assert {m.id for m in await live_edges(backend.kv)} == {e.id for e in edges}
        for edge in edges:
            await cached(edge.port, "/index.html")
            await cached(edge.port, "/about.html")

        answer = await invoke_purge(backend_url, data_dir, {"keys": ["home"]})
        assert answer == {"total": 2, "edges": {e.id: 1 for e in edges}, "missing": []}
        for edge in edges:
            assert await cache_state(edge.port, "/index.html") == "Miss"  # dropped on both
            assert await cache_state(edge.port, "/about.html") == "Hit"  # untagged: kept
            await cached(edge.port, "/index.html")

        # SIGKILL: no orderly leave, so the edge stays a member until its TTL runs out.
        killed, survivor = edges[1], edges[0]
        killed.process.kill()
        await killed.process.wait()
        answer = await invoke_purge(backend_url, data_dir, {"paths": ["/index.html"]})
        assert answer == {"total": 1, "edges": {survivor.id: 1}, "missing": [killed.id]}
        assert await cache_state(survivor.port, "/index.html") == "Miss"

        deadline = time.monotonic() + MEMBER_TTL + 10
        while killed.id in {m.id for m in await live_edges(backend.kv)}:
            assert time.monotonic() < deadline, "the killed edge never dropped out"
            await asyncio.sleep(0.1)
        answer = await invoke_purge(backend_url, data_dir, {"paths": ["/index.html"]})
        assert answer == {"total": 1, "edges": {survivor.id: 1}, "missing": []}

        # An orderly stop leaves the fleet at once, without waiting for the TTL.
        await stop_edge(survivor)
        assert await live_edges(backend.kv) == []
    finally:
        for edge in edges:
            await stop_edge(edge)


@pytest.mark.slow
async def test_acknowledged_purge_round_trips_between_processes(
    backend: Backend, backend_url: str, tmp_path: Path
) -> None:
    """Every purge hears from both edges well inside the 1 s timeout; prints the latency."""
    edges = [await start_edge(backend_url, tmp_path / "data") for _ in range(2)]
    publisher = PurgePublisher(backend.pubsub, backend.kv)
    try:
        seconds = []
        for _ in range(40):
            started = time.perf_counter()
            result = await publisher.purge(keys=["home"])
            seconds.append(time.perf_counter() - started)
            assert result.complete and set(result.edges) == {e.id for e in edges}
        cut = statistics.quantiles(seconds, n=20)
        print(
            f"\n{backend.kind}: acknowledged purge, 2 edges in 2 processes: "
            f"median {statistics.median(seconds) * 1000:.1f} ms, "
            f"p95 {cut[-1] * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms"
        )
    finally:
        await publisher.stop()
        for edge in edges:
            await stop_edge(edge)
