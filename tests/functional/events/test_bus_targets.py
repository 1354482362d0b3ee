"""Targets other than functions: HTTP webhooks, another bus, flows (not yet startable)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator

import pytest

from reflow.backends import Backend, memory_backend
from reflow.events.bus import EventBus
from reflow.events.delivery import RetryPolicy, Rule
from reflow.events.model import Event
from reflow.events.targets import BusTarget, CallableTarget, FlowTarget, WebhookTarget
from reflow.events.transform import rule_input
from reflow.testing.clock import FakeClock
from tests.functional.events.helpers import Recorder, eventually

PATTERN = {"source": ["cms"]}


class Receiver:
    """A tiny HTTP server answering each POST with the next status of ``statuses``."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], object]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook?x=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        headers["request-line"] = lines[0]
        self.requests.append((headers, json.loads(body)))
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    backend = memory_backend(FakeClock(autojump=True))
    yield backend
    await backend.close()


def make_bus(backend: Backend, *rules: Rule) -> EventBus:
    bus = EventBus(backend, rng=random.Random(1))
    for rule in rules:
        bus.add_rule(rule)
    return bus


async def test_webhook_gets_json_post_and_a_5xx_is_retried_with_same_event_id(
    backend: Backend,
) -> None:
    async with Receiver([503, 200]) as receiver:
        rule = Rule(
            "hook",
            PATTERN,
            WebhookTarget(receiver.url, timeout=5.0),
            input=rule_input("$.detail", None),
        )
        bus = make_bus(backend, rule)
        await bus.start()
        try:
            [event_id] = await bus.put([Event(source="cms", type="Saved", data={"id": 1})])
            await eventually(lambda: len(receiver.requests) == 2)
        finally:
            await bus.stop()
    for headers, body in receiver.requests:
        assert headers["request-line"] == "POST /hook?x=1 HTTP/1.1"
        assert headers["content-type"] == "application/json"
        assert headers["x-reflow-event-id"] == event_id
        assert body == {"id": 1}
    assert await bus.dead_letters.list() == []


async def test_webhook_refusing_connections_ends_in_the_dead_letter_queue(
    backend: Backend,
) -> None:
    async with Receiver([200]) as receiver:
        url = receiver.url  # the port is closed once the server stops
    rule = Rule("hook", PATTERN, WebhookTarget(url), retry=RetryPolicy(max_attempts=2))
    bus = make_bus(backend, rule)
    await bus.start()
    try:
        await bus.put([Event(source="cms", type="Saved")])
        letters = []
        for _ in range(500):
            letters = await bus.dead_letters.list("hook")
            if letters:
                break
            await asyncio.sleep(0.01)
    finally:
        await bus.stop()
    [letter] = letters
    assert letter.attempts == 2
    assert letter.error["type"] == "DeliveryFailedError"
    assert "cannot connect" in letter.error["message"]


async def test_bus_target_forwards_the_event_with_its_id_to_another_bus(
    backend: Backend,
) -> None:
    recorder = Recorder()
    bus = EventBus(backend)
    bus.add_rule(Rule("forward", PATTERN, BusTarget(bus, "audit")))
    bus.add_rule(Rule("audited", PATTERN, CallableTarget("audited", recorder), bus="audit"))
    await bus.start()
    try:
        [event_id] = await bus.put([Event(source="cms", type="Saved")])
        await eventually(lambda: len(recorder.calls) == 1)
    finally:
        await bus.stop()
    assert recorder.calls[0][0] == event_id
    assert bus.match(Event(source="cms", type="Saved"), "audit") == ["audited"]


async def test_flow_target_without_a_start_api_dead_letters_with_not_available(
    backend: Backend,
) -> None:
    rule = Rule("publish", PATTERN, FlowTarget("publish"), retry=RetryPolicy(max_attempts=1))
    bus = make_bus(backend, rule)
    await bus.start()
    try:
        await bus.put([Event(source="cms", type="Saved")])
        letters = []
        for _ in range(500):
            letters = await bus.dead_letters.list("publish")
            if letters:
                break
            await asyncio.sleep(0.01)
    finally:
        await bus.stop()
    assert letters[0].error["type"] == "NotAvailableError"


async def test_flow_target_with_a_start_function_starts_one_execution_per_event(
    backend: Backend,
) -> None:
    started: list[tuple[str, object, str]] = []

    async def start(flow: str, payload: object, name: str) -> None:
        started.append((flow, payload, name))

    rule = Rule(
        "publish", PATTERN, FlowTarget("publish", start), input=rule_input("$.detail", None)
    )
    bus = make_bus(backend, rule)
    await bus.start()
    try:
        [event_id] = await bus.put([Event(source="cms", type="Saved", data={"a": 1})])
        await eventually(lambda: len(started) == 1)
    finally:
        await bus.stop()
    assert started == [("publish", {"a": 1}, f"publish:{event_id}")]  # <rule>:<event id>
