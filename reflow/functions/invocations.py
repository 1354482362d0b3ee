"""Asynchronous (event) invocations: durable, retried, routed, never dropped.

``Runtime.invoke_async`` appends the invocation to the function's stream in
the backend's ``Log`` and returns once that append is durable. Consumers (one
reader per function, running up to a few invocations at once) take entries
through a consumer group and hold a lease on each; an entry is acknowledged
only after its outcome is recorded somewhere durable, so a runtime that dies
mid-invocation leaves it to be redelivered to another one.

The outcome of each attempt follows Lambda's asynchronous invocation rules:

* success → the ``on_success`` destination, if any, gets Lambda's
  destination record (``requestContext``, ``requestPayload``,
  ``responsePayload``);
* failure with retries left (``retries``, 0–2, default 2) → a new entry for
  the next attempt is appended, due after a back-off of 1 then 2 minutes on
  the runtime's Clock, and the old one is acknowledged;
* failure with none left, or an event older than ``max_event_age`` → the
  dead-letter stream ``functions.<name>.dlq`` gets the payload, the error and
  the attempts, and the ``on_failure`` destination its record.

Acknowledged entries stay in the stream: about once a minute a reader trims
every function's stream up to what is provably acknowledged, ``keep_acked``
seconds older still (see :mod:`reflow.backends.retention`); a pending entry
(running, or waiting out its back-off) or an unread one is never dropped.
Dead letters are kept ``dlq_retention`` seconds (14 days, SQS's maximum
message retention, by default) and dropped by age at the same time: nothing
acknowledges a dead letter, so age is the only bound. :func:`dead_letters`
lists them and :func:`redrive_dead_letters` queues them again.

A redelivery (an entry whose lease expired because its consumer died) counts
as an attempt too, so a poison event that kills its runtime still ends in the
dead-letter queue. Destinations are ``"function:NAME"`` (or a bare function
name), ``"flow:NAME"`` and ``"bus:NAME"``; the events service consumes the
flow and bus records from ``functions.destinations.<kind>.<name>`` streams
(:mod:`reflow.events.destinations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reflow.backends.protocols import KV, Item, Log, LogEntry
from reflow.backends.retention import AckedTrimmer
from reflow.clock import Clock
from reflow.errors import (
    FunctionCrashedError,
    FunctionTimeoutError,
    HandlerError,
    InvalidEventError,
    RegistrationError,
    ThrottledError,
    VersionConflictError,
)
from reflow.functions.context import function_arn

if TYPE_CHECKING:
    from reflow.functions.runtime import Runtime

__all__ = [
    "GROUP",
    "AsyncInvocations",
    "DLQ_RETENTION",
    "Destination",
    "app_destinations",
    "backoff",
    "dead_letters",
    "dlq_stream",
    "events_stream",
    "lambda_error",
    "parse_destination",
    "redrive_dead_letters",
]

_log = logging.getLogger("reflow.functions")

GROUP = "functions"
CONCURRENCY = 4  # executions per function and consumer, when reserved does not say
MAX_HELD = 256  # entries one consumer holds per function (waiting or running)
# How long a dead letter is kept: SQS's longest message retention (its
# default, 4 days, is short for letters someone has to look at first).
DLQ_RETENTION = 14 * 24 * 3600.0


def events_stream(function: str) -> str:
    """The stream holding ``function``'s queued event invocations."""
    return f"functions.{function}.events"


def dlq_stream(function: str) -> str:
    """The dead-letter stream of ``function``."""
    return f"functions.{function}.dlq"


def backoff(attempt: int) -> float:
    """Seconds before the retry that follows failed ``attempt`` (1 min, then 2 min)."""
    return 60.0 * float(2 ** (attempt - 1))


@dataclass(frozen=True)
class Destination:
    """Where an outcome record goes: a function, a flow or a bus."""

    kind: str  # "function" | "flow" | "bus"
    name: str

    @property
    def stream(self) -> str:
        """The stream a flow or bus destination's records are appended to."""
        return f"functions.destinations.{self.kind}.{self.name}"


