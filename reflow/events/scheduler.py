"""The scheduler: ``@app.schedule`` rules fired on the Clock, once per period across processes.

Every process running the events service runs a :class:`Scheduler` over the
same schedules. For each schedule it computes the next firing with
:mod:`reflow.events.schedules` (rate periods are aligned on the Unix epoch,
so every process computes the same moments), sleeps on the injected
:class:`~reflow.clock.Clock` until then, and claims the firing in ``KV``.
Exactly one process wins each period; the winner puts a ``Scheduled Event``
on the bus, where the schedule's own rule delivers it to the function with
the bus's retries and dead-letter queue.

A firing is crash-safe. The claim is one ``KV`` transaction of two keys,
both written at version 0 ("must not exist"):

* ``events.schedule.<app>.<schedule>.<fire-ms>`` — the period is taken; it
  stays for a day (then the backend expires it), so no process fires the
  period again;
* ``events.schedule-open.<app>.<schedule>.<fire-ms>`` — the firing is
  claimed, not yet put: the event to put (its id is derived from the
  schedule and the moment, a UUID5), the bus, the holder and the end of its
  lease (``until``, on the Clock).

The holder puts the event and only then deletes the open record (at the
version it wrote). A process that finds an open record — because it lost the
claim of that period, or at start-up, or because its own put failed —
watches it: once ``until`` has passed and the record is still there, it
takes the record over with a compare-and-set (a new holder and lease) and
puts the same event, with the same id, again. A holder killed between its
claim and its put therefore delays that firing by at most its lease; one
killed after the put but before the delete makes a second put of the same
event id (at least once, never a different id: consumers that care dedupe
by id, and a flow target names its execution after it).

Missed periods (a process down, or the clock jumping far ahead) are not
backfilled, as with EventBridge: the next firing is the first one after now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reflow.backends.protocols import KV, Put
from reflow.clock import Clock
from reflow.errors import TransactionConflictError, VersionConflictError
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
    "claim_key",
    "open_key",
    "schedule_pattern",
]

_log = logging.getLogger("reflow.events")

SCHEDULE_SOURCE = "reflow.scheduler"
SCHEDULE_TYPE = "Scheduled Event"
CLAIM_TTL = 24 * 3600.0
CLAIM_LEASE = 30.0  # seconds a winner has to put its event before others take over
_NAMESPACE = uuid.UUID("5b0c1f7e-3c1d-4c55-9a55-7d1f0e9c2a10")


def schedule_pattern(name: str) -> dict[str, Any]:
    """The pattern of the rule that delivers schedule ``name``'s events."""
    return {"source": [SCHEDULE_SOURCE], "resources": [schedule_resource(name)]}


def schedule_resource(name: str) -> str:
    """The resource a schedule's events name (EventBridge puts the rule's ARN there)."""
    return f"arn:reflow:events:local:000000000000:rule/{name}"


def claim_key(namespace: str, name: str, stamp: int) -> str:
    """The KV key that takes the period of schedule ``name`` firing at ``stamp`` (ms)."""
    return f"events.schedule.{namespace}.{name}.{stamp:015d}"


def open_key(namespace: str, name: str, stamp: int) -> str:
    """The KV key of that firing while it is claimed and its event not yet put."""
    return f"{_open_prefix(namespace)}{name}.{stamp:015d}"


def _open_prefix(namespace: str) -> str:
    return f"events.schedule-open.{namespace}."


def schedule_event_id(namespace: str, name: str, stamp: int) -> str:
    """The id of the event of schedule ``name`` firing at ``stamp`` (ms): the same everywhere."""
    return str(uuid.uuid5(_NAMESPACE, f"{namespace}/{name}/{stamp}"))


@dataclass(frozen=True)
class ScheduledRule:
    """One schedule: its name, expression and the event detail it sends."""

    name: str
    expression: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    bus: str = "default"


