"""A function's ``bus:`` and ``flow:`` destinations, end to end, on each engine.

An event invocation of ``render`` (``on_success="bus:results"``,
``on_failure="bus:results"``) leaves Lambda's destination record in
``functions.destinations.bus.results``; the events service's destination
reader puts it on bus ``results`` as Lambda's EventBridge event, where a rule
matching ``source: lambda`` hands it to ``audit``. A ``flow:`` destination,
through ``Platform``, starts that flow with the record, named after the
request id. Redis-only cases (redelivery, lease takeover) are in
``test_bus_redis_destinations.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from reflow import App
from reflow.backends import Backend, memory_backend, open_backend
from reflow.config import Settings
from reflow.events.bus import bus_stream
from reflow.events.destinations import DESTINATIONS_GROUP
from reflow.events.service import EventsService
from reflow.functions import Runtime
from reflow.functions.invocations import Destination
from reflow.platform import Platform
from tests.functional.events.helpers import eventually
from tests.functional.events.redis_prefix import redis_backend


@asynccontextmanager
async def engine(name: str, tmp_path: Path) -> AsyncIterator[Backend]:
    """A fresh backend of engine ``name`` (Redis under its own key prefix)."""
    if name == "redis":
        async with redis_backend("destinations", tmp_path) as backend:
            yield backend
        return
    backend = (
        memory_backend()
        if name == "memory"
        else await open_backend(f"sqlite:///{tmp_path / 'reflow.db'}", data_dir=tmp_path)
    )
    try:
        yield backend
    finally:
        await backend.close()


seen: list[dict[str, Any]] = []


def build_app() -> App:
    app = App("outcomes")

    @app.function(retries=0, on_success="bus:results", on_failure="bus:results")
    async def render(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("fail"):
            raise ValueError("bad page")
        return {"rendered": event["id"]}

    @app.on({"source": ["lambda"]}, name="audit", bus="results")
    async def audit(event: dict[str, Any], context: Any) -> None:
        seen.append(event)

    return app


@pytest.mark.parametrize("name", ["memory", "sqlite", "redis"])
async def test_outcomes_reach_a_rule_on_the_destination_bus(name: str, tmp_path: Path) -> None:
    seen.clear()
    app = build_app().freeze()
    async with engine(name, tmp_path) as backend:
        runtime = Runtime(app, backend=backend)
        events = EventsService(app, backend, runtime=runtime)
        await runtime.start()
        await events.start()
        try:
            ok = await runtime.invoke_async("render", {"id": 7})
            failed = await runtime.invoke_async("render", {"id": 8, "fail": True})
            await eventually(lambda: len(seen) == 2, timeout=15.0)
            stream = Destination("bus", "results").stream
            pending = await backend.log.pending(stream, DESTINATIONS_GROUP)
            on_bus = await backend.log.range(bus_stream("results"))
        finally:
            await events.stop()
            await runtime.stop()
    by_id = {event["id"]: event for event in seen}
    assert set(by_id) == {ok, failed}
    success, failure = by_id[ok], by_id[failed]
    assert success["source"] == "lambda"
    assert success["detail-type"] == "Lambda Function Invocation Result - Success"
    assert success["detail"]["requestContext"]["requestId"] == ok
    assert success["detail"]["requestPayload"] == {"id": 7}
    assert success["detail"]["responsePayload"] == {"rendered": 7}
    assert success["resources"] == [success["detail"]["requestContext"]["functionArn"]]
    assert failure["detail-type"] == "Lambda Function Invocation Result - Failure"
    assert failure["detail"]["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["detail"]["responsePayload"]["errorType"] == "ValueError"
    # Each record was acknowledged, and its event put on the bus exactly once.
    assert pending == []
    assert len(on_bus) == 2


@pytest.mark.parametrize("name", ["sqlite", "redis"])
async def test_a_flow_destination_starts_an_execution_named_after_the_request(
    name: str, tmp_path: Path
) -> None:
    app = App("outcomes-flow")

    @app.function(on_success="flow:after")
    async def render(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"rendered": event["id"]}

    @app.function()
    def shout(event: dict[str, Any], context: Any) -> Any:
        return {"page": event["responsePayload"]["rendered"]}

    app.flow(
        "after",
        {
            "StartAt": "Shout",
            "States": {"Shout": {"Type": "Task", "Resource": "reflow:function:shout", "End": True}},
        },
    )
    async with engine(name, tmp_path) as backend:
        settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
        platform = Platform(app, settings, backend=backend)
        await platform.start(admin=False)
        try:
            flows: Any = platform.service("flows")
            functions: Any = platform.service("functions")
            request_id = await functions.invoke_async("render", {"id": 9})
            for _ in range(750):
                rows = await flows.flows.list_executions(flow="after", status="SUCCEEDED")
                if rows:
                    break
                await asyncio.sleep(0.02)
            described = await flows.flows.describe(request_id)
            everything = await flows.flows.list_executions(flow="after")
            pending = await backend.log.pending(
                Destination("flow", "after").stream, DESTINATIONS_GROUP
            )
        finally:
            await platform.stop()
    assert described["status"] == "SUCCEEDED" and described["output"] == {"page": 9}
    assert described["input"]["requestContext"]["requestId"] == request_id
    assert len(everything) == 1
    assert pending == []
