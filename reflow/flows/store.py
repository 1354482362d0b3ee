"""Where durable executions live in the backend's ``KV``, and how a transition is saved.

Key layout (all under ``flows/``):

* ``flows/x/NAME`` — the execution record (JSON): status, the value-only
  cursor (state, raw input, variables, retry attempts), what the execution
  waits for, output or error, times, the transition counter ``seq``.
* ``flows/h/NAME/FIRST`` — a chunk of history events, FIRST the index of its
  first; the newest events (fewer than ``FLUSH_EVENTS``, at most about
  ``TAIL_BYTES``) ride in the record.

Records and events are stored compactly, as JSON arrays (see
:meth:`ExecutionRecord.to_json`): a SQLite row stays within its B-tree page up
to about a kilobyte, and a record that spills onto an overflow page costs a
second page write on every transition. Records in the older object form
(``{"record": …, "tail": …}``, events as objects) still read back.
* ``flows/t/DUE_MS/NAME/KIND`` — a durable timer (a Wait, a retry back-off,
  a task token's timeout or heartbeat, the execution's ``TimeoutSeconds``,
  a ``.sync`` child that ended and wakes its parent).
* ``flows/c/NAME/…`` — the records of a Parallel or Map state's children
  while the state runs (see :mod:`reflow.flows.iterations`).
* ``flows/k/TOKEN`` — which execution a ``.waitForTaskToken`` token belongs to.

Every transition is one atomic write: the record (with its new history
events) put at the version it was read at — a compare-and-set, so a worker
that lost the execution to another, or to a ``stop``, cannot overwrite it —
or, when a history chunk is full or timers or tokens come with it, one
``KV.transact`` of them all. A crash before the transaction loses the
transition's work, which is simply done again; a crash after it loses
nothing. Transitions that change nothing but the record (Pass, Choice, …)
may be written several at once (see :mod:`reflow.flows.writebehind`): the
newest record with every history chunk the ones before it filled, in that
same single transaction.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reflow.backends import KV, Item, Operation, Put
from reflow.errors import FlowError, TransactionConflictError, VersionConflictError

__all__ = [
    "ExecutionRecord",
    "execution_arn",
    "ExecutionStore",
    "FencedError",
    "InvalidExecutionRequestError",
    "PreparedSave",
    "Timer",
    "check_name",
    "record_key",
]

RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED = (
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "ABORTED",
)
STATUSES = (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED)

_RECORDS, _HISTORY, _TIMERS, _TOKENS = "flows/x/", "flows/h/", "flows/t/", "flows/k/"
FLUSH_EVENTS = 16  # history events kept in the record before they move to a chunk
TAIL_BYTES = 512  # ... or fewer, once their encoding passes this many bytes
_ACCOUNT = "arn:aws:states:local:000000000000"
# Step Functions allows 1-80 characters for an execution name; the key layout needs no "/".
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
# One encoder, made once: json.dumps with non-default separators builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_FORMAT = 2  # the first element of a stored record (the array form)
# Record fields fixed once the execution is created (encoded once per loaded record),
# then the ones a transition may change, in their stored order: append, never reorder.
_FIXED = ("name", "flow", "id", "input", "start_time")
_CHANGING = (
    "state", "state_input", "variables", "attempts", "status", "output", "error", "cause",
    "stop_time", "deadline", "seq", "visit", "entered", "entered_at", "wait",
    "redrive_count", "events", "parent",
)  # fmt: skip


_changing = operator.attrgetter(*_CHANGING)  # a record's changing fields, as a tuple


def execution_arn(flow: str, name: str) -> str:
    """The execution's id, shaped like a Step Functions execution ARN."""
    return f"{_ACCOUNT}:execution:{flow}:{name}"


