"""The event bus: put-to-handler latency at a steady 1,000 events/s, on SQLite and Redis.

Each side receives the same paced load — ``--events`` events offered at
``--rate`` events/s, each put awaited by its own sender (it returns once
the event is durable; at most 64 puts in flight) — and measures, in the
handler, the time from just before the put to the handler's call. p50 and
p99 are reported, and the put rate each side actually reached.

Then a **burst**: ``--burst`` events put as fast as 64 concurrent senders
can, each side measuring events/s from the first put to the last handler
call, and the CPU time this process spent per event (the Redis server's
own CPU is not counted, for either side). It shows how much headroom each
side has above the paced rate: a side that cannot reach the rate falls
behind and its latency grows without bound.

* **reflow**: an :class:`~reflow.events.bus.EventBus` with one rule whose
  target is a Python callable; the path is put (append to the bus stream),
  the dispatcher (read, match the RuleSet, append the delivery record, ack)
  and the delivery worker (read, call the target, ack) — two durable hops.
* **peer**: the same producer and consumer written by hand with raw
  redis-py: XADD, and a consumer in XREADGROUP BLOCK calling the handler and
  XACKing — one hop, no matching, no retries, no dead letters. It is the
  floor a Redis-based bus could reach.

The Redis server is the one ``bench/backends.py`` finds or starts
(``REFLOW_BENCH_REDIS``, else 127.0.0.1:6379, else its own
``redis-server``). Rounds rotate the order of the three sides.

``--detail-bytes N`` gives every event a nested ``detail`` of about N
bytes of JSON (order lines with numbers, strings and lists) instead of
``{"n": i}``, so encoding and decoding events weighs as it does for real
payloads; the peer then XADDs the same detail as JSON text and its consumer
decodes it.

    python bench/bus.py            # 5 rounds of 3,000 events at 1,000 events/s, 5 bursts of 5,000
    python bench/bus.py --smoke    # one round of 100 events, a burst of 200: proves it still runs
    python bench/bus.py --detail-bytes 900   # the same with ~900-byte details
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
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
from _common import Comparison, machine_is_quiet, parse_args, percentile, report  # noqa: E402
from backends import redis_server  # noqa: E402

from reflow.backends import Backend, open_backend  # noqa: E402
from reflow.events.bus import EventBus, bus_stream  # noqa: E402
from reflow.events.delivery import Delivery, Rule, rule_stream  # noqa: E402
from reflow.events.targets import CallableTarget  # noqa: E402

SIDES = ("sqlite", "redis", "peer")
IN_FLIGHT = 64  # puts outstanding at once, at most


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=3000, help="events per side per round")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--burst", type=int, default=5000, help="events per side per burst")
    parser.add_argument(
        "--detail-bytes",
        type=int,
        default=0,
        help="size of each event's detail as JSON (0: just {'n': i})",
    )


def make_detail(size: int) -> Callable[[int], dict[str, Any]]:
    """Details of about ``size`` bytes of JSON for event ``n`` (just ``{"n": n}`` for 0)."""
    lines: list[dict[str, Any]] = []
    template: dict[str, Any] = {"n": 0, "order": {"id": "order-0000", "lines": lines}}
    while size and len(json.dumps(template)) < size:
        k = len(lines)
        lines.append(
            {"sku": f"sku-{k:04d}", "price": 12.5 + k, "qty": k % 4 + 1, "tags": ["new", "eu"]}
        )

    def detail(n: int) -> dict[str, Any]:
        if not size:
            return {"n": n}
        return {"n": n, "order": {"id": f"order-{n:04d}", "lines": lines}}

    return detail


async def paced(count: int, rate: float, put: Callable[[int], Awaitable[Any]]) -> float:
    """Start ``put(i)`` ``count`` times at ``rate`` per second; return the rate achieved.

    Puts are not awaited one by one: like many senders, up to ``IN_FLIGHT``
    are outstanding at once, so the offered rate holds even when one durable
    put takes longer than the gap between two.
    """
    slots = asyncio.Semaphore(IN_FLIGHT)
    pending: set[asyncio.Task[Any]] = set()

    async def one(index: int) -> None:
        try:
            await put(index)
        finally:
            slots.release()

    started = time.perf_counter()
    for index in range(count):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        task = asyncio.create_task(one(index))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return count / (time.perf_counter() - started)


Side = Callable[[int, float], Awaitable[tuple[list[float], float]]]


async def burst(side: Side, count: int) -> tuple[float, float]:
    """Events/s from the first put to the last handler call, and CPU µs per event."""
    cpu, started = time.process_time(), time.perf_counter()
    await side(count, math.inf)
    elapsed = time.perf_counter() - started
    return count / elapsed, (time.process_time() - cpu) / count * 1e6


async def wait_for_all(latencies: list[float], count: int, timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    while len(latencies) < count:
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {len(latencies)} of {count} events arrived")
        await asyncio.sleep(0.005)


async def reflow_side(
    backend: Backend, count: int, rate: float, detail: Callable[[int], dict[str, Any]]
) -> tuple[list[float], float]:
    """One round through reflow's bus; return latencies (s) and the put rate reached."""
    sent: dict[int, float] = {}
    latencies: list[float] = []

    def handler(payload: Any, delivery: Delivery) -> None:
        latencies.append(time.perf_counter() - sent[payload["detail"]["n"]])

    tag = uuid.uuid4().hex[:8]
    rule = Rule(f"bench-{tag}", {"source": [f"bench.{tag}"]}, CallableTarget("bench", handler))
    bus = EventBus(backend, lease=30.0)
    bus.add_rule(rule)
    await bus.start()

    async def put(index: int) -> None:
        sent[index] = time.perf_counter()
        entry = {"source": f"bench.{tag}", "detail-type": "Tick", "detail": detail(index)}
        await bus.put([entry])

    try:
        achieved = await paced(count, rate, put)
        await wait_for_all(latencies, count)
    finally:
        await bus.stop()
        await backend.log.delete_stream(rule_stream(rule.name))
    return latencies, achieved


