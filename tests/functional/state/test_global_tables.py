"""Global tables across three regions, each a process with its own backend.

From the issue: 3 regions as 3 processes (3 SQLite files, and 3 Redis
keyspaces), concurrent conflicting writes, a region partitioned for a while
and healed. Afterwards all replicas are identical, each conflict is won by
the write with the later HLC, and no tombstoned item comes back.
"""

from __future__ import annotations

import asyncio
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
from reflow.state.hlc import HLC
from reflow.state.replication import GlobalTable
from tests.conftest import REDIS_URL, require_server

ROOT = Path(__file__).resolve().parents[3]
REGIONS = ("ap", "eu", "us")


@pytest.fixture(params=["sqlite", "redis"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "sqlite":
        return {r: f"sqlite:///{tmp_path / f'{r}.db'}" for r in REGIONS}
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    run = uuid.uuid4().hex[:12]
    return {r: f"{REDIS_URL}{separator}prefix=test-global-{run}-{r}:" for r in REGIONS}


@pytest.fixture
async def tables(urls: dict[str, str], tmp_path: Path) -> AsyncIterator[dict[str, GlobalTable]]:
    backends: dict[str, Backend] = {}
    try:
        for region, url in urls.items():
            backends[region] = await open_backend(url, data_dir=tmp_path)
        yield {r: GlobalTable("articles", r, b.kv) for r, b in backends.items()}
    finally:
        for backend in backends.values():
            await backend.close()


def run_regions(
    tmp_path: Path, urls: dict[str, str], mode: str, extra: dict[str, list[str]] | None = None
) -> dict[str, dict[str, object]]:
    env = dict(os.environ, STATE_TEST_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    workers = {
        region: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.functional.state.region_worker",
                region,
                json.dumps(urls),
                mode,
                *(extra or {}).get(region, []),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for region in urls
    }
    out: dict[str, dict[str, object]] = {}
    for region, worker in workers.items():
        stdout, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
        out[region] = json.loads(stdout.strip().splitlines()[-1])
    return out


async def test_three_regions_partitioned_and_healed_converge_on_the_latest_writes(
    urls: dict[str, str], tables: dict[str, GlobalTable], tmp_path: Path
) -> None:
    # Phase 1: all three write the same keys at once; ap is cut off (no
    # replicator, and nobody pulls from it) while eu and us replicate.
    common = ["--count", "120", "--in-flight", "0"]
    written = run_regions(
        tmp_path,
        urls,
        "write",
        {
            "ap": [*common, "--seed", "1"],
            "eu": [*common, "--seed", "2", "--peers", "us"],
            "us": [*common, "--seed", "3", "--peers", "eu"],
        },
    )
    assert written["ap"]["applied"] == 0
    assert int(written["eu"]["applied"]) + int(written["us"]["applied"]) > 0  # type: ignore[call-overload]
    cut_off = await tables["ap"].raw_items()
    assert {item["_origin"] for item in cut_off} == {"ap"}

    # Phase 2: the partition heals; every region pulls what it missed.
    run_regions(tmp_path, urls, "sync", {r: ["--in-flight", "0"] for r in REGIONS})

    writes = [w for r in REGIONS for w in written[r]["writes"]]  # type: ignore[attr-defined]
    latest: dict[str, dict[str, object]] = {}
    for write in writes:
        key = str(write["key"])
        if key not in latest or HLC.parse(write["hlc"]) > HLC.parse(str(latest[key]["hlc"])):
            latest[key] = write
    replicas = {r: await tables[r].raw_items() for r in REGIONS}
    assert replicas["ap"] == replicas["eu"] == replicas["us"]
    stored = {str(item["id"]): item for item in replicas["eu"]}
    assert set(stored) == set(latest)
    for key, winner in latest.items():
        assert stored[key]["_hlc"] == winner["hlc"], key
        assert bool(stored[key].get("_deleted")) == winner["deleted"], key
    deleted = {key for key, winner in latest.items() if winner["deleted"]}
    assert deleted, "the seeds must leave some items deleted for this test to mean much"

    # Phase 3: every region has seen every tombstone, so each collects its own;
    # another round of replication brings none of those items back.
    collected = run_regions(tmp_path, urls, "collect", {r: ["--in-flight", "0"] for r in REGIONS})
    assert all(collected[r]["collected"] == len(deleted) for r in REGIONS)
    run_regions(tmp_path, urls, "sync", {r: ["--in-flight", "0"] for r in REGIONS})
    for region in REGIONS:
        live = {str(item["id"]) for item in await tables[region].scan_all()}
        assert live == set(latest) - deleted
        raw = await tables[region].raw_items()
        assert not any(item.get("_deleted") for item in raw)


async def test_a_replicator_killed_mid_stream_loses_nothing_when_restarted(
    urls: dict[str, str], tables: dict[str, GlobalTable], tmp_path: Path
) -> None:
    for n in range(300):
        await tables["eu"].put({"id": f"k{n}", "n": n})
    env = dict(os.environ, STATE_TEST_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    victim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.functional.state.region_worker",
            "us",
            json.dumps(urls),
            "trickle",
            "--peers",
            "eu",
            "--batch",
            "20",
            "--lease",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout is not None and victim.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while len(await tables["us"].raw_items()) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    landed = len(await tables["us"].raw_items())
    assert 60 <= landed < 300, "the replicator must die mid-stream for this test to mean much"
    # Its successor waits out the dead one's lease and takes the rest.
    run_regions(tmp_path, urls, "sync", {r: ["--lease", "1"] for r in REGIONS})
    assert await tables["us"].raw_items() == await tables["eu"].raw_items()
    assert len(await tables["ap"].scan_all()) == 300