class InvalidExecutionRequestError(FlowError):
    """A request about an execution is malformed: ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class FencedError(Exception):
    """The record changed under this worker (another worker, a stop, a callback)."""


def check_name(name: str, field: str = "name") -> str:
    """``name`` if it is a usable execution name, else :class:`InvalidExecutionRequestError`."""
    if not _NAME.match(name):
        raise InvalidExecutionRequestError(
            field, f"{name!r} must be 1-80 characters of letters, digits and _ . : -"
        )
    return name


@dataclass
class ExecutionRecord:
    """Everything needed to resume an execution, as plain JSON values.

    ``wait`` says what a RUNNING execution waits for: None (runnable now),
    ``{"kind": "timer", "at": T, "then": "outcome"|"enter"}`` (a Wait state,
    or a retry back-off that re-enters the state), ``{"kind": "token", …}``
    (a callback task) or ``{"kind": "outcome", …}`` (a callback's answer,
    runnable now). ``entered`` is whether the current state's Entered event
    is already in the history; ``visit`` is the ``seq`` at which the current
    state was entered (part of each task's idempotency key). ``parent`` names
    the execution waiting for this one (a ``startExecution.sync`` task): the
    save that ends this one wakes it (see :meth:`ExecutionStore.prepare`).
    """

    name: str
    flow: str
    id: str
    input: Any
    state: str
    state_input: Any
    variables: dict[str, Any] = field(default_factory=dict)
    attempts: list[int] = field(default_factory=list)
    status: str = RUNNING
    output: Any = None
    error: str | None = None
    cause: str | None = None
    start_time: float = 0.0
    stop_time: float | None = None
    deadline: float | None = None
    seq: int = 0
    visit: int = 0
    entered: bool = False
    entered_at: float = 0.0
    wait: dict[str, Any] | None = None
    redrive_count: int = 0
    events: int = 0
    parent: str | None = None
    # The newest history events not yet moved to a chunk (see save): ``tail_count``
    # events, JSON-encoded and joined by commas (``b""`` when there are none).
    tail: bytes = field(default=b"", repr=False)
    tail_count: int = field(default=0, repr=False)
    # The fields in _FIXED, encoded (without the closing brace) on the first save.
    _fixed: bytes = field(default=b"", init=False, repr=False, compare=False)

    def to_json(self) -> bytes:
        """The record as stored: ``[2, name, flow, id, input, start_time, [changing
        fields], [tail events]]``, ``id`` null when it is the usual execution ARN."""
        if not self._fixed:
            id = None if self.id == execution_arn(self.flow, self.name) else self.id
            fixed = [_FORMAT, self.name, self.flow, id, self.input, self.start_time]
            self._fixed = _ENCODE(fixed).encode()[:-1]
        changing = _ENCODE(_changing(self)).encode()
        return b"".join((self._fixed, b",", changing, b",[", self.tail, b"]]"))

    @classmethod
    def from_json(cls, data: bytes) -> ExecutionRecord:
        """A record read back (either stored form)."""
        stored = json.loads(data)
        if isinstance(stored, dict):  # the older object form
            record = cls(**stored["record"])
            tail = stored["tail"]
        else:
            _, name, flow, id, input, start_time, changing, tail = stored
            record = cls(
                name=name,
                flow=flow,
                id=execution_arn(flow, name) if id is None else id,
                input=input,
                start_time=start_time,
                # A record saved before a field was appended has fewer: defaults apply.
                **dict(zip(_CHANGING[: len(changing)], changing, strict=True)),
            )
        if tail:
            record.tail, record.tail_count = _ENCODE(tail)[1:-1].encode(), len(tail)
        return record

    def summary(self) -> dict[str, Any]:
        """What ``list`` shows of an execution."""
        return {
            "name": self.name,
            "flow": self.flow,
            "status": self.status,
            "start_time": self.start_time,
            "stop_time": self.stop_time,
        }

    def describe(self) -> dict[str, Any]:
        """What ``describe`` shows: the summary plus input, output, error and position."""
        return {
            **self.summary(),
            "id": self.id,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "cause": self.cause,
            "state": self.state,
            "waiting_for": (self.wait or {}).get("kind") if self.status == RUNNING else None,
            "redrive_count": self.redrive_count,
            "transitions": self.seq,
        }


@dataclass(frozen=True)
class PreparedSave:
    """A transition ready to write: the record's key name, its ``seq`` and bytes, and
    what goes with it (full history chunks, timers, task tokens)."""

    name: str
    seq: int
    value: bytes
    chunks: tuple[Put, ...]
    timers: tuple[str, ...]
    tokens: tuple[str, ...]

    def then(self, later: PreparedSave) -> PreparedSave:
        """One save standing for this one and ``later``, prepared after it from the same
        record: ``later``'s record with the chunks, timers and tokens of both.

        ``later``'s history tail counts on this one's chunks being stored, so the
        two can only be written together (or this one first).
        """
        return PreparedSave(
            later.name,
            later.seq,
            later.value,
            self.chunks + later.chunks,
            self.timers + later.timers,
            self.tokens + later.tokens,
        )


@dataclass(frozen=True)
class Timer:
    """A due timer read back: which execution, what kind, its key and version."""

    due: float
    name: str
    kind: str
    key: str
    version: int


def timer_key(due: float, name: str, kind: str) -> str:
    """The key of a timer; keys sort by due time."""
    # Rounded up: a timer read back as due must never be earlier than what it wakes.
    return f"{_TIMERS}{math.ceil(due * 1000):015d}/{name}/{kind}"


def record_key(name: str) -> str:
    """The key of execution ``name``'s record."""
    return _RECORDS + name


def token_key(token: str) -> str:
    """The key mapping a task token to its execution."""
    return f"{_TOKENS}{token}"


class ExecutionStore:
    """Reads and writes execution records, history chunks, timers and tokens."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        # Told the earliest due time of the timers each write stores (the service's
        # timer loop wakes for it rather than at its next poll).
        self.on_timer: Callable[[float], None] | None = None

    def noted(self, timers: Sequence[str]) -> None:
        """Tell :attr:`on_timer` about ``timers`` (keys) just stored."""
        if timers and self.on_timer is not None:
            self.on_timer(min(_due_of(key) for key in timers))

    async def put_timer(self, key: str) -> None:
        """Store the timer ``key`` on its own."""
        await self.kv.put(key, b"")
        self.noted([key])

    async def load(self, name: str) -> tuple[ExecutionRecord, int] | None:
        """The record and its version, or None."""
        item = await self.kv.get(_RECORDS + name)
        if item is None:
            return None
        return ExecutionRecord.from_json(item.value), item.version

    async def create(
        self, record: ExecutionRecord, events: Sequence[Any], timers: Sequence[str]
    ) -> bool:
        """Store a new record with its first events; False if the name is taken."""
        try:
            await self.save(record, 0, events, timers)
        except FencedError:
            return False
        return True

    def prepare(
        self,
        record: ExecutionRecord,
        events: Sequence[Any],
        timers: Sequence[str] = (),
        tokens: Sequence[str] = (),
        *,
        encode: bool = True,
    ) -> PreparedSave:
        """Encode ``record`` with this transition's events, timers and tokens.

        ``events`` are as :meth:`History.stored` gives them (or event objects:
        ``{"type", "timestamp", "details"}``). With ``encode=False`` the record
        itself is left unencoded (``value`` is empty): for a save that is merged
        into a later one (see :mod:`reflow.flows.writebehind`), whose writer
        encodes the record then.

        The record's history counters move on at once: :meth:`write` the
        result, or drop the record (a fenced transition is never retried from
        the same object).
        """
        # The newest events ride in the record itself, so most transitions are one
        # compare-and-set put (several times cheaper than a transaction); every
        # FLUSH_EVENTS they move to a chunk keyed by the index of their first event.
        if events:
            encoded = _ENCODE(events if isinstance(events, list) else list(events))
            fresh = encoded[1:-1].encode()
            tail = record.tail + b"," + fresh if record.tail else fresh
        else:
            tail = record.tail
        count = record.tail_count + len(events)
        record.events += len(events)
        chunks: tuple[Put, ...] = ()
        if count >= FLUSH_EVENTS or len(tail) > TAIL_BYTES:
            first = record.events - count
            chunks = (Put(f"{_HISTORY}{record.name}/{first:010d}", b"[" + tail + b"]"),)
            tail, count = b"", 0
        record.tail, record.tail_count = tail, count
        if record.parent is not None and record.status != RUNNING:
            # The save that ends a child wakes its waiting parent in the same atomic write:
            # a due timer, fired by whichever service polls next, even if this process
            # dies before it enqueues the parent itself.
            due = record.stop_time if record.stop_time is not None else 0.0
            timers = (*timers, timer_key(due, record.parent, "child"))
        value = record.to_json() if encode else b""
        return PreparedSave(record.name, record.seq, value, chunks, tuple(timers), tuple(tokens))

    async def write(self, prepared: PreparedSave, version: int) -> int:
        """Write a prepared save if the record is still at ``version`` (0: new), all
        or nothing; return the new version, or raise :class:`FencedError`."""
        key = _RECORDS + prepared.name
        try:
            if not prepared.chunks and not prepared.timers and not prepared.tokens:
                return await self.kv.put(key, prepared.value, expect_version=version)
            operations: list[Operation] = [Put(key, prepared.value, expect_version=version)]
            operations.extend(prepared.chunks)
            operations.extend(Put(timer, b"") for timer in prepared.timers)
            operations.extend(
                Put(token_key(token), prepared.name.encode()) for token in prepared.tokens
            )
            version = (await self.kv.transact(operations))[0]
        except (TransactionConflictError, VersionConflictError) as error:
            raise FencedError(prepared.name) from error
        self.noted(prepared.timers)
        return version

    async def save(
        self,
        record: ExecutionRecord,
        version: int,
        events: Sequence[Any],
        timers: Sequence[str] = (),
        tokens: Sequence[str] = (),
    ) -> int:
        """Write ``record`` if it is still at ``version`` (0: new), with this transition's
        events (as :meth:`prepare` takes them), timers and tokens, all or nothing;
        return the new version.

        On :class:`FencedError` the record's history counters are as they were.
        """
        kept = record.tail, record.tail_count, record.events
        try:
            return await self.write(self.prepare(record, events, timers, tokens), version)
        except FencedError:
            record.tail, record.tail_count, record.events = kept
            raise

    async def history(self, name: str) -> list[dict[str, Any]]:
        """Every event of the execution, oldest first, numbered 1, 2, 3 …"""
        # The record first, then the chunks: a tail flushed in between shows up in a
        # chunk as well, and the event indexes drop the second copy.
        loaded = await self.load(name)
        if loaded is None:
            return []
        record = loaded[0]
        slots: list[dict[str, Any] | None] = [None] * record.events
        start_after: str | None = None
        prefix = f"{_HISTORY}{name}/"
        while True:
            items = await self.kv.scan(prefix, start_after=start_after, limit=500)
            for item in items:
                first = int(item.key[len(prefix) :])
                for offset, event in enumerate(json.loads(item.value)):
                    if first + offset < record.events:
                        slots[first + offset] = _event(event)
            if len(items) < 500:
                break
            start_after = items[-1].key
        base = record.events - record.tail_count
        for offset, event in enumerate(json.loads(b"[" + record.tail + b"]")):
            slots[base + offset] = _event(event)
        events = [event for event in slots if event is not None]
        for index, event in enumerate(events):
            event["id"] = index + 1
            event["previous_event_id"] = index
        return events

    async def records(
        self, start_after: str | None = None, limit: int = 1000
    ) -> list[ExecutionRecord]:
        """Records in name order."""
        after = _RECORDS + start_after if start_after is not None else None
        items = await self.kv.scan(_RECORDS, start_after=after, limit=limit)
        return [ExecutionRecord.from_json(item.value) for item in items]

    async def due_timers(self, now: float, limit: int = 200) -> list[Timer]:
        """Timers due at or before ``now``, earliest first."""
        return (await self.timers_due(now, limit))[0]

    async def timers_due(self, now: float, limit: int = 200) -> tuple[list[Timer], float | None]:
        """Timers due at or before ``now``, earliest first, and when the next one after
        them is due (None: none seen — no more timers, or ``limit`` were all due)."""
        items = await self.kv.scan(_TIMERS, limit=limit)
        due: list[Timer] = []
        for item in items:
            timer = _parse_timer(item)
            if timer.due > now:
                return due, timer.due
            due.append(timer)
        return due, None

    async def next_timer(self) -> float | None:
        """When the earliest timer is due, if any."""
        items = await self.kv.scan(_TIMERS, limit=1)
        return _parse_timer(items[0]).due if items else None

    async def drop_timer(self, timer: Timer) -> bool:
        """Remove a handled timer; False if another service handled it first."""
        try:
            return await self.kv.delete(timer.key, expect_version=timer.version)
        except VersionConflictError:
            return False

    async def token_owner(self, token: str) -> str | None:
        """The execution a task token belongs to."""
        item = await self.kv.get(token_key(token))
        return item.value.decode() if item is not None else None


def _event(stored: Any) -> dict[str, Any]:
    """An event read back: ``[type, time, details]``, ``[type, time, state, field,
    value]`` (a state's input or output) or, in the older form, the object itself."""
    if isinstance(stored, dict):
        return stored
    if len(stored) == 5:
        type, timestamp, name, key, value = stored
        return {"type": type, "timestamp": timestamp, "details": {"name": name, key: value}}
    return {"type": stored[0], "timestamp": stored[1], "details": stored[2]}


def _due_of(key: str) -> float:
    return int(key[len(_TIMERS) :].split("/", 1)[0]) / 1000


def _parse_timer(item: Item) -> Timer:
    due_ms, name, kind = item.key[len(_TIMERS) :].split("/")
    return Timer(int(due_ms) / 1000, name, kind, item.key, item.version)