async def peer_side(
    client: aioredis.Redis,
    url: str,
    count: int,
    rate: float,
    detail: Callable[[int], dict[str, Any]],
    sized: bool,
) -> tuple[list[float], float]:
    """The same load through raw redis-py XADD / XREADGROUP / XACK."""
    stream = f"bench-bus-peer-{uuid.uuid4().hex[:8]}"
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    sent: dict[int, float] = {}
    latencies: list[float] = []

    stopping = asyncio.Event()
    # The consumer has its own connection, as a separate process would.
    consumer = aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(url))

    async def consume() -> None:
        # Stopped by a flag, not by cancellation: redis-py can swallow a
        # cancellation that lands in a blocking XREADGROUP.
        while not stopping.is_set():
            # Any: redis-py's stubs do not describe XREADGROUP's nested reply.
            reply: Any = await consumer.xreadgroup("g", "c", {stream: ">"}, count=50, block=100)
            for _, entries in reply or []:
                ids = []
                for entry_id, fields in entries:
                    if sized:  # the handler gets the detail decoded
                        json.loads(fields[b"detail"])
                    latencies.append(time.perf_counter() - sent[int(fields[b"n"])])
                    ids.append(entry_id)
                await consumer.xack(stream, "g", *ids)

    async def put(index: int) -> None:
        sent[index] = time.perf_counter()
        text = json.dumps(detail(index), separators=(",", ":")) if sized else ""
        if sized:
            await client.xadd(
                stream, {"n": index, "source": "bench", "detail-type": "Tick", "detail": text}
            )
        else:
            await client.xadd(stream, {"n": index, "source": "bench", "detail-type": "Tick"})

    task = asyncio.create_task(consume())
    try:
        achieved = await paced(count, rate, put)
        await wait_for_all(latencies, count)
    finally:
        stopping.set()
        await task
        await consumer.aclose()
        await consumer.connection_pool.aclose()
        await client.delete(stream)
    return latencies, achieved


