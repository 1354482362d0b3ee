"""``context.limits`` passes every call through the authorisation hook, as the other clients do.

A rate-limit hit is ``limits:hit`` on ``limit/<key>``; the counters are
``limits:write`` (``incr``, ``decrement_if``) and ``limits:read``
(``counter``) on ``counter/<key>``. The hook sees the calling function's
declared ``permissions`` — from a handler's context, through the functions
runtime, and from an edge hook's context.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from reflow.app import App, FunctionConfig
from reflow.backends import memory_backend
from reflow.edge.service import hooks_from_app
from reflow.edge.triggers import Hook, request_to_cf
from reflow.errors import HandlerError, HookError, PermissionDeniedError
from reflow.functions import Runtime
from reflow.functions.context import Context
from reflow.state.service import StateService

Asked = list[tuple[str, tuple[str, ...], str, str]]


@pytest.fixture(autouse=True)
def restore_clients() -> Iterator[None]:
    from reflow.functions import context as context_module

    before = dict(context_module._factories)  # install() registers globally
    yield
    context_module._factories.clear()
    context_module._factories.update(before)


def limited_app() -> App:
    app = App("limited")
    app.table("articles")

    @app.function(permissions=["limits:hit:limit/ip:*", "tables:read:articles"])
    async def throttle(event: dict[str, Any], context: Any) -> Any:
        decision = await context.limits.hit(f"ip:{event['ip']}", rate="2/minute")
        return {"allowed": decision.allowed, "remaining": decision.remaining}

    @app.function(permissions=["limits:write:counter/stock:*"])
    async def reserve(event: dict[str, Any], context: Any) -> Any:
        return await context.limits.decrement_if("stock:sku-1", 1)

    return app


@pytest.fixture
async def service() -> AsyncIterator[StateService]:
    backend = memory_backend()
    state = StateService(limited_app(), backend)
    state.install()
    try:
        yield state
    finally:
        await state.close()
        await backend.close()


def denying_limits(asked: Asked) -> Any:
    """An enforcing hook that refuses every ``limits:*`` and ``tables:write`` call."""

    def hook(function: FunctionConfig, action: str, resource: str) -> None:
        asked.append((function.name, function.permissions, action, resource))
        if action.startswith("limits:") or action == "tables:write":
            raise PermissionDeniedError(function.name, action, resource)

    return hook


def recording(asked: Asked) -> Any:
    """An allowing hook that records what it was asked."""

    def hook(function: FunctionConfig, action: str, resource: str) -> None:
        asked.append((function.name, function.permissions, action, resource))

    return hook


async def test_a_denying_hook_refuses_limits_calls_as_it_refuses_tables(
    service: StateService,
) -> None:
    asked: Asked = []
    app_function = service._app.functions["throttle"]
    context = Context(app_function, authorizer=denying_limits(asked))
    with pytest.raises(PermissionDeniedError) as from_tables:
        await context.tables["articles"].put({"id": "a"})
    with pytest.raises(PermissionDeniedError) as from_limits:
        await context.limits.hit("ip:1.2.3.4", rate="1/minute")
    for call in (
        context.limits.incr("stock:sku-1", 5),
        context.limits.decrement_if("stock:sku-1", 1),
        context.limits.counter("stock:sku-1"),
    ):
        with pytest.raises(PermissionDeniedError):
            await call
    # The same error type and message shape as the tables' refusal.
    assert type(from_limits.value) is type(from_tables.value)
    assert str(from_limits.value) == (
        "function 'throttle' may not limits:hit 'limit/ip:1.2.3.4': "
        "no declared permission covers it"
    )
    # Refused before the backend was touched: the limit is unspent, the counter unset.
    assert (await service.limits.hit("ip:1.2.3.4", "1/minute")).allowed
    assert await service.counters.get("stock:sku-1") == 0
    assert [(action, resource) for _, _, action, resource in asked] == [
        ("tables:write", "articles"),
        ("limits:hit", "limit/ip:1.2.3.4"),
        ("limits:write", "counter/stock:sku-1"),
        ("limits:write", "counter/stock:sku-1"),
        ("limits:read", "counter/stock:sku-1"),
    ]


async def test_an_allowing_hook_sees_each_call_with_its_action_resource_and_permissions(
    service: StateService,
) -> None:
    asked: Asked = []
    hook = recording(asked)
    throttle = Context(service._app.functions["throttle"], authorizer=hook)
    reserve = Context(service._app.functions["reserve"], authorizer=hook)
    assert (await throttle.limits.hit("ip:9", rate="2/minute", cost=2)).remaining == 0
    assert await reserve.limits.incr("stock:sku-1", 3) == 3
    assert await reserve.limits.decrement_if("stock:sku-1", 2, minimum=1) == 1
    assert await reserve.limits.counter("stock:sku-1") == 1
    # Each context authorises against its own function (no client shared between them).
    assert asked == [
        ("throttle", ("limits:hit:limit/ip:*", "tables:read:articles"), "limits:hit", "limit/ip:9"),
        ("reserve", ("limits:write:counter/stock:*",), "limits:write", "counter/stock:sku-1"),
        ("reserve", ("limits:write:counter/stock:*",), "limits:write", "counter/stock:sku-1"),
        ("reserve", ("limits:write:counter/stock:*",), "limits:read", "counter/stock:sku-1"),
    ]


async def test_the_runtime_passes_an_inline_handlers_limits_calls_through_its_hook(
    service: StateService,
) -> None:
    asked: Asked = []
    app = service._app
    async with Runtime(app, authorizer=recording(asked), serve=False) as runtime:
        first = await runtime.invoke("throttle", {"ip": "10.0.0.1"})
    assert first == {"allowed": True, "remaining": 1}
    assert asked == [
        (
            "throttle",
            ("limits:hit:limit/ip:*", "tables:read:articles"),
            "limits:hit",
            "limit/ip:10.0.0.1",
        )
    ]

    denied: Asked = []
    async with Runtime(app, authorizer=denying_limits(denied), serve=False) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("reserve", {})
    assert caught.value.error_type == "PermissionDeniedError"
    assert "may not limits:write 'counter/stock:sku-1'" in caught.value.error_message
    assert await service.counters.get("stock:sku-1") == 0


def _viewer_event(hook: Hook) -> dict[str, Any]:
    return hook.event(request_to_cf("GET", "/", "", [("host", "example")], "192.0.2.7"))


async def test_an_edge_hooks_context_limits_passes_the_runtimes_hook(
    service: StateService,
) -> None:
    app = App("edgy")

    @app.edge("viewer-request", path="/*")
    async def gate(event: dict[str, Any], context: Any) -> Any:
        request = event["Records"][0]["cf"]["request"]
        decision = await context.limits.hit(f"ip:{request['clientIp']}", rate="5/minute")
        return request if decision.allowed else {"status": "429"}

    asked: Asked = []
    async with Runtime(app, authorizer=recording(asked), serve=False) as runtime:
        [hook] = hooks_from_app(app, runtime)
        result = await hook.call(_viewer_event(hook))
    assert result["uri"] == "/"
    assert asked == [("gate", (), "limits:hit", "limit/ip:192.0.2.7")]

    denied: Asked = []
    async with Runtime(app, authorizer=denying_limits(denied), serve=False) as runtime:
        [hook] = hooks_from_app(app, runtime)
        with pytest.raises(HookError) as caught:
            await hook.call(_viewer_event(hook))
    assert isinstance(caught.value.__cause__, PermissionDeniedError)
    assert denied == [("gate", (), "limits:hit", "limit/ip:192.0.2.7")]
    # Only the allowed call spent the limit.
    assert (await service.limits.hit("ip:192.0.2.7", "5/minute")).remaining == 3


async def test_a_hook_built_without_an_authorizer_allows_limits(service: StateService) -> None:
    async def gate(event: dict[str, Any], context: Any) -> Any:
        return (await context.limits.hit("k", rate="1/minute")).allowed

    hook = Hook("gate", "viewer-request", "/*", gate)
    assert await hook.call(_viewer_event(hook)) is True
    with_hook = Hook(
        "gate",
        "viewer-request",
        "/*",
        gate,
        authorize=functools.partial(denying_limits([]), FunctionConfig("gate", gate)),
    )
    with pytest.raises(HookError, match="PermissionDeniedError"):
        await with_hook.call(_viewer_event(with_hook))
