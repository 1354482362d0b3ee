"""``context.events`` in ``isolation="process"`` workers: proxied, authorised, delivered."""

from __future__ import annotations

import os

import pytest

from reflow.app import FunctionConfig
from reflow.backends import memory_backend
from reflow.errors import HandlerError, PermissionDeniedError
from reflow.events.service import EventsService
from reflow.functions import Runtime
from tests.functional.events import process_app
from tests.functional.events.helpers import eventually
from tests.functional.events.process_app import app


@pytest.fixture(autouse=True)
def _clear_seen() -> None:
    process_app.seen.clear()


async def test_a_sync_worker_puts_events_that_another_rule_delivers() -> None:
    backend = memory_backend()
    async with Runtime(app, backend=backend, serve=False) as runtime:
        events = EventsService(app, backend, runtime=runtime)
        await events.start()
        try:
            result = await runtime.invoke("announce", {"n": 1})
            await eventually(lambda: len(process_app.seen) == 2)
        finally:
            await events.stop()
    assert result["pid"] != os.getpid()  # the put really came from a worker process
    delivered = {seen["event"]["id"]: seen["event"] for seen in process_app.seen}
    assert sorted(delivered) == sorted(result["ids"])
    assert sorted(e["detail"]["n"] for e in delivered.values()) == [1, 2]
    assert {e["detail-type"] for e in delivered.values()} == {"Announced"}
    assert {seen["pid"] for seen in process_app.seen} == {os.getpid()}


async def test_an_async_worker_awaits_put_on_a_named_bus() -> None:
    backend = memory_backend()
    async with Runtime(app, backend=backend, serve=False) as runtime:
        events = EventsService(app, backend, runtime=runtime)
        await events.start()
        try:
            result = await runtime.invoke("announce_async", {"n": 7})
            await eventually(lambda: len(process_app.seen) == 1)
        finally:
            await events.stop()
    [seen] = process_app.seen
    assert [seen["event"]["id"]] == result["ids"]
    assert seen["event"]["detail-type"] == "Audited"


async def test_the_runtime_authorises_events_put_on_the_bus_for_worker_calls() -> None:
    asked: list[tuple[str, str, str]] = []

    def default_bus_only(function: FunctionConfig, action: str, resource: str) -> None:
        asked.append((function.name, action, resource))
        if resource != "bus/default":
            raise PermissionDeniedError(function.name, action, resource)

    backend = memory_backend()
    async with Runtime(app, backend=backend, authorizer=default_bus_only, serve=False) as runtime:
        events = EventsService(app, backend, runtime=runtime)
        await events.start()
        try:
            with pytest.raises(HandlerError) as caught:
                await runtime.invoke("announce_async", {"n": 1})
        finally:
            await events.stop()
    assert caught.value.error_type == "PermissionDeniedError"
    assert ("announce_async", "events:put", "bus/audit") in asked
    assert await backend.log.length("events.bus.audit") == 0


async def test_an_invalid_event_from_a_worker_raises_invalid_event_error_there() -> None:
    backend = memory_backend()
    async with Runtime(app, backend=backend, serve=False) as runtime:
        events = EventsService(app, backend, runtime=runtime)
        await events.start()
        try:
            result = await runtime.invoke("announce_bad", {})
        finally:
            await events.stop()
    assert result["type"] == "InvalidEventError"
    assert "entries[0].type" in result["message"]


async def test_without_an_events_service_worker_puts_are_not_available() -> None:
    async with Runtime(app, backend=memory_backend(), serve=False) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("announce", {"n": 1})
    assert caught.value.error_type == "NotAvailableError"
    assert "events" in caught.value.error_message
