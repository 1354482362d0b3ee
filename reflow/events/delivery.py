"""Delivering one rule's events to its target: attempts, back-off, dead letters.

Each rule has its own delivery stream (``events.rule.<rule>``), which the
dispatcher fills with one record per matching event, so a slow or failing
target only ever holds up its own rule. A :class:`DeliveryWorker` reads that
stream through a consumer group and, for each record:

1. refuses it to the dead-letter queue if the event is older than the rule's
   ``max_event_age``, or if crashed consumers already used up its attempts
   (a redelivery of the record after a lease ran out counts as an attempt:
   a consumer died while delivering it);
2. calls the target once, in one of the worker's ``concurrency`` delivery
   slots. On success the record is acknowledged. On failure a retry record
   with ``attempt + 1`` and a ``due`` time after an exponential back-off
   with jitter is **parked** — durably, in ``KV``
   (:mod:`reflow.events.retries`) — and only then is the failed record
   acknowledged; after the last attempt the record goes to the dead-letter
   queue instead, again before the ack.

A parked retry is not held by any worker while it waits: the bus's waker
moves it back to the stream when it is due, where it is read and delivered
at once. So however many of a rule's events wait out a back-off,
the worker keeps reading the rule's fresh events. (A record read with a
``due`` time more than ``PARK_AFTER`` ahead — one written before retries
were parked — is parked the same way; a nearer one is waited for.)

No record is acknowledged before its successor (success, parked retry or
dead letter) is durable: a crash at any point leads to a redelivery, never a
loss. Every attempt carries the same event, so the same event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reflow.backends.protocols import Log, LogEntry
from reflow.backends.retention import AckedTrimmer
from reflow.clock import Clock
from reflow.events.model import DEFAULT_ACCOUNT, DEFAULT_REGION, Event
from reflow.events.retries import ParkedRetries
from reflow.events.transform import RuleInput

if TYPE_CHECKING:
    from reflow.backends import Backend
    from reflow.events.dlq import DeadLetters
    from reflow.events.targets import Target

__all__ = [
    "DELIVER_GROUP",
    "PARK_AFTER",
    "Acks",
    "Delivery",
    "DeliveryWorker",
    "RetryPolicy",
    "Rule",
    "decode_record",
    "encode_record",
    "encode_stored_record",
    "eventbridge_view",
    "rule_stream",
    "stop_tasks",
]

_log = logging.getLogger("reflow.events")

DELIVER_GROUP = "deliver"
HELD_PER_SLOT = 8  # records a worker may hold (read, not yet finished) per delivery slot
PARK_AFTER = 1.0  # a record read with a due time further ahead is parked, not waited for


def rule_stream(rule: str) -> str:
    """The delivery stream of ``rule``."""
    return f"events.rule.{rule}"


@dataclass(frozen=True)
class RetryPolicy:
    """How a rule retries: attempts, event age, and the back-off between attempts.

    The wait after failed attempt *n* is drawn uniformly from
    ``[d/2, d]`` with ``d = min(cap, base * 2**(n-1))`` ("equal jitter"):
    exponential, never zero, and spread so that many failing events do not
    retry in lock-step.
    """

    max_attempts: int = 185
    max_event_age: float = 24 * 3600.0
    base: float = 1.0
    cap: float = 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 62))
        return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


@dataclass(frozen=True)
class Rule:
    """A compiled rule of the bus: where its events go and how they are retried."""

    name: str
    pattern: Any
    target: Target
    bus: str = "default"
    input: RuleInput = field(default_factory=RuleInput)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dead_letter: bool = True


class Delivery:
    """One attempt's view of a delivery record, handed to the target.

    The worker hands over the event as the CloudEvents document it read from
    the record; :attr:`event` builds (once) the :class:`Event` from it, for the
    targets that need one (a bus forward, a dead letter). Targets that only
    need the id read :attr:`event_id`, which builds nothing.
    """

    __slots__ = ("_document", "_event", "attempt", "first", "replay", "rule")

    def __init__(
        self,
        event: Event | Mapping[str, Any],
        rule: str,
        attempt: int,
        first: float,  # when the bus accepted the event (seconds since the epoch)
        replay: str | None = None,
    ) -> None:
        self._event = event if isinstance(event, Event) else None
        self._document = None if isinstance(event, Event) else event
        self.rule = rule
        self.attempt = attempt
        self.first = first
        self.replay = replay

    @property
    def event(self) -> Event:
        """The event, rebuilt from the stored document on first use (not counted again)."""
        if self._event is None:
            assert self._document is not None
            self._event = Event.from_cloudevent(self._document, check_size=False)
        return self._event

    @property
    def event_id(self) -> str:
        """The event's id."""
        if self._event is not None:
            return self._event.id
        assert self._document is not None
        return str(self._document["id"])

    def __repr__(self) -> str:
        return (
            f"Delivery(event_id={self.event_id!r}, rule={self.rule!r}, "
            f"attempt={self.attempt}, first={self.first}, replay={self.replay!r})"
        )