def parse_destination(text: str, functions: set[str], owner: str) -> Destination:
    """``"function:NAME"``, ``"flow:NAME"``, ``"bus:NAME"`` or a bare function name."""
    kind, sep, name = text.partition(":")
    if not sep:
        kind, name = "function", text
    if kind not in ("function", "flow", "bus") or not name:
        raise RegistrationError(
            owner, f"destination {text!r} must be 'function:NAME', 'flow:NAME' or 'bus:NAME'"
        )
    if kind == "function" and name not in functions:
        raise RegistrationError(owner, f"destination function {name!r} is not registered")
    return Destination(kind, name)


def app_destinations(functions: Mapping[str, Any]) -> dict[tuple[str, str], Destination]:
    """Each function's destinations by ``(function, "success" | "failure")``.

    ``functions`` maps names to their configs (``App.functions``), whose
    ``on_success`` / ``on_failure`` texts are parsed (and checked) here.
    """
    names = set(functions)
    found: dict[tuple[str, str], Destination] = {}
    for name, config in functions.items():
        for condition, text in (("success", config.on_success), ("failure", config.on_failure)):
            if text:
                found[name, condition] = parse_destination(text, names, name)
    return found


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def lambda_error(exc: BaseException) -> dict[str, Any]:
    """An invocation failure in Lambda's shape ``{"errorType", "errorMessage", "stackTrace"}``.

    A handler's exception keeps its own class name; the runtime's failures
    take the names Lambda gives them, so records read the same as AWS's:
    ``Sandbox.Timedout``, ``Runtime.ExitError``, ``TooManyRequestsException``.
    """
    if isinstance(exc, HandlerError):
        return {
            "errorType": exc.error_type,
            "errorMessage": exc.error_message,
            "stackTrace": list(exc.trace),
        }
    if isinstance(exc, FunctionTimeoutError):
        message = f"Task timed out after {exc.timeout:.2f} seconds"
        return {"errorType": "Sandbox.Timedout", "errorMessage": message, "stackTrace": []}
    if isinstance(exc, FunctionCrashedError):
        message = f"Runtime exited: {exc.cause}"
        return {"errorType": "Runtime.ExitError", "errorMessage": message, "stackTrace": []}
    if isinstance(exc, ThrottledError):
        message = f"Rate Exceeded: reserved concurrency of {exc.limit}"
        return {"errorType": "TooManyRequestsException", "errorMessage": message, "stackTrace": []}
    return {"errorType": type(exc).__name__, "errorMessage": str(exc), "stackTrace": []}


