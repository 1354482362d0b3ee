"""Backends: Log append, read + ack, and KV put / get, on reflow's SQLite and Redis engines.

The peer is the thing a user would otherwise write by hand: raw redis-py
pipelines doing the same operations on the same server (XADD; XREADGROUP then
XACK; HSET; HMGET). Every measure moves ``--ops`` operations in batches of
``--batch``: reflow issues each batch as concurrent calls (``asyncio.gather``;
a read + ack batch is one ``read(count=batch)`` and one ``ack``), the peer as
one pipeline (a read + ack batch is one XREADGROUP and one XACK). Rounds
rotate the order of the three sides (SQLite, Redis, peer) so that drift hits
them alike, and the ratios compare each engine with the peer of the same
round: the peer is the floor a Redis client can reach, so a ratio of 1.0
would mean reflow's versions, leases, Lua and asyncio layers cost nothing.

The Redis server is ``REFLOW_BENCH_REDIS`` or 127.0.0.1:6379; when nothing
answers there, the benchmark starts its own ``redis-server`` (installing the
Debian package first if it is missing and we are root) on a spare port and
stops it afterwards. The benchmark process runs on CPU 1; a server it starts
itself runs on CPU 0 (``taskset``).

The ``round trip`` rows measure one write at a time on the SQLite engine —
what a sequential durable execution waits for per transition: the latency
(p50, p99) of a compare-and-set ``put`` and of an ``append``, each awaited
before the next. Their peer is not Redis but the floor under the engine:
the same SQL (the KV put's statement, the Log's append function) on a bare
``sqlite3`` connection with the same settings (WAL, ``synchronous=FULL``),
called directly on the benchmark's thread, one ``BEGIN IMMEDIATE`` ...
``COMMIT`` per write, in a file of its own. The ratio is the share of a
round trip that is SQLite and its fsync; the rest is the engine's thread hop
and asyncio.

    python bench/backends.py            # 5 rounds of 5,000 operations per measure
    python bench/backends.py --smoke    # one round of 200: proves it still runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis  # noqa: E402
from _common import Comparison, machine_is_quiet, parse_args, percentile, report  # noqa: E402

from reflow.backends import Backend, open_backend  # noqa: E402
from reflow.backends.sqlite_db import connect  # noqa: E402
from reflow.backends.sqlite_kv import _REPLACE, KV_SCHEMA  # noqa: E402
from reflow.backends.sqlite_log import LOG_SCHEMA, _append  # noqa: E402

PAYLOAD = b"x" * 100
# A put of the bytes already stored writes nothing (SQLite skips an
# unchanged page), so the sequential puts alternate two values.
PAYLOADS = (b"y" * 100, b"z" * 100)
SIDES = ("sqlite", "redis", "peer")
MEASURES = ("log append", "log read+ack", "kv put", "kv get")
TRIPS = ("kv cas put", "log append")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=5000, help="operations per measure")
    parser.add_argument("--batch", type=int, default=100, help="operations in flight at once")
    parser.add_argument(
        "--trips", type=int, default=1000, help="sequential writes per round-trip measure"
    )


# --- the Redis server --------------------------------------------------------


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 1.0):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """The URL of a Redis server: the configured one, or one started for this run."""
    url = os.environ.get("REFLOW_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    parts = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    if _answers(parts[0].split("@")[-1], int(parts[1]) if len(parts) > 1 else 6379):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None and os.geteuid() == 0:
        print("installing redis-server (apt-get)", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True)
        binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no Redis server answers and redis-server is not installed")
    with socket.socket() as probe:  # a free port for our own server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", port):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the redis-server started for the benchmark did not answer")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


# --- one side's work ---------------------------------------------------------


async def _batches(ops: int, batch: int, work: Callable[[int, int], Awaitable[Any]]) -> float:
    """Run ``work(start, size)`` over ``ops`` in batches; return operations per second."""
    started = time.perf_counter()
    for start in range(0, ops, batch):
        await work(start, min(batch, ops - start))
    return ops / (time.perf_counter() - started)


async def reflow_round(backend: Backend, tag: str, ops: int, batch: int) -> dict[str, float]:
    """One round of every measure on a reflow engine."""
    log, kv = backend.log, backend.kv
    stream = f"append-{tag}"

    async def append(_: int, size: int) -> None:
        await asyncio.gather(*(log.append(stream, PAYLOAD) for _ in range(size)))

    async def read_ack(_: int, size: int) -> None:
        entries = await log.read(stream, "g", "c", count=size, lease=60)
        await log.ack(stream, "g", [e.id for e in entries])

    async def put(start: int, size: int) -> None:
        await asyncio.gather(*(kv.put(f"k{start + i}", PAYLOAD) for i in range(size)))

    async def get(start: int, size: int) -> None:
        await asyncio.gather(*(kv.get(f"k{start + i}") for i in range(size)))

    await log.create_group(stream, "g", start="$")
    figures = {
        "log append": await _batches(ops, batch, append),
        "log read+ack": await _batches(ops, batch, read_ack),
        "kv put": await _batches(ops, batch, put),
        "kv get": await _batches(ops, batch, get),
    }
    assert await log.pending(stream, "g") == [], "every entry read was acked"
    await log.delete_stream(stream)
    return figures


async def peer_round(client: aioredis.Redis, prefix: str, ops: int, batch: int) -> dict[str, float]:
    """The same round as raw redis-py pipelines."""
    stream = f"{prefix}raw-stream"

    async def append(_: int, size: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(size):
                pipe.xadd(stream, {b"d": PAYLOAD})
            await pipe.execute()

    async def read_ack(_: int, size: int) -> None:
        got: Any = await client.xreadgroup("g", "c", {stream: ">"}, count=size)
        ids = [entry_id for entry_id, _ in got[0][1]]
        await client.xack(stream, "g", *ids)

    async def put(start: int, size: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for i in range(size):
                pipe.hset(f"{prefix}raw-kv:k{start + i}", b"v", PAYLOAD)
            await pipe.execute()

    async def get(start: int, size: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for i in range(size):
                pipe.hmget(f"{prefix}raw-kv:k{start + i}", [b"v", b"ver", b"exp"])
            await pipe.execute()

    await client.xgroup_create(stream, "g", "$", mkstream=True)
    figures = {
        "log append": await _batches(ops, batch, append),
        "log read+ack": await _batches(ops, batch, read_ack),
        "kv put": await _batches(ops, batch, put),
        "kv get": await _batches(ops, batch, get),
    }
    await client.delete(stream)
    return figures


# --- one write at a time on SQLite -------------------------------------------


async def engine_trips(backend: Backend, tag: str, trips: int) -> dict[str, list[float]]:
    """Seconds per awaited write through the engine, one write at a time."""
    kv, log = backend.kv, backend.log
    key, stream = f"trip-{tag}", f"trip-{tag}"
    version = await kv.put(key, PAYLOAD)
    puts: list[float] = []
    for index in range(trips):
        started = time.perf_counter()
        version = await kv.put(key, PAYLOADS[index % 2], expect_version=version)
        puts.append(time.perf_counter() - started)
    appends: list[float] = []
    for _ in range(trips):
        started = time.perf_counter()
        await log.append(stream, PAYLOAD)
        appends.append(time.perf_counter() - started)
    await log.delete_stream(stream)
    return {"kv cas put": puts, "log append": appends}


def bare_trips(connection: sqlite3.Connection, tag: str, trips: int) -> dict[str, list[float]]:
    """The same SQL on a bare connection, on this thread: the floor under the engine."""
    key, stream = f"trip-{tag}", f"trip-{tag}"
    connection.execute("INSERT INTO kv (key, value, version) VALUES (?, ?, 1)", (key, PAYLOAD))
    version = 1
    puts: list[float] = []
    for index in range(trips):
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        row = connection.execute(
            _REPLACE, (PAYLOADS[index % 2], None, key, version, time.time())
        ).fetchone()
        connection.execute("COMMIT")
        puts.append(time.perf_counter() - started)
        version = row[0]
    appends: list[float] = []
    for _ in range(trips):
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        _append(connection, stream, int(time.time() * 1000), [PAYLOAD])
        connection.execute("COMMIT")
        appends.append(time.perf_counter() - started)
    return {"kv cas put": puts, "log append": appends}


async def round_trips(
    backend: Backend, data_dir: Path, rounds: int, trips: int
) -> list[Comparison]:
    """p50 and p99 of one awaited write, engine against bare sqlite3, alternating."""
    comparisons = {
        (measure, name): Comparison(
            f"round trip: sqlite {measure} {name}", "us", higher_is_better=False
        )
        for measure in TRIPS
        for name in ("p50", "p99")
    }
    bare = connect(data_dir / "bare.db")
    try:
        for statement in (*KV_SCHEMA, *LOG_SCHEMA):
            bare.execute(statement)
        await engine_trips(backend, "warmup", trips // 4 or 1)
        bare_trips(bare, "warmup", trips // 4 or 1)
        for index in range(rounds):
            tag = f"r{index}"
            if index % 2 == 0:
                ours = await engine_trips(backend, tag, trips)
                floor = bare_trips(bare, tag, trips)
            else:
                floor = bare_trips(bare, tag, trips)
                ours = await engine_trips(backend, tag, trips)
            for (measure, name), comparison in comparisons.items():
                fraction = 0.5 if name == "p50" else 0.99
                comparison.ours.append(percentile(ours[measure], fraction) * 1e6)
                comparison.peer.append(percentile(floor[measure], fraction) * 1e6)
    finally:
        bare.close()
    return list(comparisons.values())


# --- the run -----------------------------------------------------------------


async def run(url: str, rounds: int, ops: int, batch: int, trips: int) -> list[Comparison]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    separator = "&" if "?" in url else "?"
    comparisons = {
        (engine, measure): Comparison(f"{engine} {measure}", "ops/s")
        for engine in ("sqlite", "redis")
        for measure in MEASURES
    }
    with tempfile.TemporaryDirectory(prefix="reflow-bench-") as scratch:
        data_dir = Path(scratch)
        sqlite = await open_backend(f"sqlite:///{data_dir / 'bench.db'}", data_dir=data_dir)
        redis = await open_backend(f"{url}{separator}prefix={prefix}", data_dir=data_dir)
        client = aioredis.Redis.from_url(url)
        try:
            sides: dict[str, Callable[[str], Awaitable[dict[str, float]]]] = {
                "sqlite": lambda tag: reflow_round(sqlite, tag, ops, batch),
                "redis": lambda tag: reflow_round(redis, tag, ops, batch),
                "peer": lambda tag: peer_round(client, prefix, ops, batch),
            }
            for side in SIDES:  # warm-up: connections, scripts, page cache
                await sides[side]("warmup")
            for index in range(rounds):
                if not machine_is_quiet(1.0):
                    print(f"round {index + 1}: the machine is busy", file=sys.stderr)
                order = SIDES[index % 3 :] + SIDES[: index % 3]
                figures = {side: await sides[side](f"r{index}") for side in order}
                for (engine, measure), comparison in comparisons.items():
                    comparison.ours.append(figures[engine][measure])
                    comparison.peer.append(figures["peer"][measure])
            trip_comparisons = await round_trips(sqlite, data_dir, rounds, trips)
        finally:
            stale = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if stale:
                await client.unlink(*stale)
            await client.aclose()
            await redis.close()
            await sqlite.close()
    return [*comparisons.values(), *trip_comparisons]


def main() -> None:
    args = parse_args(__doc__ or "", _options)
    ops, batch = (200, 50) if args.smoke else (args.ops, args.batch)
    trips = 40 if args.smoke else args.trips
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    with redis_server() as url:
        comparisons = asyncio.run(run(url, args.rounds, ops, batch, trips))
    print(f"redis server {url}; this process on CPU {sorted(os.sched_getaffinity(0))}")
    report(
        "backends",
        comparisons,
        "raw redis-py pipelines",
        redis=url,
        ops=ops,
        batch=batch,
        trips=trips,
        rounds=args.rounds,
        smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
