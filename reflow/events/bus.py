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
import json
import logging
import random
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reflow.backends.protocols import LogEntry
from reflow.clock import Clock
from reflow.errors import EventTooLargeError, InvalidEventError
from reflow.events.delivery import (
    Acks,
    DeliveryWorker,
    Rule,
    encode_stored_record,
    eventbridge_view,
    rule_stream,
    stop_tasks,
)
from reflow.events.dlq import DeadLetters
from reflow.events.model import MAX_EVENT_SIZE, Event, json_size
from reflow.events.retries import LOOK_EVERY, ParkedRetries
from reflow.events.ruleset import RuleSet

if TYPE_CHECKING:
    from reflow.backends import Backend

__all__ = ["DISPATCH_GROUP", "EventBus", "bus_stream", "eventbridge_view", "to_event"]

_log = logging.getLogger("reflow.events")

DISPATCH_GROUP = "dispatch"
MAX_ENTRIES = 10  # PutEvents takes at most ten entries per call
DISPATCH_BATCH = 100  # bus entries one dispatcher read takes


def bus_stream(bus: str) -> str:
    """The stream (and archive) of ``bus``."""
    return f"events.bus.{bus}"


def to_event(entry: Event | Mapping[str, Any], index: int = 0, *, check_size: bool = True) -> Event:
    """Read one put entry: an :class:`Event`, a CloudEvent, an EventBridge event,
    or a PutEvents entry (``Source``, ``DetailType``, ``Detail`` as JSON text).

    Errors name the entry: ``entries[2].source: must be a non-empty string``.
    ``check_size=False``: the caller counts the size of the text it stores
    (an :class:`Event` entry was counted when it was built).
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
            return Event.from_eventbridge(view, check_size=check_size)
        if "detail-type" in entry or "detail" in entry:
            return Event.from_eventbridge(entry, check_size=check_size)
        return Event.from_cloudevent(entry, check_size=check_size)
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
        retry_look_every: float = LOOK_EVERY,
    ) -> None:
        self.backend = backend
        self.clock = clock or backend.clock
        self.lease = lease
        self.retention = retention
        self.concurrency = concurrency
        self.rng = rng or random.Random()
        self.consumer = consumer or f"events-{uuid.uuid4().hex[:12]}"
        self.dead_letters = DeadLetters(backend.kv, backend.log, self.clock)
        # Failed deliveries of every rule wait here for their retry; one waker
        # per process moves them back (looking for other processes' every
        # ``retry_look_every`` real seconds).
        self.retries = ParkedRetries(
            backend.kv, backend.log, clock=self.clock, look_every=retry_look_every
        )
        self.rules: dict[str, Rule] = {}
        self._matchers: dict[str, RuleSet] = {}
        self._workers: list[DeliveryWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._acks: dict[str, Acks] = {}
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
        stamp = datetime.fromtimestamp(now, UTC).isoformat().removesuffix("+00:00") + "Z"
        ids: list[str] = []
        items: list[bytes] = []
        at = b'{"at":' + json.dumps(now).encode() + _EVENT_AT
        for index, entry in enumerate(entries):
            # The size is counted once, below, on the text stored: building
            # the Event does not encode it a second time to count it.
            event = to_event(entry, index, check_size=False)
            document = event.to_cloudevent()
            if event.time is None:
                # Stamped in its stored form: no second Event is built, but
                # the size limit is checked on the stamped event all the same.
                document["time"] = stamp
            try:
                text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise InvalidEventError(
                    f"entries[{index}].data", f"is not JSON-serialisable: {exc}"
                ) from None
            size = json_size(text)
            if size > MAX_EVENT_SIZE:
                error = EventTooLargeError(size, MAX_EVENT_SIZE)
                raise InvalidEventError(f"entries[{index}]", str(error))
            ids.append(event.id)
            # ``at`` first, the event's JSON text last: the dispatcher copies
            # that text into the delivery records as it is.
            items.append(at + text.encode() + b"}")
        # One write for the whole call: durable together, in order.
        await self.backend.log.append_many(bus_stream(bus), items)
        return ids

    # -- running --------------------------------------------------------------

    async def start(self) -> None:
        """Start a dispatcher per bus with rules and a delivery worker per rule."""
        self.loop = asyncio.get_running_loop()
        for bus in self._matchers:
            self._tasks.append(asyncio.create_task(self._dispatch(bus)))
        if self.rules:
            self._tasks.append(asyncio.create_task(self.retries.run()))
        for rule in self.rules.values():
            worker = DeliveryWorker(
                rule,
                self.backend,
                self.dead_letters,
                clock=self.clock,
                # Retries wait out their back-off parked, not held: the lease
                # covers the wait for a delivery slot and the attempt.
                lease=self.lease,
                concurrency=self.concurrency,
                rng=self.rng,
                consumer=self.consumer,
                retries=self.retries,
            )
            await worker.start()
            self._workers.append(worker)

    async def stop(self) -> None:
        """Stop dispatching and delivering; unacknowledged work is redelivered later."""
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)
        for acks in self._acks.values():
            await acks.drain()
        workers, self._workers = self._workers, []
        for worker in workers:
            await worker.stop()

    async def _dispatch(self, bus: str) -> None:
        """Read the bus stream in batches and fan each batch out, reading ahead.

        The next read is started as soon as a batch is in hand, so it goes
        out with the batch's appends (one pipeline on Redis, one turn of the
        writer thread on SQLite) instead of after them: an event put while a
        batch is being fanned out is already on its way in. Batches are still
        fanned out one after the other, in order. A batch's delivery records
        go out as one ``append_many`` per rule stream; its acknowledgement is
        left to ``Acks``, which sends the acks of one event-loop turn
        together, so only the appends stand between two batches.
        """
        stream = bus_stream(bus)
        acks = self._acks[bus] = Acks(self.backend.log, stream, DISPATCH_GROUP)
        trimmed_at = self.clock.monotonic()
        ahead: asyncio.Task[list[LogEntry]] | None = None
        try:
            while True:
                try:
                    if ahead is None:
                        ahead = asyncio.create_task(self._read_bus(stream))
                    entries = await ahead
                    ahead = asyncio.create_task(self._read_bus(stream))
                    if entries:
                        await self._dispatch_batch(bus, entries, acks)
                    if self.clock.monotonic() - trimmed_at > 60.0:
                        trimmed_at = self.clock.monotonic()
                        await self.backend.log.trim(stream, max_age=self.retention)
                except Exception:
                    # A backend hiccup must not end dispatching: what was read
                    # and not acked comes back after its lease. A read ahead
                    # still running is kept: its entries are dispatched next.
                    if ahead is not None and ahead.done():
                        ahead = None
                    _log.exception("bus %s: dispatching failed; retrying in 1 s", bus)
                    await asyncio.sleep(1.0)
        finally:
            if ahead is not None:
                # Entries it read come back after their lease, as any entry
                # read and not dispatched does.
                await _abandon(ahead)

    async def _read_bus(self, stream: str) -> list[LogEntry]:
        return await self.backend.log.read(
            stream,
            DISPATCH_GROUP,
            self.consumer,
            count=DISPATCH_BATCH,
            lease=self.lease,
            block=1.0,
        )

    async def _dispatch_batch(self, bus: str, entries: list[LogEntry], acks: Acks) -> None:
        """Fan one batch out; have each entry acked whose delivery records are all durable."""
        records: list[tuple[str, bytes]] = []
        owners: list[int] = []  # the entry (index) each record comes from
        broken: set[int] = set()
        for index, entry in enumerate(entries):
            try:
                found = self.records(bus, entry.data)
            except Exception as exc:  # an unreadable entry: kept, and logged each time
                _log.error("bus %s: entry %s left for redelivery: %r", bus, entry.id, exc)
                broken.add(index)
                continue
            records.extend(found)
            owners.extend([index] * len(found))
        failed = await self.append_records(records)
        for position in failed:
            broken.add(owners[position])
        acks.send(*(entry.id for index, entry in enumerate(entries) if index not in broken))

    def records(
        self, bus: str, data: bytes, *, only: str | None = None, replay: str | None = None
    ) -> list[tuple[str, bytes]]:
        """The delivery records (``(stream, bytes)``) of one stored bus entry.

        The stored event was validated when it was put, so it is matched in
        its EventBridge view straight from the stored JSON, and its text is
        spliced into the records as it is (no :class:`Event` is rebuilt).
        """
        stored = json.loads(data)
        document = stored["event"]
        names = (
            self._matchers[bus].match(eventbridge_view(document)) if bus in self._matchers else []
        )
        if only is not None:
            names = [name for name in names if name == only]
        if not names:
            return []
        first = float(stored["at"]) if replay is None else self.clock.time()
        text = _stored_event_text(data, document)
        return [
            (
                rule_stream(name),
                encode_stored_record(text, name, attempt=1, first=first, replay=replay),
            )
            for name in names
        ]

    async def append_records(self, records: list[tuple[str, bytes]]) -> set[int]:
        """Append delivery records, one ``append_many`` per rule stream, all at once.

        Return the positions (in ``records``) of those that could not be
        appended (the failure is logged); the rest are durable.
        """
        by_stream = _by_stream(records)
        outcomes: list[object]
        if len(by_stream) == 1:
            # One rule stream (the common case): awaited directly, without the
            # task ``gather`` would wrap it in (a loop turn and a task fewer
            # between the dispatcher's read and its append).
            [(stream, positions)] = by_stream.items()
            try:
                outcomes = [await self.backend.log.append_many(stream, [r for _, r in records])]
            except Exception as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(
                    self.backend.log.append_many(stream, [records[p][1] for p in positions])
                    for stream, positions in by_stream.items()
                ),
                return_exceptions=True,
            )
        failed: set[int] = set()
        for (stream, positions), outcome in zip(by_stream.items(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                _log.error("bus: %d records for %s not stored: %r", len(positions), stream, outcome)
                failed.update(positions)
        return failed

    async def fan_out(
        self, bus: str, data: bytes, *, only: str | None = None, replay: str | None = None
    ) -> int:
        """Append one delivery record per matching rule; return how many were appended."""
        records = self.records(bus, data, only=only, replay=replay)
        await self._append_all(records)
        return len(records)

    async def _append_all(self, records: list[tuple[str, bytes]]) -> None:
        """Append delivery records, raising the first failure."""
        await asyncio.gather(
            *(
                self.backend.log.append_many(stream, [records[p][1] for p in positions])
                for stream, positions in _by_stream(records).items()
            )
        )

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
            records = [
                record
                for entry in batch
                for record in self.records(bus, entry.data, only=rule, replay=name)
            ]
            await self._append_all(records)
            queued += len(records)
            if len(batch) < 500:
                return name, queued
            ms, _, seq = batch[-1].id.partition("-")
            cursor = f"{ms}-{int(seq or 0) + 1}"


async def _abandon(task: asyncio.Task[Any]) -> None:
    """Cancel ``task``, wait for it (cancelling again if need be), drop its outcome."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)
    if not task.cancelled():
        task.exception()  # retrieved: a failed read ahead is not reported as unhandled


def _by_stream(records: list[tuple[str, bytes]]) -> dict[str, list[int]]:
    """Positions of ``records`` grouped by stream, streams in first-seen order."""
    grouped: dict[str, list[int]] = {}
    for position, (stream, _) in enumerate(records):
        grouped.setdefault(stream, []).append(position)
    return grouped


_EVENT_AT = b',"event":'


def _stored_event_text(data: bytes, document: Mapping[str, Any]) -> bytes:
    """The event's JSON text inside a stored bus entry (re-encoded for older layouts)."""
    if data.startswith(b'{"at":') and data.endswith(b"}"):
        at = data.find(_EVENT_AT)
        if at > 0:
            return data[at + len(_EVENT_AT) : -1]
    return json.dumps(document, separators=(",", ":")).encode()
