"""events:putEvents in memory: the request and response shapes of Step Functions' integration."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reflow.backends import Backend
from reflow.events.bus import EventBus, bus_stream
from reflow.flows import run_async
from reflow.testing.clock import FakeClock

PUT = "arn:aws:states:::events:putEvents"


def _task(arguments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "QueryLanguage": "JSONata",
        "StartAt": "Put",
        "States": {
            "Put": {"Type": "Task", "Resource": PUT, "Arguments": arguments, "End": True, **extra}
        },
    }


async def _stored(backend: Backend, bus: str = "default") -> list[dict[str, Any]]:
    entries = await backend.log.range(bus_stream(bus))
    return [json.loads(entry.data)["event"] for entry in entries]


def _entry(**fields: Any) -> dict[str, Any]:
    return {"Source": "app.orders", "DetailType": "OrderPlaced", "Detail": {"id": 7}, **fields}


async def test_put_answers_with_event_ids_and_stores_the_events(
    backend: Backend, clock: FakeClock
) -> None:
    bus = EventBus(backend, clock=clock)
    execution = await run_async(
        _task({"Entries": [_entry(), _entry(Detail={"id": 8})]}), {}, events=bus, name="e1"
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["FailedEntryCount"] == 0
    ids = [entry["EventId"] for entry in execution.output["Entries"]]
    stored = await _stored(backend)
    assert [event["id"] for event in stored] == ids
    assert [event["data"] for event in stored] == [{"id": 7}, {"id": 8}]
    assert stored[0]["source"] == "app.orders"
    assert stored[0]["type"] == "OrderPlaced"


async def test_the_execution_and_machine_arns_are_appended_to_resources(
    backend: Backend, clock: FakeClock
) -> None:
    bus = EventBus(backend, clock=clock)
    entry = _entry(Resources=["arn:thing"])
    execution = await run_async(_task({"Entries": [entry]}), {}, events=bus, name="e2")
    assert execution.status == "SUCCEEDED", execution.cause
    (stored,) = await _stored(backend)
    assert stored["resources"] == [
        "arn:thing",
        execution.id,
        "arn:aws:states:local:000000000000:stateMachine:flow",
    ]


async def test_entries_go_to_the_bus_they_name_by_name_or_arn(
    backend: Backend, clock: FakeClock
) -> None:
    bus = EventBus(backend, clock=clock)
    entries = [
        _entry(EventBusName="orders"),
        _entry(EventBusName="arn:aws:events:local:000000000000:event-bus/audit"),
        _entry(),
    ]
    execution = await run_async(_task({"Entries": entries}), {}, events=bus)
    assert execution.status == "SUCCEEDED", execution.cause
    ids = [entry["EventId"] for entry in execution.output["Entries"]]
    assert [e["id"] for e in await _stored(backend, "orders")] == [ids[0]]
    assert [e["id"] for e in await _stored(backend, "audit")] == [ids[1]]
    assert [e["id"] for e in await _stored(backend)] == [ids[2]]


async def test_detail_as_json_text_and_time_as_epoch_seconds(
    backend: Backend, clock: FakeClock
) -> None:
    bus = EventBus(backend, clock=clock)
    entry = _entry(Detail='{"id": 9}', Time=1_700_000_000)
    execution = await run_async(_task({"Entries": [entry]}), {}, events=bus)
    assert execution.status == "SUCCEEDED", execution.cause
    (stored,) = await _stored(backend)
    assert stored["data"] == {"id": 9}
    assert stored["time"].startswith("2023-11-14T22:13:20")


@pytest.mark.parametrize(
    ("entries", "cause"),
    [
        ([_entry(), {"DetailType": "x", "Detail": {}}], "entries[1].Source"),
        ([{"Source": "s", "Detail": {}}], "entries[0].DetailType"),
        ([{"Source": "s", "DetailType": "t"}], "entries[0].Detail"),
        ([_entry(Detail="{not json")], "entries[0].Detail"),
        ([_entry(Detail=[1, 2])], "entries[0].Detail"),
        ([_entry(Resources="arn:x")], "entries[0].Resources"),
        ([_entry(Colour="red")], "entries[0].Colour"),
        ([_entry(Time="yesterday")], "entries[0].time"),
        (["not an object"], "entries[0]"),
    ],
)
async def test_an_invalid_entry_fails_the_task_naming_entry_and_field(
    backend: Backend, clock: FakeClock, entries: list[Any], cause: str
) -> None:
    bus = EventBus(backend, clock=clock)
    execution = await run_async(_task({"Entries": entries}), {}, events=bus)
    assert execution.status == "FAILED"
    assert execution.error == "EventBridge.FailedEntry"
    assert cause in (execution.cause or "")
    assert await _stored(backend) == []  # a bad entry puts nothing, not even the good ones


async def test_an_entry_too_large_for_the_bus_is_a_failed_entry(
    backend: Backend, clock: FakeClock
) -> None:
    bus = EventBus(backend, clock=clock)
    entries = [_entry(EventBusName="other"), _entry(), _entry(Detail={"big": "x" * 300_000})]
    execution = await run_async(_task({"Entries": entries}), {}, events=bus)
    assert execution.error == "EventBridge.FailedEntry"
    assert "entries[2]" in (execution.cause or "") and "the limit is" in (execution.cause or "")
    assert await _stored(backend) == []


@pytest.mark.parametrize("entries", [[], [_entry()] * 11, "x"])
async def test_entries_must_be_a_list_of_one_to_ten(
    backend: Backend, clock: FakeClock, entries: Any
) -> None:
    bus = EventBus(backend, clock=clock)
    execution = await run_async(_task({"Entries": entries}), {}, events=bus)
    assert execution.error == "EventBridge.AmazonEventBridgeException"
    assert "ValidationException" in (execution.cause or "")


async def test_a_failed_entry_can_be_caught(backend: Backend, clock: FakeClock) -> None:
    bus = EventBus(backend, clock=clock)
    definition = _task(
        {"Entries": [{"Source": "s"}]},
        Catch=[{"ErrorEquals": ["EventBridge.FailedEntry"], "Next": "Caught"}],
    )
    del definition["States"]["Put"]["End"]
    definition["States"]["Put"]["Next"] = "Done"
    definition["States"]["Done"] = {"Type": "Succeed"}
    definition["States"]["Caught"] = {"Type": "Pass", "Output": "caught", "End": True}
    execution = await run_async(definition, {}, events=bus)
    assert execution.output == "caught"


async def test_without_a_bus_the_task_fails_saying_what_is_missing() -> None:
    execution = await run_async(_task({"Entries": [_entry()]}), {})
    assert execution.error == "States.Runtime"
    assert "events=" in (execution.cause or "")
    assert "event bus" in (execution.cause or "")


async def test_with_only_other_clients_the_bus_is_still_reported_missing(
    backend: Backend,
) -> None:
    execution = await run_async(_task({"Entries": [_entry()]}), {}, tables={})
    assert execution.error == "States.Runtime"
    assert "events=" in (execution.cause or "")


async def test_a_function_registered_under_the_arn_stands_in(backend: Backend) -> None:
    seen: list[Any] = []

    def fake(payload: Any, context: Any) -> Any:
        seen.append(payload)
        return {"Entries": [{"EventId": "x"}], "FailedEntryCount": 0}

    bus = EventBus(backend)
    execution = await run_async(
        _task({"Entries": [_entry()]}), {}, events=bus, functions={PUT: fake}
    )
    assert execution.output["Entries"] == [{"EventId": "x"}]
    assert seen == [{"Entries": [_entry()]}]
