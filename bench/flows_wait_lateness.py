"""How late a parked Wait ends: ``Wait Seconds=1`` on SQLite with the real clock.

Starts ``count`` Standard executions of ``Wait 1 s -> Pass`` on a
:class:`~reflow.flows.service.FlowService` over SQLite (a file in a temp
dir), one every ``spread`` seconds so their timers fall at different points
of the timer loop's poll, waits for all of them, and reads each one's
history: lateness is ``WaitStateExited - WaitStateEntered - 1 s``. Prints
p50, p99, min and max in milliseconds.

The peer is the floor: the same number of bare ``asyncio.sleep(1)`` timers
started the same way, whose lateness is the event loop's alone. Rounds
alternate the two.

    .venv/bin/python bench/flows_wait_lateness.py [--count 50] [--spread 0.037] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Comparison, parse_args, percentile, report  # noqa: E402

from reflow.backends import open_backend
from reflow.flows.service import FlowService

FLOW = {
    "StartAt": "W",
    "States": {
        "W": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
        "Done": {"Type": "Pass", "End": True},
    },
}


def _seconds(stamp: Any) -> float:
    if isinstance(stamp, int | float):
        return float(stamp)
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


async def lateness(count: int, spread: float) -> list[float]:
    """Each Wait's lateness in seconds, sorted."""
    late: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        backend = await open_backend(f"sqlite:///{tmp}/waits.db", data_dir=Path(tmp))
        try:
            async with FlowService(backend, {"w": FLOW}) as service:
                for index in range(count):
                    await service.start_execution("w", {}, name=f"w{index}")
                    await asyncio.sleep(spread)
                for index in range(count):
                    while (await service.describe(f"w{index}"))["status"] == "RUNNING":
                        await asyncio.sleep(0.05)
                    events = {e["type"]: e for e in await service.history(f"w{index}")}
                    entered = _seconds(events["WaitStateEntered"]["timestamp"])
                    exited = _seconds(events["WaitStateExited"]["timestamp"])
                    late.append(exited - entered - 1.0)
        finally:
            await backend.close()
    return sorted(late)


async def floor(count: int, spread: float) -> list[float]:
    """The same timers as bare ``asyncio.sleep(1)`` calls: the lateness of the event loop alone."""

    async def one() -> float:
        started = time.monotonic()
        await asyncio.sleep(1.0)
        return time.monotonic() - started - 1.0

    tasks = []
    for _ in range(count):
        tasks.append(asyncio.ensure_future(one()))
        await asyncio.sleep(spread)
    return sorted(await asyncio.gather(*tasks))


def main() -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--count", type=int, default=50, help="waits per round (default 50)")
        parser.add_argument(
            "--spread", type=float, default=0.037, help="seconds between starts (default 0.037)"
        )

    args = parse_args(__doc__ or "wait lateness", extra)
    count, spread = (5, 0.01) if args.smoke else (args.count, args.spread)
    p50 = Comparison("Wait 1 s lateness p50", "ms", higher_is_better=False)
    p99 = Comparison("Wait 1 s lateness p99", "ms", higher_is_better=False)
    for index in range(args.rounds):
        # Swap who goes first each round so that drift hits both sides alike.
        sides = [(lateness, p50.ours, p99.ours), (floor, p50.peer, p99.peer)]
        for measure, at_p50, at_p99 in sides if index % 2 == 0 else sides[::-1]:
            late = asyncio.run(measure(count, spread))
            at_p50.append(percentile(late, 0.5) * 1000)
            at_p99.append(percentile(late, 0.99) * 1000)
    report("flows_wait_lateness", [p50, p99], "asyncio.sleep(1) (the floor)", smoke=args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
