"""Context: Lambda's attributes, the remaining time, and the single door to the platform."""

from __future__ import annotations

import asyncio

import pytest

from reflow import App, Context
from reflow.app import FunctionConfig
from reflow.backends import memory_backend
from reflow.errors import NotAvailableError, PermissionDeniedError
from reflow.functions import register_client
from reflow.functions.context import CLIENT_NAMES, _factories
from reflow.testing.clock import FakeClock

app = App("ctx", root=".")


@app.function(timeout=30, memory_mb=512, permissions=["blobs:write:site/*"])
def transcode(event: object, context: Context) -> None:
    """A function with declared permissions."""


CONFIG: FunctionConfig = app.functions["transcode"]


def test_context_carries_lambda_attributes() -> None:
    context = Context(CONFIG, request_id="r-1", region="eu-west-1")
    assert context.function_name == "transcode"
    assert context.function_version == "$LATEST"
    assert context.memory_limit_in_mb == 512
    assert context.aws_request_id == context.request_id == "r-1"
    assert context.invoked_function_arn == (
        "arn:reflow:lambda:eu-west-1:000000000000:function:transcode"
    )
    assert context.log_group_name == "/reflow/functions/transcode"
    assert "[$LATEST]" in context.log_stream_name
    assert context.identity is None and context.client_context is None
    assert context.logger.logger.name == "reflow.functions.transcode"


def test_request_ids_are_unique_when_not_given() -> None:
    assert Context(CONFIG).aws_request_id != Context(CONFIG).aws_request_id


def test_remaining_time_counts_down_on_the_injected_clock() -> None:
    clock = FakeClock()
    context = Context(CONFIG, clock=clock)
    assert context.get_remaining_time_in_millis() == 30_000
    clock.advance(29.5)
    assert context.get_remaining_time_in_millis() == 500
    clock.advance(10)
    assert context.get_remaining_time_in_millis() == 0


@pytest.mark.parametrize("client", ["tables", "events", "cache", "flows", "limits"])
def test_clients_whose_subsystem_has_not_landed_raise_not_available(client: str) -> None:
    with pytest.raises(NotAvailableError) as caught:
        getattr(Context(CONFIG), client)
    assert caught.value.client == client
    assert f"context.{client} is not available" in str(caught.value)


def test_blobs_without_a_backend_is_not_available() -> None:
    with pytest.raises(NotAvailableError, match="context.blobs"):
        _ = Context(CONFIG).blobs


def test_a_context_marked_unavailable_refuses_every_client() -> None:
    context = Context(CONFIG, blobs=memory_backend().blobs, unavailable="process isolation")
    for client in CLIENT_NAMES:
        with pytest.raises(NotAvailableError, match="process isolation"):
            getattr(context, client)


async def test_every_blob_call_passes_the_hook_with_declared_permissions() -> None:
    calls: list[tuple[str, tuple[str, ...], str, str]] = []

    def recording(function: FunctionConfig, action: str, resource: str) -> None:
        calls.append((function.name, function.permissions, action, resource))

    backend = memory_backend()
    context = Context(CONFIG, authorizer=recording, blobs=backend.blobs)
    await context.blobs.put("site/a.html", b"<p>", content_type="text/html")
    blob = await context.blobs.get("site/a.html")
    assert blob is not None and blob.data == b"<p>"
    assert [i.key for i in await context.blobs.list("site/")] == ["site/a.html"]
    assert await context.blobs.delete("site/a.html")
    declared = ("blobs:write:site/*",)
    assert calls == [
        ("transcode", declared, "blobs:write", "site/a.html"),
        ("transcode", declared, "blobs:read", "site/a.html"),
        ("transcode", declared, "blobs:list", "site/"),
        ("transcode", declared, "blobs:delete", "site/a.html"),
    ]


async def test_a_refusing_hook_stops_the_call_before_the_store_is_touched() -> None:
    def deny(function: FunctionConfig, action: str, resource: str) -> None:
        raise PermissionDeniedError(function.name, action, resource)

    backend = memory_backend()
    context = Context(CONFIG, authorizer=deny, blobs=backend.blobs)
    with pytest.raises(PermissionDeniedError) as caught:
        await context.blobs.put("other/x", b"1")
    assert (caught.value.action, caught.value.resource) == ("blobs:write", "other/x")
    assert await backend.blobs.head("other/x") is None


async def test_synchronous_handlers_reach_blobs_from_their_thread() -> None:
    backend = memory_backend()
    context = Context(CONFIG, blobs=backend.blobs, loop=asyncio.get_running_loop())

    def handler() -> bytes:
        context.blobs.sync.put("site/b", b"xyz")
        blob = context.blobs.sync.get("site/b")
        assert blob is not None
        return blob.data

    assert await asyncio.to_thread(handler) == b"xyz"


async def test_sync_blobs_on_the_event_loop_itself_is_refused_not_deadlocked() -> None:
    context = Context(CONFIG, blobs=memory_backend().blobs, loop=asyncio.get_running_loop())
    with pytest.raises(NotAvailableError, match="must await"):
        context.blobs.sync.head("x")


def test_registered_client_factories_serve_their_client() -> None:
    sentinel = object()
    register_client("tables", lambda context: sentinel)
    try:
        assert Context(CONFIG).tables is sentinel
    finally:
        _factories.pop("tables")
    with pytest.raises(ValueError, match="unknown platform client"):
        register_client("nope", lambda context: None)
