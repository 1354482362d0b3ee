"""Functions' flow and bus destinations: records taken from their streams and delivered.

An asynchronous invocation whose function has an ``on_success`` or
``on_failure`` destination ``"bus:NAME"`` or ``"flow:NAME"`` leaves Lambda's
destination record in ``functions.destinations.<kind>.<name>``
(:mod:`reflow.functions.invocations`). A :class:`DestinationReader` — one per
events service — consumes each such stream through the consumer group
``destinations``:

* a bus record is put on bus ``NAME`` as the event Lambda sends EventBridge:
  source ``lambda``, detail-type ``Lambda Function Invocation Result -
  Success`` (or ``- Failure``), the function's ARN in ``resources``, the
  record as ``detail``, and the request id as the event id (a redelivered
  record puts an event with the same id);
* a flow record starts an execution of flow ``NAME`` with the record as its
  input, named after the request id (a redelivery finds that execution).

A record is acknowledged only after that; one that cannot be delivered yet
(the flows service is not running, the backend failed) stays pending and comes
back after its lease. One that never can be (not JSON, or an event over the
bus's 256 KB) is logged whole and acknowledged, so that it neither comes back
for ever nor stops the stream from being trimmed. Acknowledged records are trimmed with an
:class:`~reflow.backends.retention.AckedTrimmer`; a pending or unread record
is never dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from reflow.backends.protocols import LogEntry
from reflow.backends.retention import AckedTrimmer
from reflow.clock import Clock
from reflow.errors import InvalidEventError, NotAvailableError
from reflow.events.delivery import stop_tasks
from reflow.events.targets import execution_name
from reflow.functions.invocations import Destination

if TYPE_CHECKING:
    from reflow.backends import Backend
    from reflow.events.bus import EventBus

__all__ = ["DESTINATIONS_GROUP", "DestinationReader", "destination_event"]

_log = logging.getLogger("reflow.events")

DESTINATIONS_GROUP = "destinations"
BATCH = 16  # records one read takes
FlowStart = Callable[[str, Any, str], Awaitable[Any]]


def destination_event(record: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge event Lambda sends a bus destination for ``record``."""
    context = record.get("requestContext", {})
    outcome = "Success" if context.get("condition") == "Success" else "Failure"
    event: dict[str, Any] = {
        "source": "lambda",
        "detail-type": f"Lambda Function Invocation Result - {outcome}",
        "detail": record,
        "resources": [context["functionArn"]] if context.get("functionArn") else [],
    }
    if context.get("requestId"):
        event["id"] = str(context["requestId"])
    return event


class DestinationReader:
    """Consumes the destination streams of an app's functions and delivers each record."""

    def __init__(
        self,
        backend: Backend,
        destinations: Iterable[Destination],
        *,
        bus: EventBus,
        start_flow: FlowStart | None = None,
        clock: Clock | None = None,
        lease: float = 60.0,
        keep_acked: float = 600.0,
        trim_every: float = 60.0,
        consumer: str | None = None,
    ) -> None:
        self.log = backend.log
        self.clock = clock or backend.clock
        # Only flows and buses have streams; a function destination is queued
        # as an invocation of that function directly.
        streams = {d.stream: d for d in destinations if d.kind in ("flow", "bus")}
        self.destinations = list(streams.values())
        self.bus = bus
        self.start_flow = start_flow
        self.lease = lease
        self.trimmer = AckedTrimmer(self.log, self.clock, keep=keep_acked, every=trim_every)
        self.consumer = consumer or f"destinations-{uuid.uuid4().hex[:12]}"
        self.delivered = 0  # records delivered by this process, for tests and metrics
        self.refused = 0  # records that could never be delivered (logged and dropped)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start one reader per destination stream."""
        for destination in self.destinations:
            await self.log.create_group(destination.stream, DESTINATIONS_GROUP, start="0")
            self._tasks.append(asyncio.create_task(self._read(destination)))

    async def stop(self) -> None:
        """Stop reading; records not yet acknowledged come back after their lease."""
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)

    async def _read(self, destination: Destination) -> None:
        stream = destination.stream
        while True:
            try:
                entries = await self.log.read(
                    stream,
                    DESTINATIONS_GROUP,
                    self.consumer,
                    count=BATCH,
                    lease=self.lease,
                    block=1.0,
                )
                done = [entry.id for entry in entries if await self._deliver(destination, entry)]
                if done:
                    await self.log.ack(stream, DESTINATIONS_GROUP, done)
                    self.trimmer.acked(stream, DESTINATIONS_GROUP, done)
                if self.trimmer.due():
                    await self.trim()
            except Exception:
                # A backend hiccup must not end reading: what was read and not
                # acknowledged comes back after its lease.
                _log.exception("destination %s: reading failed; retrying in 1 s", stream)
                await asyncio.sleep(1.0)

    async def _deliver(self, destination: Destination, entry: LogEntry) -> bool:
        """Deliver one record; True to acknowledge it.

        A failure that may pass (no flows service yet, the backend) leaves the
        record pending for a later attempt. A record that can never be
        delivered — not a JSON object, or an event the bus refuses (over
        256 KB) — is logged whole and acknowledged: kept pending, it would
        come back every lease for ever and stop the stream from being trimmed.
        """
        try:
            record = json.loads(entry.data)
            if not isinstance(record, dict):
                raise InvalidEventError("", "a destination record must be a JSON object")
            if destination.kind == "bus":
                await self.bus.put([destination_event(record)], bus=destination.name)
            else:
                if self.start_flow is None:
                    raise NotAvailableError("flows", "no flows service to start executions with")
                request = str(record.get("requestContext", {}).get("requestId") or entry.id)
                await self.start_flow(destination.name, record, execution_name(request))
        except (json.JSONDecodeError, InvalidEventError) as exc:
            _log.error(
                "destination %s: record %s can never be delivered (%s); dropped: %r",
                destination.stream,
                entry.id,
                exc,
                entry.data[:4096],
            )
            self.refused += 1
            return True
        except Exception as exc:
            _log.error(
                "destination %s: record %s not delivered, retried after %g s: %r",
                destination.stream,
                entry.id,
                self.lease,
                exc,
            )
            return False
        self.delivered += 1
        return True

    async def trim(self) -> int:
        """Drop acknowledged records ``keep_acked`` s older than any still needed."""
        dropped = 0
        for destination in self.destinations:
            try:
                dropped += await self.trimmer.trim(destination.stream, [DESTINATIONS_GROUP])
            except Exception:  # a backend hiccup: the next trim catches up
                _log.exception("trimming %s failed", destination.stream)
        return dropped
