"""A scheduler run as its own process, stopped between claiming a firing and putting it.

``python -m tests.functional.events.scheduler_victim URL JOURNAL NAMESPACE``
runs a :class:`~reflow.events.scheduler.Scheduler` with the schedule
``sitemap`` (``rate(1 minute)``) on a FakeClock starting at ``START``, moves
the clock one minute on so that the 22:14:00 firing is due, and lets the
scheduler claim it. Its bus's ``put`` is the test hook: it writes
``claimed <event id>`` to JOURNAL (flushed and fsynced) and hangs, so the
test can SIGKILL the process with the claim taken and the event not put.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reflow.backends import open_backend
from reflow.events.bus import EventBus
from reflow.events.model import Event
from reflow.events.scheduler import ScheduledRule, Scheduler
from reflow.testing.clock import FakeClock

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z: the first firing is 22:14:00
LEASE = 30.0
SITEMAP = ScheduledRule("sitemap", "rate(1 minute)", {"full": True})


def write(journal: Path, line: str) -> None:
    with journal.open("a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


class HangingBus(EventBus):
    """A bus whose put stops the process right after the claim: killed there."""

    journal: Path

    async def put(
        self, entries: Iterable[Event | Mapping[str, Any]], *, bus: str = "default"
    ) -> list[str]:
        for entry in entries:
            event_id = entry.id if isinstance(entry, Event) else entry["id"]
            write(self.journal, f"claimed {event_id}")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def main(url: str, journal: Path, namespace: str) -> None:
    clock = FakeClock(START)
    backend = await open_backend(url, data_dir=journal.parent, clock=clock)
    bus = HangingBus(backend, clock=clock)
    bus.journal = journal
    scheduler = Scheduler([SITEMAP], bus, backend.kv, clock=clock, namespace=namespace, lease=LEASE)
    await scheduler.start()
    while clock.sleepers < 1:
        await asyncio.sleep(0.01)
    clock.advance(60.0)  # 22:14:20: the 22:14:00 firing is due
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