async def run(
    url: str, rounds: int, count: int, rate: float, bursts: int, detail_bytes: int = 0
) -> tuple[list[Comparison], dict[str, Any]]:
    prefix = f"bench-bus-{uuid.uuid4().hex[:8]}:"
    comparisons = {
        f"{side} {q}": Comparison(f"{side} put->handler {q}", "ms", higher_is_better=False)
        for side in ("sqlite", "redis")
        for q in ("p50", "p99")
    }
    for side in ("sqlite", "redis"):
        comparisons[f"{side} burst"] = Comparison(f"{side} burst throughput", "events/s")
    achieved: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as folder:
        sqlite = await open_backend(f"sqlite:///{folder}/bench.db", data_dir=Path(folder))
        redis = await open_backend(f"{url}?prefix={prefix}", data_dir=Path(folder))
        client = aioredis.from_url(url)
        try:
            detail = make_detail(detail_bytes)
            sized = detail_bytes > 0
            sides: dict[str, Side] = {
                "sqlite": lambda n, r: reflow_side(sqlite, n, r, detail),
                "redis": lambda n, r: reflow_side(redis, n, r, detail),
                "peer": lambda n, r: peer_side(client, url, n, r, detail, sized),
            }
            for side in SIDES:  # warm-up
                await sides[side](count, rate)
            for index in range(rounds):
                if not machine_is_quiet():
                    print(f"round {index + 1}: the machine is busy", file=sys.stderr)
                order = SIDES[index % 3 :] + SIDES[: index % 3]
                results = {}
                for side in order:
                    results[side], reached = await sides[side](count, rate)
                    achieved[side].append(reached)
                peer = results["peer"]
                for side in ("sqlite", "redis"):
                    for q, fraction in (("p50", 0.5), ("p99", 0.99)):
                        comparison = comparisons[f"{side} {q}"]
                        comparison.ours.append(percentile(results[side], fraction) * 1000)
                        comparison.peer.append(percentile(peer, fraction) * 1000)
            for index in range(rounds):
                order = SIDES[index % 3 :] + SIDES[: index % 3]
                rates = {}
                for side in order:
                    rates[side], per_event = await burst(sides[side], bursts)
                    cpu[side].append(per_event)
                for side in ("sqlite", "redis"):
                    comparisons[f"{side} burst"].ours.append(rates[side])
                    comparisons[f"{side} burst"].peer.append(rates["peer"])
        finally:
            await redis.log.delete_stream(bus_stream("default"))
            await client.aclose()
            await redis.close()
            await sqlite.close()
    lowest = {side: min(values) for side, values in achieved.items() if values}
    cpu_per_event = {side: statistics.median(values) for side, values in cpu.items() if values}
    return list(comparisons.values()), {"reached": lowest, "cpu_us_per_event": cpu_per_event}


def main() -> None:
    args = parse_args(__doc__ or "", _options)
    count = 100 if args.smoke else args.events
    bursts = 200 if args.smoke else args.burst
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    with redis_server() as url:
        comparisons, extra = asyncio.run(
            run(url, args.rounds, count, args.rate, bursts, args.detail_bytes)
        )
    print(f"redis server {url}; this process on CPU {sorted(os.sched_getaffinity(0))}")
    print(
        "lowest put rate reached per side (events/s): "
        + ", ".join(f"{side} {value:,.0f}" for side, value in extra["reached"].items())
    )
    print(
        "burst CPU of this process per event (µs, median): "
        + ", ".join(f"{side} {value:,.0f}" for side, value in extra["cpu_us_per_event"].items())
    )
    report(
        "bus",
        comparisons,
        "raw redis-py XADD + XREADGROUP/XACK consumer",
        redis=url,
        events=count,
        rate=args.rate,
        burst=bursts,
        rounds=args.rounds,
        smoke=args.smoke,
        detail_bytes=args.detail_bytes,
        **extra,
    )


if __name__ == "__main__":
    main()
