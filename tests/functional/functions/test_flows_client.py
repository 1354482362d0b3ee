"""``context.flows`` from handlers, inline and in ``process`` workers, over SQLite.

A functions runtime and a :class:`FlowsService` share one SQLite backend, as
``reflow run`` wires them; the handlers of ``clients_app`` start real
executions, answer callback tasks and steer executions through
``context.flows``, and every call passes the runtime's authorisation hook.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from reflow.app import FunctionConfig
from reflow.backends import open_backend
from reflow.config import Settings
from reflow.errors import HandlerError, PermissionDeniedError
from reflow.flows.server import FlowsService
from reflow.functions import Runtime
from reflow.functions.context import Authorizer, allow_all, registered_client
from reflow.platform import Platform
from tests.functional.functions.clients_app import app


@asynccontextmanager
async def running(
    tmp_path: Path, authorizer: Authorizer = allow_all
) -> AsyncIterator[tuple[Runtime, FlowsService]]:
    backend = await open_backend(f"sqlite:///{tmp_path / 'flows.db'}", data_dir=tmp_path)
    runtime = Runtime(app, backend=backend, authorizer=authorizer, serve=False)
    flows = FlowsService(app, backend, runtime=runtime, workers=2)
    try:
        await runtime.start()
        await flows.start()
        yield runtime, flows
    finally:
        await flows.stop()
        await runtime.stop()
        await backend.close()


async def settled(flows: FlowsService, name: str) -> dict[str, Any]:
    """``name``'s description once it has ended or waits (at most 10 s)."""
    for _ in range(500):
        described = await flows.flows.describe(name)
        if described["status"] != "RUNNING" or described["waiting_for"] in ("token", "timer"):
            return described
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} still running: {described}")


async def finished(flows: FlowsService, name: str) -> dict[str, Any]:
    """``name``'s description once it has ended (at most 10 s).

    Not :func:`settled`: a callback task waits for its token before (or
    while) the function it invoked answers, so "waiting" is not the end.
    """
    for _ in range(500):
        described = await flows.flows.describe(name)
        if described["status"] != "RUNNING":
            return described
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} still running: {described}")


async def failure(runtime: Runtime, function: str, event: Any) -> HandlerError:
    with pytest.raises(HandlerError) as caught:
        await runtime.invoke(function, event)
    return caught.value


@pytest.mark.parametrize(
    "function", ["start_inline", "start_inline_async", "start_process", "start_process_async"]
)
async def test_a_handler_starts_a_real_execution_that_runs_to_its_end(
    tmp_path: Path, function: str
) -> None:
    async with running(tmp_path) as (runtime, flows):
        name = f"g-{function.replace('_', '-')}"
        started = await runtime.invoke(
            function, {"flow": "greet", "input": {"text": function}, "name": name}
        )
        assert started["name"] == name and started["flow"] == "greet"
        assert started["status"] == "RUNNING"
        assert started["id"].endswith(f":execution:greet:{name}")
        assert started["input"] == {"text": function}
        ended = await settled(flows, name)
    assert ended["status"] == "SUCCEEDED"
    assert ended["output"] == {"text": function.upper()}


@pytest.mark.parametrize("function", ["call_inline", "call_process"])
async def test_starting_again_is_idempotent_only_for_the_same_input(
    tmp_path: Path, function: str
) -> None:
    async with running(tmp_path) as (runtime, flows):
        first = await runtime.invoke(
            function, {"op": "start_execution", "args": ["parked", {"n": 1}, "p1"]}
        )
        again = await runtime.invoke(
            function, {"op": "start_execution", "args": ["parked", {"n": 1}, "p1"]}
        )
        other = await failure(
            runtime, function, {"op": "start_execution", "args": ["parked", {"n": 2}, "p1"]}
        )
        listed = await flows.flows.list_executions(flow="parked")
    # The running execution itself (it may have moved on meanwhile).
    keys = ("name", "id", "flow", "start_time", "input")
    assert [again[key] for key in keys] == [first[key] for key in keys]
    # The same class in a worker as inline: a handler can catch it by type.
    assert other.error_type == "ExecutionAlreadyExistsError"
    assert "'p1' already exists" in other.error_message
    assert [row["name"] for row in listed] == ["p1"]


@pytest.mark.parametrize("function", ["call_inline", "call_process"])
async def test_an_unknown_flow_is_named_in_the_error(tmp_path: Path, function: str) -> None:
    async with running(tmp_path) as (runtime, flows):
        error = await failure(runtime, function, {"op": "start_execution", "args": ["nope"]})
        assert await flows.flows.list_executions() == []
    assert error.error_type == "InvalidExecutionRequestError"
    assert "no flow named 'nope'" in error.error_message
    assert "approval_inline, approval_process, greet, parked, waiting" in error.error_message


