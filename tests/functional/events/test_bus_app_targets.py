"""``App.rule`` targets (flow, bus, webhook, function) running under the Platform."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow import App, Event
from reflow.backends import memory_backend
from reflow.config import Settings
from reflow.errors import ExecutionAlreadyExistsError, NotAvailableError, RegistrationError
from reflow.events.delivery import Delivery
from reflow.events.service import EventsService, flow_starter
from reflow.events.targets import FlowTarget, execution_name
from reflow.platform import Platform
from tests.functional.events.helpers import eventually

SAVED = {"source": "cms", "detail-type": "Saved", "detail": {"title": "hello"}}


async def started(app: App, tmp_path: Path) -> Platform:
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(app, settings, backend=memory_backend())
    await platform.start(admin=False)
    return platform


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
    app.rule(
        "publish-on-save",
        {"source": ["cms"], "detail-type": ["Saved"]},
        target="flow:publish",
        input_path="$.detail",
    )
    return app


async def test_a_rule_targeting_a_flow_starts_an_execution_that_succeeds(tmp_path: Path) -> None:
    app = publishing_app()
    platform = await started(app, tmp_path)
    try:
        [event_id] = await app.events.put(SAVED)
        flows: Any = platform.service("flows")
        described: dict[str, Any] = {}

        async def finished() -> bool:
            nonlocal described
            try:
                described = await flows.flows.describe(f"publish-on-save:{event_id}")
            except Exception:
                return False
            return bool(described["status"] == "SUCCEEDED")

        for _ in range(500):
            if await finished():
                break
            await asyncio.sleep(0.02)
    finally:
        await platform.stop()
    assert described["status"] == "SUCCEEDED", described
    # Named after the rule and the event: redeliveries de-duplicate.
    assert described["name"] == f"publish-on-save:{event_id}"
    assert described["input"] == {"title": "hello"}
    assert described["output"] == {"title": "HELLO"}


class _Flows:
    """A stand-in flows service whose executions already exist (a redelivery)."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.started: list[tuple[str, Any, str | None]] = []

    async def start_execution(
        self, flow: str, input: Any = None, *, name: str | None = None
    ) -> Any:
        self.started.append((flow, input, name))
        if self.error is not None:
            raise self.error
        return {"name": name}


class _Service:
    def __init__(self, flows: _Flows) -> None:
        self.flows = flows


async def test_flow_starter_treats_an_existing_execution_as_delivered() -> None:
    flows = _Flows(ExecutionAlreadyExistsError("e-1"))
    start = flow_starter(lambda: _Service(flows))
    await start("publish", {"a": 1}, "e-1")  # does not raise: the execution exists
    assert flows.started == [("publish", {"a": 1}, "e-1")]


async def test_flow_starter_without_a_running_flows_service_fails_to_be_retried() -> None:
    start = flow_starter(lambda: None)
    with pytest.raises(NotAvailableError, match="flows service is not running"):
        await start("publish", {}, "e-1")


