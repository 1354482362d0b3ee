"""How late a parked Wait ends: ``Wait Seconds=1`` on SQLite with the real clock.

Starts ``count`` Standard executions of ``Wait 1 s -> Pass`` on a
:class:`~reflow.flows.service.FlowService` over SQLite (a file in a temp
dir), one every ``spread`` seconds so their timers fall at different points
of the timer loop's poll, waits for all of them, and reads each one's
history: lateness is ``WaitStateExited - WaitStateEntered - 1 s``. Prints
p50, p99, min and max in milliseconds.

    .venv/bin/python bench/flows_wait_lateness.py [count=50] [spread=0.037]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

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


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    spread = float(sys.argv[2]) if len(sys.argv) > 2 else 0.037
    late = asyncio.run(lateness(count, spread))
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
    print(
        f"Wait 1 s on SQLite, n={len(late)}: lateness p50 {statistics.median(late) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, min {late[0] * 1000:.1f} ms, max {late[-1] * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