@pytest.mark.parametrize("who", ["inline", "process"])
async def test_the_function_a_callback_task_calls_answers_it_with_its_token(
    tmp_path: Path, who: str
) -> None:
    async with running(tmp_path) as (runtime, flows):
        await flows.flows.start_execution(f"approval_{who}", {}, name="a1")
        ended = await finished(flows, "a1")
        history = await flows.flows.history("a1")
    assert ended["status"] == "SUCCEEDED", ended
    assert ended["output"] == {"approved_by": who}
    assert "TaskSucceeded" in [event["type"] for event in history]


def _token(history: list[dict[str, Any]]) -> str:
    scheduled = [event for event in history if event["type"] == "TaskScheduled"]
    token: str = scheduled[-1]["details"]["parameters"]["token"]
    return token


@pytest.mark.parametrize("function", ["call_inline", "call_process"])
async def test_a_handler_reads_beats_fails_and_stops_executions(
    tmp_path: Path, function: str
) -> None:
    async def call(op: str, *args: Any, **kwargs: Any) -> Any:
        return await runtime.invoke(function, {"op": op, "args": list(args), "kwargs": kwargs})

    async with running(tmp_path) as (runtime, flows):
        await flows.flows.start_execution("waiting", {"w": 1}, name="w1")
        await flows.flows.start_execution("parked", {}, name="p1")
        assert (await settled(flows, "w1"))["waiting_for"] == "token"
        described = await call("describe_execution", "w1")
        assert described["status"] == "RUNNING" and described["input"] == {"w": 1}
        token = _token(await call("get_execution_history", "w1"))
        assert await call("send_task_heartbeat", token) is None
        assert await call("send_task_failure", token, "Rejected", cause="not today") is None
        failed = await settled(flows, "w1")
        stopped = await call("stop_execution", "p1", error="Enough", cause="tests")
        listed = await call("list_executions", status="ABORTED")
        everything = await call("list_executions")
        again = await failure(runtime, function, {"op": "send_task_success", "args": [token, 1]})
        missing = await failure(runtime, function, {"op": "describe_execution", "args": ["zz"]})
    assert (failed["status"], failed["error"], failed["cause"]) == (
        "FAILED",
        "Rejected",
        "not today",
    )
    assert (stopped["status"], stopped["error"]) == ("ABORTED", "Enough")
    assert [row["name"] for row in listed] == ["p1"]
    assert [row["name"] for row in everything] == ["p1", "w1"]
    assert again.error_type == "InvalidExecutionRequestError"
    assert missing.error_type == "ExecutionNotFoundError"


# Each call, what it is authorised as, and the resource.
CALLS: list[tuple[str, list[Any], str, str]] = [
    ("start_execution", ["greet", {}], "flows:start", "flow/greet"),
    ("describe_execution", ["p1"], "flows:read", "execution/parked/p1"),
    ("get_execution_history", ["p1"], "flows:read", "execution/parked/p1"),
    ("list_executions", ["parked"], "flows:read", "flow/parked"),
    ("list_executions", [], "flows:read", "flow/*"),
    ("stop_execution", ["p1"], "flows:stop", "execution/parked/p1"),
    ("send_task_success", ["tok", {}], "flows:callback", "token"),
    ("send_task_failure", ["tok"], "flows:callback", "token"),
    ("send_task_heartbeat", ["tok"], "flows:callback", "token"),
]


@pytest.mark.parametrize("function", ["call_inline", "call_process"])
async def test_a_denying_hook_refuses_every_call_before_anything_happens(
    tmp_path: Path, function: str
) -> None:
    seen: list[tuple[str, str, str]] = []

    def deny_flows(function: FunctionConfig, action: str, resource: str) -> None:
        if action.startswith("flows:"):
            seen.append((function.name, action, resource))
            raise PermissionDeniedError(function.name, action, resource)

    async with running(tmp_path, deny_flows) as (runtime, flows):
        await flows.flows.start_execution("parked", {}, name="p1")
        for op, args, action, resource in CALLS:
            error = await failure(runtime, function, {"op": op, "args": args})
            assert error.error_type == "PermissionDeniedError", (op, error)
            assert f"may not {action} {resource!r}" in error.error_message
        listed = await flows.flows.list_executions()
    assert seen == [(function, action, resource) for _, _, action, resource in CALLS]
    # Nothing started, nothing stopped.
    assert [(row["name"], row["status"]) for row in listed] == [("p1", "RUNNING")]


