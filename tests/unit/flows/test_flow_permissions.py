"""``app.flow(..., permissions=[...])``: declared like a function's, seen by the hook.

A flow's task integrations run as the function ``flow:NAME``; the permissions
the flow declares ride on that function, so the authorisation hook sees them
exactly as it sees a handler's (the end-to-end check, with the events and
tables integrations, is in tests/functional/flows/test_integrations_server.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from reflow import App
from reflow.app import FunctionConfig
from reflow.backends import memory_backend
from reflow.errors import RegistrationError
from reflow.flows.server import context_clients
from reflow.flows.tasks import TaskContext
from reflow.functions.runtime import Runtime
from reflow.testing import FakeClock

PASS = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}


def test_permissions_are_declared_as_a_functions_are() -> None:
    app = App("perms")
    config = app.flow("publish", PASS, permissions=["tables:write:articles", "events:put"])
    assert config.permissions == ("tables:write:articles", "events:put")
    assert app.flows["publish"].permissions == config.permissions
    assert app.flow("plain", PASS).permissions == ()


@pytest.mark.parametrize("bad", [["tables"], [""], [42], "tables:write"])
def test_a_permission_without_service_and_action_is_refused_like_a_functions(bad: Any) -> None:
    app = App("perms")
    with pytest.raises(RegistrationError) as flow_error:
        app.flow("f", PASS, permissions=bad)
    with pytest.raises(RegistrationError) as function_error:
        app.function(lambda event, context: None, name="g", permissions=bad)
    assert "is not of the form 'service:action[:resource]'" in str(flow_error.value)
    # The same message, naming the flow instead of the function.
    assert flow_error.value.name == "f" and function_error.value.name == "g"
    assert flow_error.value.problem == function_error.value.problem
    assert "f" not in app.flows


async def test_the_hook_sees_the_flows_permissions_on_its_function() -> None:
    app = App("perms")
    app.flow("publish", PASS, permissions=["blobs:write:site/*"])
    app.flow("quiet", PASS)
    clock = FakeClock()
    backend = memory_backend(clock)
    seen: list[tuple[str, tuple[str, ...], str, str]] = []

    def hook(function: FunctionConfig, action: str, resource: str) -> None:
        seen.append((function.name, function.permissions, action, resource))

    runtime = Runtime(app, backend=backend, clock=clock, authorizer=hook, serve=False)
    source = context_clients(runtime)
    try:
        for flow in ("publish", "quiet"):
            task = TaskContext(
                execution_name="run-1",
                execution_id=f"arn:aws:states:local:000000000000:execution:{flow}:run-1",
                state_name="Write",
                attempt=0,
                context_object={},
            )
            blobs = await source("blobs", task)
            await blobs.put("site/index.html", b"hi")
    finally:
        await runtime.stop()
        await backend.close()
    assert seen == [
        ("flow:publish", ("blobs:write:site/*",), "blobs:write", "site/index.html"),
        ("flow:quiet", (), "blobs:write", "site/index.html"),
    ]
