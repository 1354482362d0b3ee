"""The scheduler: ``@app.schedule`` rules fired on the Clock, once per period across processes.

Every process running the events service runs a :class:`Scheduler` over the
same schedules. For each schedule it computes the next firing with
:mod:`reflow.events.schedules` (rate periods are aligned on the Unix epoch,
so every process computes the same moments), sleeps on the injected
:class:`~reflow.clock.Clock` until then, and claims the firing with a
compare-and-set in ``KV``: ``events.schedule.<name>.<fire-ms>`` written at
version 0 ("must not exist"). Exactly one process wins each period; the
winner puts a ``Scheduled Event`` on the bus, where the schedule's own rule
delivers it to the function with the bus's retries and dead-letter queue.

The event's id is derived from the schedule and the moment (a UUID5), so a
redelivered firing carries the same id. The claim is written before the
event is put: a winner killed between the two loses that one firing (the
window is one KV write and one log append); the claim key outlives the
period by a day, after which the backend expires it.

Missed periods (a process down, or the clock jumping far ahead) are not
backfilled, as with EventBridge: the next firing is the first one after now.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reflow.backends.protocols import KV
from reflow.clock import Clock
from reflow.errors import VersionConflictError
from reflow.events.delivery import stop_tasks
from reflow.events.model import Event
from reflow.events.schedules import Schedule, parse_schedule

if TYPE_CHECKING:
    from reflow.events.bus import EventBus

__all__ = [
    "SCHEDULE_SOURCE",
    "SCHEDULE_TYPE",
    "ScheduledRule",
    "Scheduler",
    "schedule_pattern",
]

_log = logging.getLogger("reflow.events")

SCHEDULE_SOURCE = "reflow.scheduler"
SCHEDULE_TYPE = "Scheduled Event"
CLAIM_TTL = 24 * 3600.0
_NAMESPACE = uuid.UUID("5b0c1f7e-3c1d-4c55-9a55-7d1f0e9c2a10")


def schedule_pattern(name: str) -> dict[str, Any]:
    """The pattern of the rule that delivers schedule ``name``'s events."""
    return {"source": [SCHEDULE_SOURCE], "resources": [schedule_resource(name)]}


def schedule_resource(name: str) -> str:
    """The resource a schedule's events name (EventBridge puts the rule's ARN there)."""
    return f"arn:reflow:events:local:000000000000:rule/{name}"


@dataclass(frozen=True)
class ScheduledRule:
    """One schedule: its name, expression and the event detail it sends."""

    name: str
    expression: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    bus: str = "default"


class Scheduler:
    """Fires schedules on the Clock; a KV claim makes each firing happen once."""

    def __init__(
        self,
        schedules: Sequence[ScheduledRule],
        bus: EventBus,
        kv: KV,
        *,
        clock: Clock,
        namespace: str = "app",
    ) -> None:
        self.schedules = list(schedules)
        self.parsed: dict[str, Schedule] = {s.name: parse_schedule(s.expression) for s in schedules}
        self.bus = bus
        self.kv = kv
        self.clock = clock
        self.namespace = namespace
        self.fired: list[tuple[str, datetime]] = []  # what this process won, for inspection
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start one timer task per schedule."""
        for schedule in self.schedules:
            self._tasks.append(asyncio.create_task(self._run(schedule)))

    async def stop(self) -> None:
        """Cancel the timers."""
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)

    async def _run(self, schedule: ScheduledRule) -> None:
        parsed = self.parsed[schedule.name]
        moment = datetime.fromtimestamp(self.clock.time(), UTC)
        while True:
            when = parsed.next_after(moment)
            if when is None:
                return  # an at() schedule that has fired
            await self.clock.sleep(when.timestamp() - self.clock.time())
            try:
                await self.fire(schedule, when)
            except Exception:
                _log.exception("schedule %s: firing at %s failed", schedule.name, when)
            # Missed periods are skipped: continue from now, not from `when`.
            moment = max(when, datetime.fromtimestamp(self.clock.time(), UTC))

    async def fire(self, schedule: ScheduledRule, when: datetime) -> bool:
        """Claim the firing of ``schedule`` at ``when``; if won, put its event. Return if won."""
        stamp = int(when.timestamp() * 1000)
        key = f"events.schedule.{self.namespace}.{schedule.name}.{stamp:015d}"
        try:
            await self.kv.put(key, b"claimed", expect_version=0, ttl=CLAIM_TTL)
        except VersionConflictError:
            return False
        event = Event(
            source=SCHEDULE_SOURCE,
            type=SCHEDULE_TYPE,
            id=str(uuid.uuid5(_NAMESPACE, f"{self.namespace}/{schedule.name}/{stamp}")),
            time=when,
            data=dict(schedule.payload),
            extensions={"resources": (schedule_resource(schedule.name),)},
        )
        await self.bus.put([event], bus=schedule.bus)
        self.fired.append((schedule.name, when))
        return True