def _scoped(*granted: str) -> Authorizer:
    """A hook allowing ``flows:`` calls only on resources matching one of ``granted``."""

    def authorize(function: FunctionConfig, action: str, resource: str) -> None:
        if action.startswith("flows:") and not any(fnmatch(resource, g) for g in granted):
            raise PermissionDeniedError(function.name, action, resource)

    return authorize


@pytest.mark.parametrize("function", ["call_inline", "call_process"])
async def test_a_permission_scoped_to_one_flows_executions_covers_only_that_flow(
    tmp_path: Path, function: str
) -> None:
    async def outcome(op: str, name: str) -> str:
        try:
            await runtime.invoke(function, {"op": op, "args": [name]})
        except HandlerError as error:
            return error.error_type
        return "ok"

    async with running(tmp_path, _scoped("execution/parked/*")) as (runtime, flows):
        await flows.flows.start_execution("parked", {}, name="p1")
        await flows.flows.start_execution("waiting", {}, name="w1")
        mine = [await outcome(op, "p1") for op in ("describe_execution", "get_execution_history")]
        others = [
            await outcome(op, "w1")
            for op in ("describe_execution", "get_execution_history", "stop_execution")
        ]
        # A name that exists nowhere is refused the same way: its absence is not told.
        missing = await outcome("describe_execution", "nowhere")
        stopped = await outcome("stop_execution", "p1")
        left = {row["name"]: row["status"] for row in await flows.flows.list_executions()}
    assert mine == ["ok", "ok"] and stopped == "ok"
    assert others == ["PermissionDeniedError"] * 3
    assert missing == "PermissionDeniedError"
    assert left == {"p1": "ABORTED", "w1": "RUNNING"}


async def test_the_flow_in_an_executions_resource_comes_from_the_store(tmp_path: Path) -> None:
    seen: list[str] = []

    def record(function: FunctionConfig, action: str, resource: str) -> None:
        seen.append(resource)

    async with running(tmp_path, record) as (runtime, flows):
        await flows.flows.start_execution("waiting", {}, name="w1")
        await runtime.invoke("call_inline", {"op": "describe_execution", "args": ["w1"]})
        missing = await failure(
            runtime, "call_inline", {"op": "describe_execution", "args": ["nowhere"]}
        )
    assert seen == ["execution/waiting/w1", "execution/*/nowhere"]
    # Allowed to read every flow's executions, the caller learns it is missing.
    assert missing.error_type == "ExecutionNotFoundError"


async def test_a_blocking_call_from_an_async_inline_handler_is_refused_not_deadlocked(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as (runtime, _):
        error = await failure(runtime, "blocking_in_async", {})
    assert error.error_type == "NotAvailableError"
    assert "an async handler must await context.flows" in error.error_message


@pytest.mark.parametrize("function", ["start_inline", "start_process_async"])
async def test_without_a_flows_service_context_flows_is_not_available(function: str) -> None:
    async with Runtime(app) as runtime:
        error = await failure(runtime, function, {"flow": "greet"})
    assert error.error_type == "NotAvailableError"
    assert "context.flows is not available" in error.error_message
    assert "flows service" in error.error_message


async def test_the_client_goes_when_the_last_flows_service_stops(tmp_path: Path) -> None:
    backend = await open_backend(f"sqlite:///{tmp_path / 'two.db'}", data_dir=tmp_path)
    runtime = Runtime(app, backend=backend, serve=False)
    first, second = (FlowsService(app, backend, runtime=runtime, workers=1) for _ in range(2))
    installed: Callable[[], object] = lambda: registered_client("flows")  # noqa: E731
    try:
        await first.start()
        await second.start()
        await second.stop()
        still = installed()
        started = await runtime.invoke("start_inline", {"flow": "greet", "name": "g1"})
        await first.stop()
        gone = installed()
        error = await failure(runtime, "start_inline", {"flow": "greet"})
    finally:
        await first.stop()
        await runtime.stop()
        await backend.close()
    assert still is not None and started["name"] == "g1"
    assert gone is None
    assert error.error_type == "NotAvailableError"


async def test_reflow_run_installs_context_flows(tmp_path: Path) -> None:
    settings = Settings.load(
        env={},
        backend=f"sqlite:///{tmp_path / 'platform.db'}",
        admin_port=0,
        edge_port=0,
        data_dir=str(tmp_path),
    )
    platform = Platform(app, settings)
    await platform.start()
    try:
        assert platform.runtime is not None
        started = await platform.runtime.invoke(
            "start_process", {"flow": "greet", "input": {"text": "run"}, "name": "r1"}
        )
        service = platform.service("flows")
        assert isinstance(service, FlowsService)
        ended = await settled(service, started["name"])
    finally:
        await platform.stop()
    assert ended["output"] == {"text": "RUN"}
    assert registered_client("flows") is None