class Scheduler:
    """Fires schedules on the Clock; a KV claim makes each firing happen once.

    ``lease`` is how long a winner has to put its event before another
    process may put it in its place (seconds on the Clock).
    """

    def __init__(
        self,
        schedules: Sequence[ScheduledRule],
        bus: EventBus,
        kv: KV,
        *,
        clock: Clock,
        namespace: str = "app",
        lease: float = CLAIM_LEASE,
    ) -> None:
        self.schedules = list(schedules)
        self.parsed: dict[str, Schedule] = {s.name: parse_schedule(s.expression) for s in schedules}
        self.bus = bus
        self.kv = kv
        self.clock = clock
        self.namespace = namespace
        self.lease = lease
        self.holder = f"scheduler-{uuid.uuid4().hex[:12]}"
        self.fired: list[tuple[str, datetime]] = []  # what this process put, for inspection
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Watch the firings left open by others, then start one timer task per schedule."""
        try:
            left = await self.kv.scan(_open_prefix(self.namespace))
        except Exception:
            _log.exception("scheduler: looking for unfinished firings failed")
            left = []
        for item in left:
            self._watch(item.key)
        for schedule in self.schedules:
            self._tasks.append(asyncio.create_task(self._run(schedule)))

    async def stop(self) -> None:
        """Cancel the timers and the watchers."""
        tasks, self._tasks = self._tasks, []
        tasks.extend(self._watchers.values())
        self._watchers.clear()
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
        """Claim the firing of ``schedule`` at ``when``; if won, put its event. Return if won.

        A firing someone else claimed but has not finished is watched, and
        put by this process if its holder's lease runs out first.
        """
        stamp = int(when.timestamp() * 1000)
        key = open_key(self.namespace, schedule.name, stamp)
        event = Event(
            source=SCHEDULE_SOURCE,
            type=SCHEDULE_TYPE,
            id=schedule_event_id(self.namespace, schedule.name, stamp),
            time=when,
            data=dict(schedule.payload),
            extensions={"resources": (schedule_resource(schedule.name),)},
        )
        claim = {
            "namespace": self.namespace,
            "schedule": schedule.name,
            "stamp": stamp,
            "bus": schedule.bus,
            "event": event.to_cloudevent(),
        }
        try:
            _, version = await self.kv.transact(
                [
                    Put(
                        claim_key(self.namespace, schedule.name, stamp),
                        b"claimed",
                        expect_version=0,
                        ttl=CLAIM_TTL,
                    ),
                    Put(key, self._held(claim), expect_version=0, ttl=CLAIM_TTL),
                ]
            )
        except TransactionConflictError:
            # Taken by another process; if it is still open, see that it ends.
            if await self.kv.get(key) is not None:
                self._watch(key)
            return False
        await self._put(key, version, claim)
        return True

    def _held(self, claim: Mapping[str, Any]) -> bytes:
        """The open record of ``claim`` held by this process for one lease from now."""
        record = {**claim, "holder": self.holder, "until": self.clock.time() + self.lease}
        return json.dumps(record, separators=(",", ":")).encode()

    async def _put(self, key: str, version: int, claim: Mapping[str, Any]) -> None:
        """Put the claimed firing's event, then close the claim (at the version we hold)."""
        try:
            await self.bus.put([claim["event"]], bus=claim["bus"])
            with contextlib.suppress(VersionConflictError):
                # A conflict: our lease ran out and another process took the
                # firing over (and put the same event): it closes it.
                await self.kv.delete(key, expect_version=version)
        except Exception:
            # The claim stays open: put again after the lease, here or elsewhere.
            self._watch(key)
            raise
        # Last, so that a caller seeing it knows the firing is closed.
        self.fired.append((claim["schedule"], datetime.fromtimestamp(claim["stamp"] / 1000, UTC)))

    def _watch(self, key: str) -> None:
        """Watch the open firing ``key`` until it is closed, taking it over when stale."""
        watcher = self._watchers.get(key)
        if watcher is None or watcher.done():
            self._watchers[key] = asyncio.create_task(self._recover(key))

    async def _recover(self, key: str) -> None:
        try:
            while True:
                try:
                    if await self._take_over(key):
                        return
                except Exception:
                    _log.exception("scheduler: recovering the firing %s failed; trying again", key)
                    await self.clock.sleep(self.lease)
        finally:
            if self._watchers.get(key) is asyncio.current_task():
                del self._watchers[key]

    async def _take_over(self, key: str) -> bool:
        """One look at an open firing: wait for its lease, or take it over. True when closed."""
        item = await self.kv.get(key)
        if item is None:
            return True  # its holder put the event and closed it
        claim = json.loads(item.value)
        if claim.get("namespace", self.namespace) != self.namespace:
            # Another app whose name extends ours with a dot: its own schedulers' business.
            return True
        wait = float(claim["until"]) - self.clock.time()
        if wait > 0:
            await self.clock.sleep(wait)
            return False
        try:
            version = await self.kv.put(
                key, self._held(claim), expect_version=item.version, ttl=CLAIM_TTL
            )
        except VersionConflictError:
            return False  # another process took it over first: watch its lease
        _log.warning(
            "schedule %s: the firing at %s claimed by %s was not finished; putting event %s",
            claim["schedule"],
            datetime.fromtimestamp(claim["stamp"] / 1000, UTC),
            claim.get("holder"),
            claim["event"]["id"],
        )
        await self._put(key, version, claim)
        return True
