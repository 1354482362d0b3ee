"""State: table put, get and conditional update per second, on SQLite and Redis.

reflow's side is :class:`reflow.state.Table` (JSON items, key encoding,
versioned compare-and-set) on the SQLite and Redis engines. The peer is what a
user would otherwise write by hand on the same Redis server with raw redis-py:
``SET`` of the JSON item, ``GET`` + ``json.loads``, and the conditional
update as one Lua script (decode, check ``stock >= 1``, decrement, encode,
``SET``) — the fastest correct way to do it in Redis. Every measure moves
``--ops`` operations in batches of ``--batch``: reflow issues a batch as
concurrent calls (``asyncio.gather``), the peer as one pipeline. Items are
distinct per operation, so the conditional updates measure the path, not
contention. A fourth measure is the latency of a rate-limit hit (sliding
log, ``50/second`` over 100 keys, one hit at a time as on a request path):
reflow's ``RateLimiter`` beside the same Lua script sent by raw redis-py.
Rounds rotate the order of the three sides (SQLite, Redis, peer) and each
engine's ratio is against the peer of the same round.

Replication lag (global tables, no peer): region ``a`` writes ``--write-rate``
puts per second (1,000 by default, in ticks of 10 ms) for ``--seconds`` while
region ``b``'s :class:`Replicator` pulls them; lag is b's clock at apply minus
the write's HLC stamp, p50 and p99 over every write of the round. Two SQLite
files, and two key prefixes on the Redis server.

The Redis server is ``REFLOW_BENCH_REDIS`` or 127.0.0.1:6379, else one this
run starts itself (``bench/backends.py``'s helper: installs the Debian package
when missing and root). Keys go under a fresh prefix and are removed after.

    python bench/state.py            # 5 rounds of 3,000 operations per measure
    python bench/state.py --smoke    # one round of 100: proves it still runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis  # noqa: E402
from _common import Comparison, parse_args, percentile, report  # noqa: E402
from backends import redis_server  # noqa: E402

from reflow.backends import Backend, open_backend  # noqa: E402
from reflow.state import RateLimiter, Table, attr  # noqa: E402
from reflow.state.limits import _SCRIPT as SLIDING_LOG_LUA  # noqa: E402
from reflow.state.replication import GlobalTable, Region, Replicator  # noqa: E402

MEASURES = ("put", "get", "conditional update")
LATENCIES = ("rate-limit hit p50", "rate-limit hit p99")
LAGS = ("replication lag p50", "replication lag p99")
ENGINES = ("sqlite", "redis")
BODY = "x" * 100

_PEER_UPDATE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return -1 end
local item = cjson.decode(raw)
if item.stock == nil or item.stock < 1 then return 0 end
item.stock = item.stock - 1
redis.call('SET', KEYS[1], cjson.encode(item))
return 1
"""


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=3000, help="operations per measure")
    parser.add_argument("--batch", type=int, default=50, help="operations in flight at once")
    parser.add_argument("--write-rate", type=int, default=1000, help="replicated writes/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="replication round length")
    parser.add_argument("--pull", nargs=5, help=argparse.SUPPRESS)  # region b's process


async def replication_round(
    urls: tuple[str, str], scratch: Path, tag: str, rate: int, seconds: float
) -> dict[str, float]:
    """Lag p50/p99 (ms) of ``rate`` writes/s in region a, pulled by region b.

    Region b's replicator runs in a process of its own (``--pull``), as it
    would in its own region, so the writer and the puller share no event loop.
    """
    name = f"lag{tag}".replace("-", "m")
    total = max(1, rate // 100) * int(seconds * 100)
    puller = subprocess.Popen(
        [sys.executable, __file__, "--pull", urls[0], urls[1], name, str(total), str(scratch)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert puller.stdout is not None
    try:
        if puller.stdout.readline().strip() != "ready":
            raise RuntimeError("the replicating process did not start")
        a = await open_backend(urls[0], data_dir=scratch)
        try:
            achieved = await _write_paced(GlobalTable(name, "a", a.kv), rate, seconds)
        finally:
            await a.close()
        out, _ = await asyncio.to_thread(puller.communicate, timeout=120)
    finally:
        if puller.poll() is None:
            puller.kill()
            puller.wait()
    if puller.returncode != 0:
        raise RuntimeError(f"the replicating process failed ({puller.returncode})")
    lags = json.loads(out.strip().splitlines()[-1])
    return {**lags, "achieved": achieved}


async def _write_paced(writer: GlobalTable, rate: int, seconds: float) -> float:
    """Put ``rate`` items a second, in ticks of 10 ms; return the rate achieved."""
    per_tick = max(1, rate // 100)
    total = 0
    started = time.perf_counter()
    for tick in range(int(seconds * 100)):
        await asyncio.gather(
            *(writer.put({"id": f"k{total + n}", "body": BODY}) for n in range(per_tick))
        )
        total += per_tick
        # Pace to the target rate; a slow tick is not made up by bursting.
        delay = started + (tick + 1) / 100 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return total / (time.perf_counter() - started)


async def pull(url_a: str, url_b: str, name: str, expected: int, scratch: Path) -> None:
    """Region b: replicate ``name`` from region a until ``expected`` writes landed."""
    a = await open_backend(url_a, data_dir=scratch)
    b = await open_backend(url_b, data_dir=scratch)
    replicator = Replicator(
        GlobalTable(name, "b", b.kv),
        Region("b", b.kv, b.log),
        {"a": Region("a", a.kv, a.log)},
        batch=500,
    )
    running = asyncio.create_task(replicator.run(interval=0.002))
    print("ready", flush=True)
    try:
        deadline = time.perf_counter() + 120
        while replicator.applied < expected and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
    finally:
        replicator.stop()
        await running
        await a.close()
        await b.close()
    if replicator.applied < expected:
        raise SystemExit(f"only {replicator.applied} of {expected} writes replicated")
    stats = replicator.lag()
    print(json.dumps({LAGS[0]: stats.p50 * 1000, LAGS[1]: stats.p99 * 1000}))


def _item(index: int) -> dict[str, Any]:
    return {"id": f"k{index}", "title": f"article {index}", "stock": 1000, "body": BODY}


async def _batches(ops: int, batch: int, work: Callable[[int, int], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    for start in range(0, ops, batch):
        await work(start, min(batch, ops - start))
    return ops / (time.perf_counter() - started)


async def reflow_round(backend: Backend, tag: str, ops: int, batch: int) -> dict[str, float]:
    """One round of every measure through a reflow table."""
    table = Table(f"bench-{tag}", backend.kv)

    async def put(start: int, size: int) -> None:
        await asyncio.gather(*(table.put(_item(start + i)) for i in range(size)))

    async def get(start: int, size: int) -> None:
        found = await asyncio.gather(*(table.get(f"k{start + i}") for i in range(size)))
        assert all(found), "every item put was found"

    async def update(start: int, size: int) -> None:
        await asyncio.gather(
            *(
                table.update(f"k{start + i}", add={"stock": -1}, condition=attr("stock") >= 1)
                for i in range(size)
            )
        )

    figures = {
        "put": await _batches(ops, batch, put),
        "get": await _batches(ops, batch, get),
        "conditional update": await _batches(ops, batch, update),
    }
    limiter = RateLimiter.for_backend(backend)
    try:
        figures.update(await _hits(ops // 3, lambda key: limiter.hit(f"{tag}{key}", "50/second")))
    finally:
        await limiter.close()
    return figures


async def _hits(count: int, hit: Callable[[str], Awaitable[Any]]) -> dict[str, float]:
    """Sequential rate-limit hits over 100 keys: what a request path pays, in µs."""
    samples = []
    for index in range(count):
        started = time.perf_counter()
        await hit(f"ip{index % 100}")
        samples.append((time.perf_counter() - started) * 1e6)
    return {LATENCIES[0]: percentile(samples, 0.5), LATENCIES[1]: percentile(samples, 0.99)}


async def peer_round(client: aioredis.Redis, prefix: str, ops: int, batch: int) -> dict[str, float]:
    """The same round in raw redis-py pipelines."""
    script = client.register_script(_PEER_UPDATE)

    async def put(start: int, size: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for i in range(size):
                pipe.set(f"{prefix}k{start + i}", json.dumps(_item(start + i)))
            await pipe.execute()

    async def get(start: int, size: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for i in range(size):
                pipe.get(f"{prefix}k{start + i}")
            found = [json.loads(raw) for raw in await pipe.execute()]
        assert len(found) == size

    async def update(start: int, size: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for i in range(size):
                await script(keys=[f"{prefix}k{start + i}"], client=pipe)
            results = await pipe.execute()
        assert all(r == 1 for r in results), "every conditional update applied"

    figures = {
        "put": await _batches(ops, batch, put),
        "get": await _batches(ops, batch, get),
        "conditional update": await _batches(ops, batch, update),
    }
    limit_script = client.register_script(SLIDING_LOG_LUA)
    counter = 0

    async def hit(key: str) -> Any:
        nonlocal counter
        counter += 1
        return await limit_script(
            keys=[f"{prefix}rl:{key}"], args=[repr(time.time()), "1.0", 50, 1, f"peer:{counter}"]
        )

    figures.update(await _hits(ops // 3, hit))
    return figures


async def run(
    url: str, rounds: int, ops: int, batch: int, rate: int, seconds: float
) -> list[Comparison]:
    tag = uuid.uuid4().hex[:10]
    prefix = f"bench-state-{tag}:"
    comparisons = {
        (engine, measure): Comparison(f"{measure} ({engine})", "ops/s")
        for engine in ENGINES
        for measure in MEASURES
    }
    for engine in ENGINES:
        for measure in LATENCIES:
            comparisons[(engine, measure)] = Comparison(
                f"{measure} ({engine})", "µs", higher_is_better=False
            )
        for measure in LAGS:
            comparisons[(engine, measure)] = Comparison(
                f"{measure} ({engine})", "ms", higher_is_better=False
            )
    separator = "&" if "?" in url else "?"
    with tempfile.TemporaryDirectory() as scratch:
        sqlite = await open_backend(f"sqlite:///{scratch}/state.db", data_dir=Path(scratch))
        redis_backend = await open_backend(
            f"{url}{separator}prefix={prefix}", data_dir=Path(scratch)
        )
        # Two regions per engine for the replication-lag measure (URLs: each
        # region's process opens its own).
        regions = {
            "sqlite": (f"sqlite:///{scratch}/state-a.db", f"sqlite:///{scratch}/state-b.db"),
            "redis": (f"{url}{separator}prefix={prefix}a:", f"{url}{separator}prefix={prefix}b:"),
        }
        client = aioredis.Redis.from_url(url)
        try:
            sides: dict[str, Callable[[int], Awaitable[dict[str, float]]]] = {
                "sqlite": lambda r: reflow_round(sqlite, f"{r}", ops, batch),
                "redis": lambda r: reflow_round(redis_backend, f"{r}", ops, batch),
                "peer": lambda r: peer_round(client, f"{prefix}raw{r}:", ops, batch),
            }
            order = list(sides)
            for warm in order:  # warm-up round, not recorded
                await sides[warm](-1)
            for index in range(rounds):
                figures: dict[str, dict[str, float]] = {}
                rotated = order[index % 3 :] + order[: index % 3]
                for side in rotated:
                    figures[side] = await sides[side](index)
                for engine in ENGINES:
                    for measure in MEASURES + LATENCIES:
                        comparison = comparisons[(engine, measure)]
                        comparison.ours.append(figures[engine][measure])
                        comparison.peer.append(figures["peer"][measure])
                for engine, pair in regions.items():
                    lags = await replication_round(pair, Path(scratch), f"{index}", rate, seconds)
                    for measure in LAGS:
                        comparisons[(engine, measure)].ours.append(lags[measure])
                    print(
                        f"round {index} {engine}: {lags['achieved']:,.0f} writes/s replicated",
                        file=sys.stderr,
                    )
        finally:
            await _remove_prefix(client, prefix)
            await client.aclose()
            await redis_backend.close()
            await sqlite.close()
    return list(comparisons.values())


async def _remove_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Delete this run's keys (only ours: never FLUSHDB on a shared server)."""
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)


def main() -> None:
    args = parse_args(__doc__ or "state benchmark", _options)
    if args.pull:
        url_a, url_b, name, expected, scratch = args.pull
        asyncio.run(pull(url_a, url_b, name, int(expected), Path(scratch)))
        return
    ops = 100 if args.smoke else args.ops
    with redis_server() as url:
        seconds = 0.3 if args.smoke else args.seconds
        comparisons = asyncio.run(run(url, args.rounds, ops, args.batch, args.write_rate, seconds))
    report(
        "state",
        comparisons,
        "raw redis-py (SET / GET / Lua check-and-set, pipelined)",
        ops=ops,
        batch=args.batch,
        rounds=args.rounds,
        write_rate=args.write_rate,
        note="shared 2-core machine; ratio = reflow ops/s / peer ops/s in the same round",
    )


if __name__ == "__main__":
    main()
