"""One region of a global table, as its own process, for the global-table tests.

``python -m tests.functional.state.region_worker REGION URLS MODE`` where URLS
is a JSON object of region → backend URL, and MODE is:

* ``write`` — make ``--count`` conflicting writes (puts and deletes on a small
  set of keys) to this region's table, replicating meanwhile from ``--peers``
  (none: the region is cut off); prints one JSON line listing every write's
  key, stamp and whether it was a delete;
* ``sync`` — pull from every other region until nothing is left;
* ``collect`` — delete the tombstones every region has seen;
* ``trickle`` — pull from ``--peers`` one small batch at a time, pausing in
  between, until killed (the SIGKILL test's victim).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
from pathlib import Path

from reflow.backends import Backend, open_backend
from reflow.state.replication import GlobalTable, Region, Replicator

TABLE = "articles"


async def _open(urls: dict[str, str]) -> dict[str, Backend]:
    data_dir = Path(os.environ["STATE_TEST_DATA_DIR"])
    return {name: await open_backend(url, data_dir=data_dir) for name, url in urls.items()}


async def main(region: str, urls: dict[str, str], mode: str, args: argparse.Namespace) -> object:
    backends = await _open(urls)
    try:
        regions = {n: Region(n, b.kv, b.log) for n, b in backends.items()}
        table = GlobalTable(TABLE, region, backends[region].kv)
        peers = [p for p in (args.peers.split(",") if args.peers else []) if p]
        if mode in ("sync", "collect"):
            peers = [n for n in urls if n != region]
        replicator = Replicator(
            table,
            regions[region],
            {p: regions[p] for p in peers},
            in_flight=args.in_flight,
            lease=args.lease,
            batch=args.batch,
        )
        if mode == "write":
            return await _write(table, replicator, args.count, args.seed)
        if mode == "sync":
            total = 0
            # Records a cancelled writer left leased come back when the lease ends.
            while (read := await replicator.step()) > 0 or not await replicator.caught_up():
                total += read
                await asyncio.sleep(0.05 if read == 0 else 0)
            return {"read": total, "applied": replicator.applied}
        if mode == "trickle":
            print("ready", flush=True)
            while True:
                for peer in peers:
                    await replicator.pull(peer)
                await asyncio.sleep(0.02)
        return {"collected": await replicator.collect()}
    finally:
        for backend in backends.values():
            await backend.close()


async def _write(
    table: GlobalTable, replicator: Replicator, count: int, seed: int
) -> dict[str, object]:
    rng = random.Random(seed)
    writes: list[dict[str, object]] = []
    running = asyncio.create_task(replicator.run(interval=0.01)) if replicator.peers else None
    try:
        for n in range(count):
            key = f"k{rng.randrange(12)}"
            if rng.random() < 0.3:
                stamp = await table.delete(key)
                writes.append({"key": key, "hlc": str(stamp), "deleted": True})
            else:
                stamp = await table.put({"id": key, "by": table.region, "n": n})
                writes.append({"key": key, "hlc": str(stamp), "deleted": False})
            if n % 10 == 0:
                await asyncio.sleep(0.002)  # let the replicator and the other regions in
    finally:
        if running is not None:
            replicator.stop()
            await running
    return {"writes": writes, "applied": replicator.applied}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("region")
    parser.add_argument("urls")
    parser.add_argument("mode", choices=["write", "sync", "collect", "trickle"])
    parser.add_argument("--peers", default="")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-flight", type=float, default=60.0)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=200)
    ns = parser.parse_args()
    print(json.dumps(asyncio.run(main(ns.region, json.loads(ns.urls), ns.mode, ns))))
