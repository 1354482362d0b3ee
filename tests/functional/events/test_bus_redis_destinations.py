"""Functions' ``bus:`` and ``flow:`` destinations on a real Redis server.

The plain end-to-end cases run on every engine in ``test_bus_destinations.py``;
these are the ones where Redis's streams, consumer group and leases matter:

* a record redelivered after its flow was started (the reader died between
  the start and the ack) finds that execution and starts no second one;
* a record whose reader was stopped before acknowledging it stays pending,
  leased to that reader, and another reader takes it over once the lease
  has run out;
* a bus record redelivered after its event was put puts it again with the
  same event id (the request id).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from reflow import App
from reflow.backends import Backend
from reflow.config import Settings
from reflow.events.bus import EventBus, bus_stream
from reflow.events.destinations import DESTINATIONS_GROUP, DestinationReader
from reflow.events.service import flow_starter
from reflow.functions.invocations import Destination
from reflow.platform import Platform
from tests.functional.events.helpers import eventually
from tests.functional.events.redis_prefix import redis_backend

ARN = "arn:aws:lambda:local:000000000000:function:render"
FLOW = Destination("flow", "after")
BUS = Destination("bus", "done")


def record(request_id: str, condition: str = "Success") -> bytes:
    """A destination record as the functions runtime writes it."""
    outcome = {
        "version": "1.0",
        "requestContext": {"requestId": request_id, "functionArn": ARN, "condition": condition},
        "requestPayload": {"id": request_id},
        "responsePayload": {"page": request_id},
    }
    return json.dumps(outcome).encode()


def flow_app(name: str) -> App:
    """An app with flow ``after`` (one pass state) and no destination of its own."""
    app = App(name)
    app.flow(
        "after",
        {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}},
    )
    return app


async def platform_on(app: App, backend: Backend, tmp_path: Path) -> Platform:
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(app, settings, backend=backend)
    await platform.start(admin=False)
    return platform


class CrashAfterStart:
    """A flow starter that really starts the flow, then fails the first ``crashes`` times.

    This is a reader dying between starting the execution and acknowledging
    the record: the record is redelivered after its lease.
    """

    def __init__(self, platform: Platform, crashes: int = 1) -> None:
        self.start = flow_starter(lambda: platform.service("flows"))
        self.crashes = crashes
        self.calls: list[str] = []

    async def __call__(self, flow: str, payload: Any, name: str) -> None:
        self.calls.append(name)
        await self.start(flow, payload, name)
        if len(self.calls) <= self.crashes:
            raise RuntimeError("the reader died before its ack")


async def test_a_redelivered_record_starts_no_second_execution(tmp_path: Path) -> None:
    async with redis_backend("dest-redeliver", tmp_path) as backend:
        platform = await platform_on(flow_app("redeliver-redis"), backend, tmp_path)
        starter = CrashAfterStart(platform)
        bus = EventBus(backend)
        reader = DestinationReader(backend, [FLOW], bus=bus, start_flow=starter, lease=0.3)
        try:
            await reader.start()
            await backend.log.append(FLOW.stream, record("req-once"))
            await eventually(lambda: reader.delivered == 1, timeout=10.0)
            flows: Any = platform.service("flows")
            for _ in range(500):
                done = await flows.flows.list_executions(flow="after", status="SUCCEEDED")
                if done:
                    break
                await asyncio.sleep(0.02)
            executions = await flows.flows.list_executions(flow="after")
            pending = await backend.log.pending(FLOW.stream, DESTINATIONS_GROUP)
        finally:
            await reader.stop()
            await platform.stop()
    assert starter.calls == ["req-once", "req-once"]  # delivered twice: the lease ran out
    assert [row["name"] for row in executions] == ["req-once"]
    assert pending == []


class Stuck:
    """A flow starter that never returns: the reader is stopped in the middle of it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def __call__(self, flow: str, payload: Any, name: str) -> None:
        self.entered.set()
        await asyncio.Event().wait()


async def test_a_record_survives_its_reader_stopping_before_the_ack(tmp_path: Path) -> None:
    async with redis_backend("dest-takeover", tmp_path) as backend:
        platform = await platform_on(flow_app("takeover-redis"), backend, tmp_path)
        stuck = Stuck()
        first = DestinationReader(
            backend, [FLOW, BUS], bus=EventBus(backend), start_flow=stuck, lease=1.0, consumer="one"
        )
        second: DestinationReader | None = None
        try:
            await first.start()
            await backend.log.append(FLOW.stream, record("req-held"))
            await asyncio.wait_for(stuck.entered.wait(), 10.0)
            await first.stop()
            [held] = await backend.log.pending(FLOW.stream, DESTINATIONS_GROUP)
            assert (held.consumer, held.deliveries) == ("one", 1)

            starter = CrashAfterStart(platform, crashes=0)
            second = DestinationReader(
                backend,
                [FLOW, BUS],
                bus=EventBus(backend),
                start_flow=starter,
                lease=30.0,
                consumer="two",
            )
            await second.start()
            await eventually(lambda: second is not None and second.delivered == 1, timeout=10.0)
            flows: Any = platform.service("flows")
            executions = await flows.flows.list_executions(flow="after")
            pending = await backend.log.pending(FLOW.stream, DESTINATIONS_GROUP)
        finally:
            await first.stop()
            if second is not None:
                await second.stop()
            await platform.stop()
    assert starter.calls == ["req-held"]
    assert [row["name"] for row in executions] == ["req-held"]
    assert pending == []


class PutThenDie(EventBus):
    """A bus whose first put is stored and then fails: the reader dies before its ack."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.puts = 0

    async def put(self, entries: Any, *, bus: str = "default") -> list[str]:
        ids = await super().put(entries, bus=bus)
        self.puts += 1
        if self.puts == 1:
            raise RuntimeError("the reader died before its ack")
        return ids


async def test_a_redelivered_bus_record_puts_the_same_event_id(tmp_path: Path) -> None:
    async with redis_backend("dest-bus-again", tmp_path) as backend:
        bus = PutThenDie(backend)
        reader = DestinationReader(backend, [BUS], bus=bus, lease=0.3)
        try:
            await reader.start()
            await backend.log.append(BUS.stream, record("req-twice", "RetriesExhausted"))
            await eventually(lambda: reader.delivered == 1, timeout=10.0)
            stored = [
                json.loads(e.data)["event"] for e in await backend.log.range(bus_stream("done"))
            ]
            pending = await backend.log.pending(BUS.stream, DESTINATIONS_GROUP)
        finally:
            await reader.stop()
    assert bus.puts == 2
    assert [event["id"] for event in stored] == ["req-twice", "req-twice"]
    assert {event["type"] for event in stored} == {"Lambda Function Invocation Result - Failure"}
    assert pending == []
