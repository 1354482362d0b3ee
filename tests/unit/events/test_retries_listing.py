"""Listing parked retries: ``ParkedRetries.list``, ``reflow events retries`` and
``GET /api/events/retries`` (memory and SQLite), and ``reflow dlq list --function``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reflow import App
from reflow.admin import AdminRequest, AdminServer
from reflow.backends import Backend, memory_backend, open_backend
from reflow.cli.main import app as cli
from reflow.events.delivery import encode_record, rule_stream
from reflow.events.model import Event
from reflow.events.retries import ParkedRetries
from reflow.events.service import EventsService
from reflow.functions.invocations import dlq_stream, events_stream
from reflow.testing import FakeClock

runner = CliRunner()
NOW = 1_700_000_000.0
APP = """
from reflow import App

app = App("site")

@app.on({"source": ["cms"]}, name="render")
def render(event, context):
    return None

@app.on({"source": ["shop"]}, name="bill", bus="orders")
def bill(event, context):
    return None
"""


@pytest.fixture(params=["memory", "sqlite"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        opened = memory_backend(clock)
    else:
        opened = await open_backend(f"sqlite:///{tmp_path}/retries.db", clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def retry(rule: str, event: Event, attempt: int, message: str) -> bytes:
    error = {"type": "RuntimeError", "message": message}
    return encode_record(event, rule, attempt=attempt, first=NOW, due=0.0, error=error)


async def park_three(retries: ParkedRetries) -> list[Event]:
    events = [Event(source="cms", type="T", data={"n": n}) for n in range(3)]
    await retries.park(rule_stream("render"), retry("render", events[0], 2, "boom"), NOW + 30)
    await retries.park(rule_stream("bill"), retry("bill", events[1], 5, "down"), NOW + 10)
    await retries.park(rule_stream("render"), retry("render", events[2], 3, "again"), NOW + 20)
    return events


async def test_list_gives_parked_retries_soonest_first(shared: Backend) -> None:
    retries = ParkedRetries(shared.kv, shared.log, clock=shared.clock)
    events = await park_three(retries)
    listed = await retries.list()
    assert [(r.rule, r.event_id, r.attempt) for r in listed] == [
        ("bill", events[1].id, 5),
        ("render", events[2].id, 3),
        ("render", events[0].id, 2),
    ]
    assert [r.due for r in listed] == [NOW + 10, NOW + 20, NOW + 30]
    assert listed[0].error == {"type": "RuntimeError", "message": "down"}
    assert listed[0].claimed_until == 0.0
    first = listed[0].to_json()
    assert first["due"] == "2023-11-14T22:13:30.000Z" and first["stream"] == rule_stream("bill")
    only = await retries.list(streams={rule_stream("render")})
    assert [r.event_id for r in only] == [events[2].id, events[0].id]
    assert len(await retries.list(limit=1)) == 1
    # Listing claims nothing: the waker still moves all three when due.
    clock = shared.clock
    assert isinstance(clock, FakeClock)
    clock.advance(60.0)
    assert await retries.move_due() is None
    assert await shared.log.length(rule_stream("render")) == 2
    assert await retries.list() == []


def test_cli_lists_retries_by_rule_and_bus(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reflow.db'}"
    (tmp_path / "app.py").write_text(APP)

    async def seed() -> list[Event]:
        backend = await open_backend(url, data_dir=tmp_path)
        try:
            return await park_three(ParkedRetries(backend.kv, backend.log, clock=backend.clock))
        finally:
            await backend.close()

    events = asyncio.run(seed())
    listing = runner.invoke(cli, ["events", "retries", "--json", "--backend", url])
    assert listing.exit_code == 0, listing.output
    rows = [json.loads(line) for line in listing.output.splitlines()]
    assert [(r["rule"], r["event_id"], r["attempt"]) for r in rows] == [
        ("bill", events[1].id, 5),
        ("render", events[2].id, 3),
        ("render", events[0].id, 2),
    ]
    assert rows[0]["error"] == {"type": "RuntimeError", "message": "down"}
    by_rule = runner.invoke(
        cli, ["events", "retries", "--json", "--rule", "render", "--backend", url]
    )
    assert [json.loads(line)["event_id"] for line in by_rule.output.splitlines()] == [
        events[2].id,
        events[0].id,
    ]
    app_path = str(tmp_path / "app.py")
    on_bus = ["events", "retries", "--json", "--bus", "orders", "--app", app_path]
    by_bus = runner.invoke(cli, [*on_bus, "--backend", url])
    assert by_bus.exit_code == 0, by_bus.output
    assert [json.loads(line)["rule"] for line in by_bus.output.splitlines()] == ["bill"]
    table = runner.invoke(cli, ["events", "retries", "--backend", url], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "RuntimeError: down" in table.output and "3 parked retries" in table.output


def test_cli_lists_a_functions_dead_letters_and_their_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reflow.db'}"
    letter = {
        "requestId": "req-1",
        "function": "render",
        "payload": {"id": 1},
        "error": {"errorType": "ValueError", "errorMessage": "bad", "stackTrace": []},
        "attempts": 3,
        "condition": "RetriesExhausted",
        "accepted": NOW,
        "failed": NOW + 180,
    }

    async def seed() -> None:
        backend = await open_backend(url, data_dir=tmp_path)
        try:
            await backend.log.append(dlq_stream("render"), json.dumps(letter).encode())
        finally:
            await backend.close()

    asyncio.run(seed())
    listing = runner.invoke(
        cli, ["dlq", "list", "--function", "render", "--json", "--backend", url]
    )
    assert listing.exit_code == 0, listing.output
    [listed] = [json.loads(line) for line in listing.output.splitlines()]
    assert listed == {**letter, "key": listed["key"]}
    table = runner.invoke(
        cli, ["dlq", "list", "--function", "render", "--backend", url], env={"COLUMNS": "200"}
    )
    assert table.exit_code == 0, table.output
    assert "req-1" in table.output and "ValueError: bad" in table.output
    assert "kept 14 days" in table.output
    both = runner.invoke(cli, ["dlq", "list", "--function", "render", "--rule", "x"])
    assert both.exit_code != 0
    redrive = runner.invoke(cli, ["dlq", "redrive", "--function", "render", "--backend", url])
    assert redrive.exit_code == 0, redrive.output
    assert "redrove 1 invocation" in redrive.output
    again = runner.invoke(cli, ["dlq", "redrive", "--function", "render", "--backend", url])
    assert "redrove 0 invocations" in again.output
    empty = runner.invoke(cli, ["dlq", "list", "--function", "render", "--backend", url])
    assert "0 dead letters of function render" in empty.output

    async def queued() -> list[dict[str, Any]]:
        backend = await open_backend(url, data_dir=tmp_path)
        try:
            return [json.loads(e.data) for e in await backend.log.range(events_stream("render"))]
        finally:
            await backend.close()

    [invocation] = asyncio.run(queued())
    assert (invocation["id"], invocation["payload"], invocation["attempt"]) == (
        "req-1",
        {"id": 1},
        1,
    )


async def test_admin_route_lists_a_failing_rules_parked_retry(shared: Backend) -> None:
    app = App("failing")

    @app.on({"source": ["cms"]}, name="flaky", bus="news")
    async def flaky(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError("target down")

    admin = AdminServer()
    events = EventsService(app.freeze(), shared, admin=admin)
    await events.start()
    try:
        [event_id] = await events.bus.put([{"source": "cms", "detail-type": "T"}], bus="news")

        async def listed(query: dict[str, list[str]]) -> list[dict[str, Any]]:
            request = AdminRequest("GET", "/api/events/retries", query, {}, b"")
            reply = await admin.dispatch(request)
            assert reply.status == 200
            retries: list[dict[str, Any]] = reply.body["retries"]
            return retries

        parked: list[dict[str, Any]] = []

        async def wait() -> None:
            for _ in range(2500):
                parked[:] = await listed({})
                if parked:
                    return
                await asyncio.sleep(0.004)

        await wait()
        [one] = parked
        assert (one["rule"], one["event_id"], one["attempt"]) == ("flaky", event_id, 2)
        assert one["error"] == {"type": "RuntimeError", "message": "target down"}
        assert await listed({"bus": ["news"]}) == [one]
        assert await listed({"bus": ["default"]}) == []
        assert await listed({"rule": ["other"]}) == []
    finally:
        await events.stop()
