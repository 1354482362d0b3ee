"""A rule -> flow execution through ``Platform`` on SQLite and Redis, redelivery included."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow import App, Event
from reflow.backends import Backend, open_backend
from reflow.config import Settings
from reflow.events.bus import bus_stream
from reflow.events.delivery import rule_stream
from reflow.platform import Platform
from tests.conftest import REDIS_URL, require_server

RULE = "publish-on-save"
SECOND = "publish-again"


def publishing_app() -> App:
    app = App("news")

    @app.function()
    def shout(event: dict[str, Any], context: Any) -> Any:
        return {"title": event["title"].upper()}

    app.flow(
        "publish",
        {
            "StartAt": "Shout",
            "States": {"Shout": {"Type": "Task", "Resource": "reflow:function:shout", "End": True}},
        },
    )
    app.rule(RULE, {"detail-type": ["Saved"]}, target="flow:publish", input_path="$.detail")
    return app


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'reflow.db'}"
    else:
        require_server(REDIS_URL, "Redis")
        url = f"{REDIS_URL}?prefix=test-busflow-{uuid.uuid4().hex[:8]}:"
    opened = await open_backend(url, data_dir=tmp_path)
    yield opened
    if request.param == "redis":
        for stream in (bus_stream("default"), rule_stream(RULE), rule_stream(SECOND)):
            await opened.log.delete_stream(stream)
    await opened.close()


async def _until(check: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_rule_to_flow_succeeds_and_a_redelivered_event_starts_no_second_execution(
    backend: Backend, tmp_path: Path
) -> None:
    app = publishing_app()
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(app, settings, backend=backend)
    await platform.start(admin=False)
    try:
        flows: Any = platform.service("flows")
        events: Any = platform.service("events")
        calls: list[str | None] = []
        start_execution = flows.flows.start_execution

        async def counted(flow: str, input: Any = None, *, name: str | None = None) -> Any:
            calls.append(name)
            return await start_execution(flow, input, name=name)

        flows.flows.start_execution = counted  # observe each delivery's start
        saved = Event(source="cms", type="Saved", data={"title": "hello"})
        [event_id] = await app.events.put(saved)

        async def succeeded() -> bool:
            rows = await flows.flows.list_executions(flow="publish", status="SUCCEEDED")
            return len(rows) == 1

        await _until(succeeded)
        # The same event again (same id), as a redelivery would bring it.
        await app.events.put(saved)

        async def delivered_twice() -> bool:
            # Started twice, and the second delivery acknowledged (not pending a retry).
            pending = await backend.log.pending(rule_stream(RULE), "deliver")
            return len(calls) == 2 and not pending

        await _until(delivered_twice)
        executions = await flows.flows.list_executions(flow="publish")
        described = await flows.flows.describe(f"{RULE}:{event_id}")
        letters = await events.bus.dead_letters.list(RULE)
    finally:
        await platform.stop()
    name = f"{RULE}:{event_id}"  # one execution per (rule, event)
    assert calls == [name, name]
    assert [row["name"] for row in executions] == [name]
    assert described["status"] == "SUCCEEDED" and described["output"] == {"title": "HELLO"}
    assert letters == []


async def test_two_rules_sending_one_event_to_one_flow_start_one_execution_each(
    backend: Backend, tmp_path: Path
) -> None:
    app = publishing_app()
    app.rule(SECOND, {"source": ["cms"]}, target="flow:publish", input_path="$.detail")
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(app, settings, backend=backend)
    await platform.start(admin=False)
    try:
        flows: Any = platform.service("flows")
        [event_id] = await app.events.put(
            Event(source="cms", type="Saved", data={"title": "twice"})
        )

        async def both_succeeded() -> bool:
            rows = await flows.flows.list_executions(flow="publish", status="SUCCEEDED")
            return len(rows) == 2

        await _until(both_succeeded)
        rows = await flows.flows.list_executions(flow="publish")
        outputs = [(await flows.flows.describe(row["name"]))["output"] for row in rows]
    finally:
        await platform.stop()
    assert sorted(row["name"] for row in rows) == sorted(
        [f"{RULE}:{event_id}", f"{SECOND}:{event_id}"]
    )
    assert outputs == [{"title": "TWICE"}, {"title": "TWICE"}]