class AsyncInvocations:
    """The queue of event invocations of one runtime, over a ``Log``."""

    def __init__(
        self,
        runtime: Runtime,
        log: Log,
        clock: Clock,
        *,
        keep_acked: float = 600.0,
        trim_every: float = 60.0,
        dlq_retention: float = DLQ_RETENTION,
    ) -> None:
        self.runtime = runtime
        self.log = log
        self.clock = clock
        self.trimmer = AckedTrimmer(log, clock, keep=keep_acked, every=trim_every)
        self.dlq_retention = dlq_retention
        self.dlq_trimmed = 0  # dead letters dropped for age so far
        self.consumer = f"runtime-{uuid.uuid4().hex[:12]}"
        self.destinations = app_destinations(runtime.app.functions)
        self._readers: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start one reader per function."""
        for name in self.runtime.app.functions:
            await self.log.create_group(events_stream(name), GROUP, start="0")
            self._readers.append(asyncio.create_task(self._read(name)))

    async def stop(self) -> None:
        """Stop reading; unfinished invocations stay pending and are redelivered."""
        tasks = [*self._readers, *self._running]
        for task in tasks:
            task.cancel()
        await cancelled(tasks)
        for task in tasks:
            if task.done():  # a task's own failure surfaces here, as it always did
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._readers.clear()
        self._running.clear()

    async def submit(self, function: str, payload: Any) -> str:
        """Durably queue one invocation of ``function``; return its request id."""
        request_id = str(uuid.uuid4())
        record = {
            "id": request_id,
            "function": function,
            "payload": payload,
            "accepted": self.clock.time(),
            "attempt": 1,
            "due": 0.0,
        }
        try:
            data = _dumps(record)
        except (TypeError, ValueError) as exc:
            raise InvalidEventError("payload", f"must be JSON-serialisable: {exc}") from None
        await self.log.append(events_stream(function), data)
        self.runtime.metrics[function].async_accepted += 1
        return request_id

    def _lease(self, function: str) -> float:
        # Held while waiting out a back-off and while running: longer than both.
        config = self.runtime.app.functions[function]
        return backoff(config.retries or 1) + config.timeout + 60.0

    def _concurrency(self, function: str) -> int:
        reserved = self.runtime.app.functions[function].reserved
        return max(1, reserved) if reserved is not None else CONCURRENCY

    async def _read(self, function: str) -> None:
        # Two bounds: how many entries this consumer holds (waiting out a
        # back-off or running), and how many of them run at once. A retry
        # waiting for its minute holds no execution slot, so failing events
        # never stall the healthy ones queued behind them.
        held = asyncio.Semaphore(MAX_HELD)
        slots = asyncio.Semaphore(self._concurrency(function))
        stream = events_stream(function)
        lease = self._lease(function)
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                # A Log call returned normally though this reader was cancelled
                # (redis-py can lose one; see backends/redis_client.py): stop now.
                raise asyncio.CancelledError
            await held.acquire()
            try:
                entries = await self.log.read(
                    stream, GROUP, self.consumer, count=1, lease=lease, block=1.0
                )
            except BaseException:
                held.release()
                raise
            if self.trimmer.due():
                await self.trim()
            if not entries:
                held.release()
                continue
            task = asyncio.create_task(self._guarded(function, entries[0], slots))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _: held.release())

    async def _guarded(self, function: str, entry: LogEntry, slots: asyncio.Semaphore) -> None:
        try:
            await self._handle(function, entry, slots)
        except Exception:
            # The backend failed while recording an outcome: the entry stays
            # unacknowledged and comes back when its lease runs out.
            _log.exception("event invocation %s of %s left for redelivery", entry.id, function)

    async def _handle(self, function: str, entry: LogEntry, slots: asyncio.Semaphore) -> None:
        config = self.runtime.app.functions[function]
        metrics = self.runtime.metrics[function]
        record = json.loads(entry.data)
        # A redelivery means a runtime died holding this entry: that was an attempt.
        attempt = int(record["attempt"]) + entry.deliveries - 1
        wait = float(record.get("due", 0.0)) - self.clock.time()
        if wait > 0:
            await self.clock.sleep(wait)
        age = self.clock.time() - float(record["accepted"])
        if age > config.max_event_age:
            error = {
                "errorType": "EventAgeExceeded",
                "errorMessage": f"the event is {age:.0f} s old; the maximum is "
                f"{config.max_event_age:g} s",
                "stackTrace": [],
            }
            await self._failed(function, record, error, attempt - 1, "EventAgeExceeded")
        elif attempt > config.retries + 1:
            error = {
                "errorType": "RetriesExhausted",
                "errorMessage": f"delivered {attempt - 1} times without an outcome",
                "stackTrace": [],
            }
            await self._failed(function, record, error, attempt - 1, "RetriesExhausted")
        else:
            try:
                async with slots:
                    result = await self.runtime.invoke(
                        function, record["payload"], request_id=record["id"], wait=True
                    )
            except Exception as exc:  # every failure is an attempt; none is lost
                error = lambda_error(exc)
                due = self.clock.time() + backoff(attempt)
                if attempt <= config.retries and due - record["accepted"] <= config.max_event_age:
                    metrics.async_retries += 1
                    retry = {**record, "attempt": attempt + 1, "due": due, "lastError": error}
                    await self.log.append(events_stream(function), _dumps(retry))
                else:
                    await self._failed(function, record, error, attempt, "RetriesExhausted")
            else:
                await self._succeeded(function, record, result, attempt)
        await self.log.ack(events_stream(function), GROUP, [entry.id])
        self.trimmer.acked(events_stream(function), GROUP, [entry.id])

    async def trim(self) -> int:
        """Drop acknowledged entries of every function's stream ``keep_acked`` s older
        than any still needed, and dead letters older than ``dlq_retention``;
        return how many entries were dropped."""
        dropped = 0
        for function in self.runtime.app.functions:
            try:
                dropped += await self.trimmer.trim(events_stream(function), [GROUP])
                # Every runtime may trim the DLQ: by age, two trims agree.
                letters = await self.log.trim(dlq_stream(function), max_age=self.dlq_retention)
            except Exception:  # a backend hiccup: the next trim catches up
                _log.exception("trimming the event invocations of %s failed", function)
                continue
            self.dlq_trimmed += letters
            dropped += letters
        return dropped

    async def _succeeded(
        self, function: str, record: dict[str, Any], result: Any, attempts: int
    ) -> None:
        destination = self.destinations.get((function, "success"))
        if destination is None:
            return
        outcome = self._outcome(function, record, "Success", attempts)
        outcome["responseContext"] = {"statusCode": 200, "executedVersion": "$LATEST"}
        outcome["responsePayload"] = result
        await self._deliver(destination, outcome)

    async def _failed(
        self,
        function: str,
        record: dict[str, Any],
        error: dict[str, Any],
        attempts: int,
        condition: str,
    ) -> None:
        letter = {
            "requestId": record["id"],
            "function": function,
            "payload": record["payload"],
            "error": error,
            "attempts": attempts,
            "condition": condition,
            "accepted": record["accepted"],
            "failed": self.clock.time(),
        }
        await self.log.append(dlq_stream(function), _dumps(letter))
        self.runtime.metrics[function].dead_letters += 1
        destination = self.destinations.get((function, "failure"))
        if destination is None:
            return
        outcome = self._outcome(function, record, condition, attempts)
        outcome["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        outcome["responsePayload"] = error
        await self._deliver(destination, outcome)

    def _outcome(
        self, function: str, record: dict[str, Any], condition: str, attempts: int
    ) -> dict[str, Any]:
        """Lambda's destination record, without its response parts."""
        return {
            "version": "1.0",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.clock.time())),
            "requestContext": {
                "requestId": record["id"],
                "functionArn": function_arn(function, self.runtime.region),
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "requestPayload": record["payload"],
        }

    async def _deliver(self, destination: Destination, outcome: dict[str, Any]) -> None:
        if destination.kind == "function":
            await self.submit(destination.name, outcome)
        else:
            await self.log.append(destination.stream, _dumps(outcome))