def encode_record(
    event: Event | Mapping[str, Any],
    rule: str,
    *,
    attempt: int,
    first: float,
    due: float = 0.0,
    replay: str | None = None,
    error: dict[str, str] | None = None,
) -> bytes:
    """The bytes of a delivery record (``event`` an Event or its CloudEvents document)."""
    record: dict[str, Any] = {
        "event": event.to_cloudevent() if isinstance(event, Event) else event,
        "rule": rule,
        "attempt": attempt,
        "first": first,
        "due": due,
    }
    if replay is not None:
        record["replay"] = replay
    if error is not None:
        record["error"] = error
    return json.dumps(record, separators=(",", ":")).encode()


def encode_stored_record(
    event_json: bytes,
    rule: str,
    *,
    attempt: int,
    first: float,
    replay: str | None = None,
) -> bytes:
    """:func:`encode_record` for an event already in CloudEvents JSON (as the bus stores it).

    The dispatcher splices the stored text in rather than rebuilding and
    re-encoding the event: the bytes decode to the same record.
    """
    head: dict[str, Any] = {"rule": rule, "attempt": attempt, "first": first, "due": 0.0}
    if replay is not None:
        head["replay"] = replay
    text = json.dumps(head, separators=(",", ":"))
    return text[:-1].encode() + b',"event":' + event_json + b"}"


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished.

    Cancelling again until a task is done, because on Python 3.11 a
    cancellation that lands while ``asyncio.wait_for`` is finishing its inner
    wait can be swallowed (a backend's blocking read uses it), which would
    leave the task running and ``stop()`` waiting forever.
    """
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Acks:
    """Acknowledgements of one stream and group, gathered over an event-loop turn.

    Every record a worker finishes would otherwise cost its own ack call (a
    job in the SQLite writer's transaction, a script call on Redis). Ids
    handed to :meth:`ack` during one turn of the loop go out together at its
    end, as one ``Log.ack``; each caller returns once that call has returned,
    or raises what it raised, so an ack is still awaited before its record
    counts as done.
    """

    def __init__(
        self, log: Log, stream: str, group: str, *, trimmer: AckedTrimmer | None = None
    ) -> None:
        self.log = log
        self.stream = stream
        self.group = group
        self.trimmer = trimmer  # told of every acknowledgement, to trim what is done with
        self._ids: list[str] = []
        self._sent: asyncio.Future[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def ack(self, *ids: str) -> None:
        """Acknowledge ``ids`` with the others of this turn; return once acknowledged."""
        if not ids:
            return
        sent = self._queue(ids)
        # Shielded: a caller cancelled while waiting must not cancel the ack
        # the others wait for.
        await asyncio.shield(sent)

    def send(self, *ids: str) -> None:
        """Acknowledge ``ids`` with the others of this turn, without waiting.

        A failure is logged; the entries then come back after their lease.
        """
        if ids:
            self._queue(ids).add_done_callback(self._report)

    def _queue(self, ids: tuple[str, ...]) -> asyncio.Future[None]:
        if self._sent is None:
            loop = asyncio.get_running_loop()
            self._sent = loop.create_future()
            loop.call_soon(self._flush)
        self._ids.extend(ids)
        return self._sent

    def _report(self, sent: asyncio.Future[None]) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            _log.error(
                "acking entries of %s (group %s) failed; they come back after their lease: %r",
                self.stream,
                self.group,
                sent.exception(),
            )

    def _flush(self) -> None:
        ids, sent = self._ids, self._sent
        self._ids, self._sent = [], None
        if sent is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(ids, sent))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send(self, ids: list[str], sent: asyncio.Future[None]) -> None:
        try:
            await self.log.ack(self.stream, self.group, ids)
        except asyncio.CancelledError:
            sent.cancel()
            raise
        except Exception as exc:  # every waiter hears of it; the entries come back later
            sent.set_exception(exc)
        else:
            if self.trimmer is not None:
                self.trimmer.acked(self.stream, self.group, ids)
            sent.set_result(None)

    async def drain(self) -> None:
        """Wait for the acks already handed out (at stop)."""
        if self._sent is not None:
            self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)


def decode_record(data: bytes) -> dict[str, Any]:
    """A delivery record's fields, with ``event`` turned back into an :class:`Event`.

    Its size is not counted again: the bus counted it when the event was put.
    """
    record: dict[str, Any] = json.loads(data)
    record["event"] = Event.from_cloudevent(record["event"], check_size=False)
    return record


def error_of(exc: BaseException) -> dict[str, str]:
    """The kept form of a failure: its class name and message."""
    kind = getattr(exc, "error_type", None) or type(exc).__name__
    message = getattr(exc, "error_message", None) or str(exc)
    return {"type": str(kind), "message": str(message)}


class _Slots:
    """How many more records a worker may hold; a read takes every free one at once.

    A counter, not an ``asyncio.Semaphore`` acquired once per slot: with 128
    slots and a record or two per read, taking and giving back the slots one
    by one cost ~150 µs of CPU per read on the benchmark machine, spent
    between the read's return and the first delivery's start.
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self._freed = asyncio.Event()

    async def take_all(self) -> int:
        """Wait until a slot is free; take every free slot and return how many."""
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()
        taken, self.free = self.free, 0
        return taken

    def give(self, count: int = 1) -> None:
        """Give ``count`` slots back."""
        if count > 0:
            self.free += count
            self._freed.set()

    def given(self, _: object) -> None:
        """Give one slot back (a done callback of the task that held it)."""
        self.give(1)


class DeliveryWorker:
    """Consumes one rule's delivery stream and drives each record to an outcome."""

    def __init__(
        self,
        rule: Rule,
        backend: Backend,
        dead_letters: DeadLetters,
        *,
        clock: Clock,
        lease: float,
        concurrency: int = 16,
        rng: random.Random | None = None,
        consumer: str | None = None,
        retries: ParkedRetries | None = None,
        keep_acked: float = 600.0,
        trim_every: float = 60.0,
    ) -> None:
        self.rule = rule
        self.log = backend.log
        self.dead_letters = dead_letters
        self.clock = clock
        self.lease = lease
        self.concurrency = concurrency
        # Records held at once (read and not yet finished); only
        # `concurrency` of them call the target at a time. Retries waiting
        # out a back-off are parked, not held.
        self.held = concurrency * HELD_PER_SLOT
        self._delivering = asyncio.Semaphore(concurrency)
        self.rng = rng or random.Random()
        self.consumer = consumer or f"events-{uuid.uuid4().hex[:12]}"
        self.stream = rule_stream(rule.name)
        # Acknowledged records stay in the stream: trimmed now and then, up to
        # what is provably acknowledged, ``keep_acked`` s older still.
        self.trimmer = AckedTrimmer(self.log, clock, keep=keep_acked, every=trim_every)
        self._acks = Acks(self.log, self.stream, DELIVER_GROUP, trimmer=self.trimmer)
        # Where failed deliveries wait for their retry. A bus shares one (and
        # runs its waker) across its rules; a worker on its own runs its own.
        self._own_retries = retries is None
        self.retries = retries or ParkedRetries(backend.kv, self.log, clock=clock)
        self._reader: asyncio.Task[None] | None = None
        self._waker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start reading the rule's stream (and moving parked retries back, if ours)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
            if self._own_retries:
                self._waker = asyncio.create_task(self.retries.run())

    async def stop(self) -> None:
        """Stop reading; records in flight stay unacknowledged and come back later."""
        tasks = [t for t in (self._reader, self._waker, *self._running) if t is not None]
        self._reader = self._waker = None
        await stop_tasks(tasks)
        self._running.clear()
        await self._acks.drain()

    async def _read(self) -> None:
        free = _Slots(self.held)
        while True:
            # Take as many records as there are free slots in one read.
            taken = await free.take_all()
            try:
                entries = await self.log.read(
                    self.stream,
                    DELIVER_GROUP,
                    self.consumer,
                    count=taken,
                    lease=self.lease,
                    block=1.0,
                )
            except Exception:
                # A backend hiccup must not end delivering: records read and
                # not acked come back after their lease.
                free.give(taken)
                _log.exception(
                    "rule %s: reading deliveries failed; retrying in 1 s", self.rule.name
                )
                await asyncio.sleep(1.0)
                continue
            except BaseException:
                free.give(taken)
                raise
            free.give(taken - len(entries))
            for entry in entries:
                task = asyncio.create_task(self._guarded(entry))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                task.add_done_callback(free.given)
            if self.trimmer.due():
                await self.trim()

    async def trim(self) -> int:
        """Drop acknowledged records ``keep_acked`` s older than any still needed."""
        try:
            return await self.trimmer.trim(self.stream, [DELIVER_GROUP])
        except Exception:  # a backend hiccup: the next trim catches up
            _log.exception("rule %s: trimming its delivery stream failed", self.rule.name)
            return 0

    async def _guarded(self, entry: LogEntry) -> None:
        try:
            await self.handle(entry)
        except Exception:
            # The backend failed while recording an outcome: the record stays
            # unacknowledged and comes back when its lease runs out.
            _log.exception("delivery %s of rule %s left for redelivery", entry.id, self.rule.name)

    async def handle(self, entry: LogEntry) -> None:
        """Drive one delivery record to success, a retry record or a dead letter, then ack.

        The record is decoded once, and its event is used as the CloudEvents
        document it holds (validated when it was put): the target's view is
        read straight from it, and an :class:`Event` is built only if a target
        or a dead letter asks for one.
        """
        record = json.loads(entry.data)
        document: dict[str, Any] = record["event"]
        policy = self.rule.retry
        attempt = int(record["attempt"]) + entry.deliveries - 1
        first = float(record["first"])
        replay = record.get("replay")
        delivery = Delivery(document, self.rule.name, attempt, first, replay)
        due = float(record.get("due", 0.0))
        wait = due - self.clock.time()
        if wait > PARK_AFTER:
            # Written before retries were parked: park it rather than hold it.
            # This read counts as no attempt, so the parked one keeps its number.
            kept = encode_record(
                document,
                self.rule.name,
                attempt=attempt,
                first=first,
                due=due,
                replay=replay,
                error=record.get("error"),
            )
            await self.retries.park(self.stream, kept, due)
            await self._acks.ack(entry.id)
            return
        if wait > 0:
            await self.clock.sleep(wait)
        age = self.clock.time() - first
        if age > policy.max_event_age:
            error = {
                "type": "EventAgeExceeded",
                "message": f"the event is {age:.0f} s old; the rule allows "
                f"{policy.max_event_age:g} s",
            }
            await self._dead(delivery, error, attempt - 1)
        elif attempt > policy.max_attempts:
            error = record.get("error") or {
                "type": "RetriesExhausted",
                "message": f"delivered {attempt - 1} times without an outcome",
            }
            await self._dead(delivery, error, attempt - 1)
        else:
            try:
                view = eventbridge_view(document)
                if replay is not None:
                    view["replay-name"] = replay
                payload = self.rule.input.apply(view, rule=self.rule.name)
                async with self._delivering:
                    await self.rule.target.deliver(payload, delivery)
            except Exception as exc:  # every failure is an attempt; none is lost
                error = error_of(exc)
                due = self.clock.time() + policy.backoff(attempt, self.rng)
                if attempt < policy.max_attempts and due - first <= policy.max_event_age:
                    retry = encode_record(
                        document,
                        self.rule.name,
                        attempt=attempt + 1,
                        first=first,
                        due=due,
                        replay=replay,
                        error=error,
                    )
                    await self.retries.park(self.stream, retry, due)
                else:
                    await self._dead(delivery, error, attempt)
        # Last, and together with the other records finished this turn.
        await self._acks.ack(entry.id)

    async def _dead(self, delivery: Delivery, error: dict[str, str], attempts: int) -> None:
        if not self.rule.dead_letter:
            # The rule asked for no dead-letter queue: EventBridge drops such
            # events; we at least say so.
            _log.warning(
                "rule %s dropped event %s after %d attempts: %s",
                self.rule.name,
                delivery.event_id,
                attempts,
                error["message"],
            )
            return
        await self.dead_letters.add(
            self.rule.name,
            delivery.event,
            error=error,
            attempts=attempts,
            first=delivery.first,
            replay=delivery.replay,
        )


# CloudEvents attributes that are not extensions (everything else in the
# stored document is one).
_ATTRIBUTES = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "dataschema",
        "data",
    }
)


def eventbridge_view(document: Mapping[str, Any]) -> dict[str, Any]:
    """The EventBridge view of a stored CloudEvent, as ``Event.to_eventbridge`` gives it.

    For documents the bus stored (``Event.to_cloudevent`` of a validated
    event), so nothing is validated again; a unit test holds it to
    ``Event.from_cloudevent(document).to_eventbridge()``.
    """
    extensions = {k: v for k, v in document.items() if k not in _ATTRIBUTES}
    view: dict[str, Any] = {
        "version": "0",
        "id": document["id"],
        "detail-type": document["type"],
        "source": document["source"],
        "account": extensions.pop("account", DEFAULT_ACCOUNT),
        "region": extensions.pop("region", DEFAULT_REGION),
    }
    if document.get("time") is not None:
        view["time"] = document["time"]
    resources = extensions.pop("resources", [])
    view["resources"] = list(resources) if isinstance(resources, list | tuple) else [resources]
    data = document.get("data")
    view["detail"] = {} if data is None else data
    for name in ("subject", "datacontenttype", "dataschema"):
        if document.get(name) is not None:
            view[name] = document[name]
    view.update(extensions)
    return view
