"""A bus consumer run as its own process, for the SIGKILL test.

``python -m tests.functional.events.killable_consumer URL JOURNAL HANG_AFTER``
delivers the rule ``record``'s events by appending ``start <id>`` and then
``done <id>`` to JOURNAL (flushed and fsynced). After HANG_AFTER completed
deliveries it writes ``start`` for the next one and hangs there, so that
the test can kill it in the middle of a delivery. HANG_AFTER < 0: never hang.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from reflow.backends import open_backend
from reflow.events.bus import EventBus
from reflow.events.delivery import Delivery, RetryPolicy, Rule
from reflow.events.targets import CallableTarget


def write(journal: Path, line: str) -> None:
    with journal.open("a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


async def main(url: str, journal: Path, hang_after: int) -> None:
    backend = await open_backend(url, data_dir=journal.parent)
    done = 0

    async def record(payload: object, delivery: Delivery) -> None:
        nonlocal done
        write(journal, f"start {delivery.event.id}")
        if 0 <= hang_after <= done:
            await asyncio.Event().wait()  # killed here, mid-delivery
        write(journal, f"done {delivery.event.id}")
        done += 1

    bus = EventBus(backend, lease=1.0, concurrency=1)
    # Short leases and back-offs, so that the killed consumer's work comes back fast.
    retry = RetryPolicy(base=0.1, cap=0.5)
    target = CallableTarget("record", record)
    bus.add_rule(Rule("record", {"source": ["load"]}, target, retry=retry))
    await bus.start()
    write(journal, "ready")
    try:
        await asyncio.Event().wait()
    finally:
        await bus.stop()
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