REDRIVEN_PREFIX = "functions.dlq.redriven/"


def _redriven_prefix(function: str) -> str:
    return f"{REDRIVEN_PREFIX}{function}/"


# A redrive claims a letter before queuing it and marks it done after; a claim older
# than this was left by a redrive that died in between, and may be taken over.
_CLAIM_STALE = 60.0
_DONE = b"done"


async def _marks(kv: KV | None, function: str) -> dict[str, Item]:
    """The redrive marks of ``function``'s letters, by entry id."""
    if kv is None:
        return {}
    prefix = _redriven_prefix(function)
    return {item.key[len(prefix) :]: item for item in await kv.scan(prefix)}


async def _redriven(kv: KV | None, function: str) -> set[str]:
    """Ids of the letters a redrive has queued for good."""
    return {key for key, item in (await _marks(kv, function)).items() if item.value == _DONE}


async def dead_letters(log: Log, function: str, *, kv: KV | None = None) -> list[dict[str, Any]]:
    """Every dead letter of ``function`` still kept (see ``DLQ_RETENTION``), oldest first.

    Each carries its ``key`` (the entry's id). With ``kv``, letters already
    redriven (:func:`redrive_dead_letters`) are left out.
    """
    done = await _redriven(kv, function)
    letters = []
    for entry in await log.range(dlq_stream(function)):
        if entry.id not in done:
            letters.append({**json.loads(entry.data), "key": entry.id})
    return letters


