"""``context.limits`` in ``isolation="process"`` workers: proxied, and authorised in the runtime."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reflow.app import FunctionConfig
from reflow.backends import memory_backend
from reflow.errors import HandlerError, PermissionDeniedError
from reflow.functions import Runtime
from reflow.state.service import StateService
from tests.functional.state.limits_process_app import app


@pytest.fixture(autouse=True)
def restore_clients() -> Iterator[None]:
    from reflow.functions import context as context_module

    before = dict(context_module._factories)  # install() registers globally
    yield
    context_module._factories.clear()
    context_module._factories.update(before)


async def test_worker_limits_calls_pass_the_runtimes_hook_with_the_functions_permissions() -> None:
    asked: list[tuple[str, tuple[str, ...], str, str]] = []

    def counters_refused(function: FunctionConfig, action: str, resource: str) -> None:
        asked.append((function.name, function.permissions, action, resource))
        if resource.startswith("counter/"):
            raise PermissionDeniedError(function.name, action, resource)

    backend = memory_backend()
    state = StateService(app, backend)
    state.install()
    try:
        async with Runtime(
            app, backend=backend, authorizer=counters_refused, serve=False
        ) as runtime:
            allowed = await runtime.invoke("throttle", {"ip": "10.1.1.1"})
            with pytest.raises(HandlerError) as caught:
                await runtime.invoke("reserve", {"n": 4})
        assert allowed == {"allowed": True, "remaining": 1}
        assert caught.value.error_type == "PermissionDeniedError"
        assert "may not limits:write 'counter/stock:sku-1'" in caught.value.error_message
        assert asked == [
            ("throttle", ("limits:hit:limit/ip:*",), "limits:hit", "limit/ip:10.1.1.1"),
            ("reserve", ("limits:write:counter/stock:*",), "limits:write", "counter/stock:sku-1"),
        ]
        assert await state.counters.get("stock:sku-1") == 0  # refused before the backend
        assert (await state.limits.hit("ip:10.1.1.1", "2/minute")).remaining == 0
    finally:
        await state.close()
        await backend.close()
