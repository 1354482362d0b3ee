"""The event bus: named buses, durable puts, and the dispatcher that fans out to rules.

Layout in the ``Log`` primitive:

* ``events.bus.<bus>`` — every event put on the bus, in order. ``put``
  returns the event ids only after every append returned, i.e. once the
  events are durable: that is the sender's acknowledgement. The same stream
  is the **archive**: it is trimmed to the bus's ``retention`` and replays
  read from it by time range (entry ids begin with their append time in ms).
* ``events.rule.<rule>`` — one delivery record per (rule, matching event),
  consumed by that rule's :class:`~reflow.events.delivery.DeliveryWorker`.

The **dispatcher** of a bus reads the bus stream through the consumer group
``dispatch``, matches each event's EventBridge view against the bus's
:class:`~reflow.events.ruleset.RuleSet` (one per bus), appends a delivery
record to each matching rule's stream and only then acknowledges the bus
entry. A dispatcher that dies mid-way leaves the entry unacknowledged; it
comes back when its lease runs out and is fanned out again — a duplicate
delivery with the same event id, never a loss.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reflow.clock import Clock
from reflow.errors import EventTooLargeError, InvalidEventError
from reflow.events.delivery import DeliveryWorker, Rule, encode_record, rule_stream, stop_tasks
from reflow.events.dlq import DeadLetters
from reflow.events.model import Event
from reflow.events.ruleset import RuleSet

if TYPE_CHECKING:
    from reflow.backends import Backend

__all__ = ["DISPATCH_GROUP", "EventBus", "bus_stream", "to_event"]

_log = logging.getLogger("reflow.events")

DISPATCH_GROUP = "dispatch"
MAX_ENTRIES = 10  # PutEvents takes at most ten entries per call


def bus_stream(bus: str) -> str:
    """The stream (and archive) of ``bus``."""
    return f"events.bus.{bus}"


def to_event(entry: Event | Mapping[str, Any], index: int = 0) -> Event:
    """Read one put entry: an :class:`Event`, a CloudEvent, an EventBridge event,
    or a PutEvents entry (``Source``, ``DetailType``, ``Detail`` as JSON text).

    Errors name the entry: ``entries[2].source: must be a non-empty string``.
    """
    if isinstance(entry, Event):
        return entry
    where = f"entries[{index}]"
    if not isinstance(entry, Mapping):
        raise InvalidEventError(where, "must be an Event or a JSON object")
    try:
        if "DetailType" in entry or "Source" in entry:
            detail = entry.get("Detail", "{}")
            try:
                data = json.loads(detail) if isinstance(detail, str) else detail
            except json.JSONDecodeError as exc:
                raise InvalidEventError("Detail", f"is not JSON: {exc.msg}") from None
            view: dict[str, Any] = {
                "source": entry.get("Source"),
                "detail-type": entry.get("DetailType"),
                "detail": data,
                "resources": entry.get("Resources", []),
            }
            if entry.get("Time") is not None:
                view["time"] = entry["Time"]
            return Event.from_eventbridge(view)
        if "detail-type" in entry or "detail" in entry:
            return Event.from_eventbridge(entry)
        return Event.from_cloudevent(entry)
    except InvalidEventError as exc:
        raise InvalidEventError(
            f"{where}.{exc.field}" if exc.field else where, exc.problem
        ) from None


class EventBus:
    """Named buses over one backend: put, dispatch, deliver, dead-letter, replay."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        lease: float = 120.0,
        retention: float = 24 * 3600.0,
        concurrency: int = 16,
        rng: random.Random | None = None,
        consumer: str | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock or backend.clock
        self.lease = lease
        self.retention = retention
        self.concurrency = concurrency
        self.rng = rng or random.Random()
        self.consumer = consumer or f"events-{uuid.uuid4().hex[:12]}"
        self.dead_letters = DeadLetters(backend.kv, backend.log, self.clock)
        self.rules: dict[str, Rule] = {}
        self._matchers: dict[str, RuleSet] = {}
        self._workers: list[DeliveryWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- rules ----------------------------------------------------------------

    def add_rule(self, rule: Rule) -> None:
        """Register a rule (before :meth:`start`)."""
        matcher = self._matchers.setdefault(rule.bus, RuleSet())
        matcher.add(rule.name, rule.pattern)
        self.rules[rule.name] = rule

    def match(self, event: Event, bus: str = "default") -> list[str]:
        """The names of the rules on ``bus`` that ``event`` matches."""
        matcher = self._matchers.get(bus)
        return matcher.match(event.to_eventbridge()) if matcher is not None else []

    # -- putting --------------------------------------------------------------

    async def put(
        self, entries: Iterable[Event | Mapping[str, Any]], *, bus: str = "default"
    ) -> list[str]:
        """Validate and append events to ``bus``; return their ids once durable.

        Every entry is validated before any is appended, so a bad entry
        refuses the whole call and nothing is half-put. An event without a
        ``time`` gets the bus's current time, as EventBridge does.
        """
        now = self.clock.time()
        stamped = []
        for index, entry in enumerate(entries):
            event = to_event(entry, index)
            if event.time is None:
                try:
                    event = dataclasses.replace(event, time=datetime.fromtimestamp(now, UTC))
                except EventTooLargeError as exc:
                    raise InvalidEventError(f"entries[{index}]", str(exc)) from None
            stamped.append(event)
        stream = bus_stream(bus)
        for event in stamped:
            data = json.dumps({"event": event.to_cloudevent(), "at": now}, separators=(",", ":"))
            await self.backend.log.append(stream, data.encode())
        return [event.id for event in stamped]

    # -- running --------------------------------------------------------------

    async def start(self) -> None:
        """Start a dispatcher per bus with rules and a delivery worker per rule."""
        self.loop = asyncio.get_running_loop()
        for bus in self._matchers:
            self._tasks.append(asyncio.create_task(self._dispatch(bus)))
        for rule in self.rules.values():
            worker = DeliveryWorker(
                rule,
                self.backend,
                self.dead_letters,
                clock=self.clock,
                # A retry record is held while its back-off runs out, so the
                # lease covers the longest back-off as well as the attempt.
                lease=self.lease + rule.retry.cap,
                concurrency=self.concurrency,
                rng=self.rng,
                consumer=self.consumer,
            )
            await worker.start()
            self._workers.append(worker)

    async def stop(self) -> None:
        """Stop dispatching and delivering; unacknowledged work is redelivered later."""
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)
        workers, self._workers = self._workers, []
        for worker in workers:
            await worker.stop()

    async def _dispatch(self, bus: str) -> None:
        stream = bus_stream(bus)
        trimmed_at = self.clock.monotonic()
        while True:
            try:
                await self._dispatch_once(bus, stream)
                if self.clock.monotonic() - trimmed_at > 60.0:
                    trimmed_at = self.clock.monotonic()
                    await self.backend.log.trim(stream, max_age=self.retention)
            except Exception:
                # A backend hiccup must not end dispatching: what was read and
                # not acked comes back after its lease.
                _log.exception("bus %s: dispatching failed; retrying in 1 s", bus)
                await asyncio.sleep(1.0)

    async def _dispatch_once(self, bus: str, stream: str) -> None:
        entries = await self.backend.log.read(
            stream, DISPATCH_GROUP, self.consumer, count=50, lease=self.lease, block=1.0
        )
        if not entries:
            return
        # One batch fans out concurrently (the engines group the writes
        # of one event-loop turn), then its entries are acked together,
        # each only if its own fan-out is durable.
        outcomes = await asyncio.gather(
            *(self.fan_out(bus, entry.data) for entry in entries), return_exceptions=True
        )
        done = []
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                _log.error("bus %s: entry %s left for redelivery: %r", bus, entry.id, outcome)
            else:
                done.append(entry.id)
        if done:
            await self.backend.log.ack(stream, DISPATCH_GROUP, done)

    async def fan_out(
        self, bus: str, data: bytes, *, only: str | None = None, replay: str | None = None
    ) -> int:
        """Append one delivery record per matching rule; return how many were appended."""
        stored = json.loads(data)
        event = Event.from_cloudevent(stored["event"])
        first = float(stored["at"]) if replay is None else self.clock.time()
        names = [name for name in self.match(event, bus) if only is None or name == only]
        await asyncio.gather(
            *(
                self.backend.log.append(
                    rule_stream(name),
                    encode_record(event, name, attempt=1, first=first, replay=replay),
                )
                for name in names
            )
        )
        return len(names)

    # -- archive and replay -----------------------------------------------------

    async def replay(
        self,
        bus: str,
        start: float,
        end: float,
        *,
        rule: str | None = None,
        name: str | None = None,
    ) -> tuple[str, int]:
        """Deliver again the archived events put on ``bus`` between ``start`` and ``end``.

        Times are seconds since the epoch. Deliveries carry ``replay-name``
        in the event the target sees. Return the replay's name and how many
        deliveries were queued.
        """
        name = name or f"replay-{uuid.uuid4().hex[:8]}"
        stream = bus_stream(bus)
        cursor, last = str(int(start * 1000)), str(int(end * 1000))
        queued = 0
        while True:
            batch = await self.backend.log.range(stream, start=cursor, end=last, count=500)
            for entry in batch:
                queued += await self.fan_out(bus, entry.data, only=rule, replay=name)
            if len(batch) < 500:
                return name, queued
            ms, _, seq = batch[-1].id.partition("-")
            cursor = f"{ms}-{int(seq or 0) + 1}"