async def redrive_dead_letters(
    log: Log,
    kv: KV,
    function: str,
    clock: Clock,
    *,
    keys: Collection[str] | None = None,
    retention: float = DLQ_RETENTION,
) -> list[str]:
    """Queue ``function``'s dead letters (or those of ``keys``) as event invocations again.

    Each goes back as attempt 1 with its request id, accepted now (so its
    ``max_event_age`` counts from the redrive), for a running runtime to take.
    The log cannot drop one entry, so a redriven letter stays in the stream
    until its age runs out, marked in ``kv`` (the mark lives as long): the
    listing leaves it out and no redrive sends it twice. The mark is first
    written as a claim stamped with the time (two redrives at once send a
    letter once), then turned into "done" once the invocation is queued; if
    queuing fails the claim is taken back, and a claim left by a redrive that
    died in between is taken over after a minute, so a crash can send a letter
    twice (at least once, as every delivery here) but never hide it unsent.
    Return the request ids queued.
    """
    marks = await _marks(kv, function)
    queued: list[str] = []
    for entry in await log.range(dlq_stream(function)):
        if keys is not None and entry.id not in keys:
            continue
        held = marks.get(entry.id)
        if held is not None and (held.value == _DONE or not _stale(held.value, clock)):
            continue
        letter = json.loads(entry.data)
        mark = f"{_redriven_prefix(function)}{entry.id}"
        claim = f"claim:{clock.time()!r}".encode()
        try:
            version = await kv.put(
                mark, claim, expect_version=0 if held is None else held.version, ttl=retention
            )
        except VersionConflictError:
            continue  # another redrive has it
        record = {
            "id": letter["requestId"],
            "function": function,
            "payload": letter["payload"],
            "accepted": clock.time(),
            "attempt": 1,
            "due": 0.0,
        }
        try:
            await log.append(events_stream(function), _dumps(record))
        except BaseException:
            await kv.delete(mark, expect_version=version)
            raise
        await kv.put(mark, _DONE, expect_version=version, ttl=retention)
        queued.append(str(letter["requestId"]))
    return queued


async def cancelled(tasks: Sequence[asyncio.Task[Any]], patience: float = 10.0) -> None:
    """Wait for cancelled ``tasks`` to end, cancelling again those that go on.

    A library call can swallow a cancellation (a client that catches it to
    tidy up its connection and carries on), and a reader loop that swallowed
    one would keep a stop waiting for ever. So each task still running after
    half a second is cancelled again; after ``patience`` seconds the stop
    gives up on it, logged, rather than hang.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    pending = {task for task in tasks if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.5)
        if pending and loop.time() >= deadline:
            where = sorted(f"{task!r} suspended in {_suspended_in(task)}" for task in pending)
            _log.error("%d task(s) would not stop:\n%s", len(pending), "\n".join(where))
            break
        for task in pending:
            task.cancel()


def _suspended_in(task: asyncio.Task[Any]) -> str:
    """Where ``task`` waits: each coroutine of its await chain, outermost first.

    ``repr(task)`` names only its own coroutine; the call that swallowed a
    cancellation is at the end of the chain (``cr_await`` followed down).
    """
    places = []
    awaitable: Any = task.get_coro()
    for _ in range(100):  # a bound, in case of a cycle
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        places.append(f"{code.co_name} ({code.co_filename}:{frame.f_lineno})")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return " -> ".join(places) or "(not suspended in a coroutine)"


def _stale(claim: bytes, clock: Clock) -> bool:
    """Whether a redrive's claim is old enough to belong to a redrive that died."""
    try:
        stamped = float(claim.removeprefix(b"claim:"))
    except ValueError:
        return True  # an unreadable claim is treated as abandoned
    return clock.time() - stamped >= _CLAIM_STALE