async def test_a_rule_targeting_another_bus_forwards_the_event_with_its_id(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    app = App("news")
    app.rule("to-audit", {"source": ["cms"]}, target="bus:audit")

    @app.on({"source": ["cms"]}, bus="audit", name="audit-log")
    def audit(event: dict[str, Any], context: Any) -> None:
        seen.append((event["id"], context.aws_request_id))

    platform = await started(app, tmp_path)
    try:
        [event_id] = await app.events.put(SAVED)
        await eventually(lambda: len(seen) == 1)
    finally:
        await platform.stop()
    assert seen == [(event_id, event_id)]


async def test_a_rule_targeting_a_function_by_name_invokes_it(tmp_path: Path) -> None:
    seen: list[Any] = []
    app = App("news")

    @app.function()
    def render(event: Any, context: Any) -> None:
        seen.append(event)

    app.rule(
        "render-saved",
        {"detail-type": ["Saved"]},
        target="function:render",
        input_template={"InputPathsMap": {"t": "$.detail.title"}, "InputTemplate": '{"t": <t>}'},
    )
    platform = await started(app, tmp_path)
    try:
        await app.events.put(SAVED)
        await eventually(lambda: len(seen) == 1)
    finally:
        await platform.stop()
    assert seen == [{"t": "hello"}]


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny HTTP endpoint recording each request's headers and JSON body."""
    received: list[dict[str, Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        body = await reader.readexactly(int(headers["content-length"]))
        received.append({"line": lines[0], "headers": headers, "body": json.loads(body)})
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hooks/cms?x=1", received
    finally:
        server.close()
        await server.wait_closed()


async def test_a_rule_targeting_a_url_posts_the_input_with_the_event_id(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    app = App("news")
    app.rule("notify", {"source": ["cms"]}, target=url, input_path="$.detail")
    platform = await started(app, tmp_path)
    try:
        [event_id] = await app.events.put(SAVED)
        await eventually(lambda: len(received) == 1)
    finally:
        await platform.stop()
    [request] = received
    assert request["line"] == "POST /hooks/cms?x=1 HTTP/1.1"
    assert request["headers"]["x-reflow-event-id"] == event_id
    assert request["headers"]["x-reflow-rule"] == "notify"
    assert request["body"] == {"title": "hello"}


def test_a_rule_naming_an_unregistered_flow_is_refused_when_the_bus_is_built() -> None:
    app = App("news")
    app.rule("orphan", {"source": ["cms"]}, target="flow:missing")
    with pytest.raises(RegistrationError) as caught:
        EventsService(app, memory_backend())
    assert caught.value.name == "orphan"
    assert "flow 'missing' is not registered" in str(caught.value)


def test_a_rule_naming_an_unregistered_function_is_refused_when_the_bus_is_built() -> None:
    app = App("news")
    app.rule("orphan", {"source": ["cms"]}, target="function:missing")
    with pytest.raises(RegistrationError, match="function 'missing' is not registered"):
        EventsService(app, memory_backend())


def _delivery(event_id: str, replay: str | None = None, rule: str = "publish-on-save") -> Delivery:
    event = Event(source="cms", type="Saved", data={}, id=event_id)
    return Delivery(event, rule, 1, 0.0, replay)


async def test_flow_executions_are_named_after_the_rule_the_event_and_the_replay() -> None:
    names: list[str] = []

    async def start(flow: str, payload: Any, name: str) -> None:
        names.append(name)

    target = FlowTarget("publish", start)
    await target.deliver({}, _delivery("e-1"))
    await target.deliver({}, _delivery("e-1"))  # a redelivery: the same name
    await target.deliver({}, _delivery("e-1", rule="audit"))  # another rule: its own
    await target.deliver({}, _delivery("e-1", replay="fix-1"))  # a replay: its own
    assert names == [
        "publish-on-save:e-1",
        "publish-on-save:e-1",
        "audit:e-1",
        "fix-1:publish-on-save:e-1",
    ]


def test_an_event_id_that_is_no_execution_name_maps_to_a_stable_digest() -> None:
    odd = "urn:cms/article 7?" + "x" * 100
    name = execution_name(odd, rule="r")
    assert name == execution_name(odd, rule="r") and name != execution_name(odd + "y", rule="r")
    assert name != execution_name(odd, rule="s") != execution_name(odd, rule="r", replay="p")
    assert name.startswith("event-") and len(name) <= 80
    assert execution_name("3f2a-ok.id:1", rule="r") == "r:3f2a-ok.id:1"


def test_names_that_would_pass_80_characters_or_be_ambiguous_map_to_digests() -> None:
    long_rule = "r" * 60
    name = execution_name("0123456789abcdef0123456789", rule=long_rule)
    assert name.startswith("event-") and len(name) <= 80
    # A replay name holding ":" could read as another rule: digested instead.
    assert execution_name("e", rule="b", replay="a:") != execution_name("e", rule=":b", replay="a")
    assert execution_name("e", rule="b", replay="a:").startswith("event-")
