"""A worker process for the multi-process state tests.

``python -m tests.functional.state.worker reserve URL N`` makes N stock
reservations; ``limit URL N`` makes N rate-limit hits; ``consume URL OUT``
reads a table's change stream and appends each record it handles to OUT.
Each prints one JSON line the test reads back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from reflow.backends import Backend
from reflow.backends import open_backend as _open_backend
from reflow.errors import ConditionFailedError, InsufficientError
from reflow.state import StreamConsumer, StreamRecord, StreamRelay, Table, attr
from reflow.state.counters import Counters
from reflow.state.limits import RateLimiter


async def open_backend(url: str) -> Backend:
    """The backend at ``url``, with its data directory where the test says (never the cwd)."""
    return await _open_backend(url, data_dir=Path(os.environ["STATE_TEST_DATA_DIR"]))


async def reserve(url: str, count: int, concurrency: int) -> dict[str, int]:
    backend = await open_backend(url)
    table = Table("stock", backend.kv, key="sku", stream=True)
    won = lost = 0
    queue = list(range(count))

    async def shopper() -> None:
        nonlocal won, lost
        while queue:
            queue.pop()
            try:
                await table.update("flash", add={"stock": -1}, condition=attr("stock") >= 1)
            except ConditionFailedError:
                lost += 1
            else:
                won += 1

    try:
        await asyncio.gather(*(shopper() for _ in range(concurrency)))
    finally:
        await backend.close()
    return {"won": won, "lost": lost}


async def reserve_counter(url: str, count: int, concurrency: int) -> dict[str, int]:
    backend = await open_backend(url)
    counters = Counters.for_backend(backend)
    won = lost = 0
    queue = list(range(count))

    async def shopper() -> None:
        nonlocal won, lost
        while queue:
            queue.pop()
            try:
                left = await counters.decrement_if("flash", 1, minimum=0)
            except InsufficientError:
                lost += 1
            else:
                assert left >= 0
                won += 1

    try:
        await asyncio.gather(*(shopper() for _ in range(concurrency)))
    finally:
        await counters.close()
        await backend.close()
    return {"won": won, "lost": lost}


async def limit(url: str, count: int, rate: str) -> dict[str, list[float]]:
    backend = await open_backend(url)
    limiter = RateLimiter.for_backend(backend)
    admitted: list[float] = []
    try:
        for _ in range(count):
            decision = await limiter.hit("api", rate)
            if decision.allowed:
                admitted.append(decision.at)
    finally:
        await limiter.close()
        await backend.close()
    return {"admitted": admitted}


async def consume(url: str, out: str, name: str, pause: float, lease: float) -> dict[str, int]:
    backend = await open_backend(url)
    consumer = StreamConsumer(backend.log, "docs", group="render", consumer=name, lease=lease)
    handled = 0
    with open(out, "a", encoding="utf-8") as sink:

        def handle(record: StreamRecord) -> None:
            # The effect is durable (fsync) before the ack: at-least-once.
            sink.write(
                json.dumps(
                    {
                        "seq": record.sequence,
                        "item": record.keys["id"],
                        "n": (record.new or {}).get("n"),
                    }
                )
                + "\n"
            )
            sink.flush()
            os.fsync(sink.fileno())

        async def handle_slowly(record: StreamRecord) -> None:
            handle(record)
            await asyncio.sleep(pause)

        try:
            idle = 0
            while idle < 2:
                done = await consumer.process(handle_slowly, count=10, block=lease + 0.5)
                handled += done
                idle = 0 if done else idle + 1
        finally:
            await backend.close()
    return {"handled": handled}


async def write_and_relay(url: str, count: int) -> dict[str, int]:
    """Bump counters on a few items, running the table's relay every few writes."""
    backend = await open_backend(url)
    table = Table("feed", backend.kv, stream=True)
    relay = StreamRelay(backend.kv, backend.log, "feed", batch=7)
    moved = 0
    try:
        for index in range(count):
            await table.update(f"item{index % 4}", add={"n": 1})
            if index % 5 == 4:
                moved += await relay.pump()
    finally:
        await backend.close()
    return {"moved": moved}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "command", choices=["reserve", "reserve-counter", "limit", "consume", "write-and-relay"]
    )
    parser.add_argument("url")
    parser.add_argument("arg")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--name", default="c1")
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--lease", type=float, default=1.0)
    args = parser.parse_args()
    if args.command == "reserve":
        result: object = asyncio.run(reserve(args.url, int(args.arg), args.concurrency))
    elif args.command == "reserve-counter":
        result = asyncio.run(reserve_counter(args.url, int(args.arg), args.concurrency))
    elif args.command == "write-and-relay":
        result = asyncio.run(write_and_relay(args.url, int(args.arg)))
    elif args.command == "limit":
        result = asyncio.run(limit(args.url, args.count, args.arg))
    else:
        result = asyncio.run(consume(args.url, args.arg, args.name, args.pause, args.lease))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
