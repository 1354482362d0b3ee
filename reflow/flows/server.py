"""Flows inside ``reflow run``: the app's flows, its functions as tasks, admin routes.

:class:`FlowsService` is what :class:`reflow.platform.Platform` starts when
the app registers flows. It builds a one-off functions runtime (it serves
no queue of its own) so each Task whose ``Resource`` names one of the app's
functions runs through the same runtime as every other handler — its
isolation, timeout and concurrency included — and mounts the executions
API on the admin server (see :func:`reflow.flows.routes.mount`).

``STANDARD`` flows run durably; ``EXPRESS`` flows run in memory in this
process (at-least-once: a crash loses them), see :mod:`reflow.flows.express`.

The task integrations (``events:putEvents``, ``dynamodb:*``, cache purges;
:mod:`reflow.flows.integrations`) reach the bus, the tables and the edge
through a functions-runtime :class:`~reflow.functions.context.Context` made
for the call (:func:`context_clients`): the same clients, and the same
authorisation hook, as a handler's ``context.events``/``tables``/``cache``.
The context's function is ``flow:NAME``, carrying the permissions the flow
declares (``app.flow(name, definition, permissions=[...])``), so the hook
sees them as it sees a function's.

While it runs, the service is what a handler's ``context.flows`` reaches
(:mod:`reflow.flows.client`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reflow.errors import NotAvailableError
from reflow.flows import client
from reflow.flows.errors import RUNTIME, StatesError
from reflow.flows.integrations import ClientSource, integration_functions
from reflow.flows.routes import mount
from reflow.flows.service import FlowService
from reflow.flows.tasks import TaskContext, TaskFunction

if TYPE_CHECKING:
    from reflow.admin import AdminServer
    from reflow.app import App
    from reflow.backends import Backend
    from reflow.functions.runtime import Runtime

__all__ = ["FlowsService", "context_clients", "runtime_functions"]

# Request ids derived from idempotency keys: the same on every redo of one attempt.
_REQUESTS = uuid.UUID("6f0c1b1e-6a59-4f43-9a55-0c2f7b0b2d51")
# How long an integration waits for a subsystem the app declares but that has not
# started yet (the platform starts the state service after the flows service, and a
# resumed execution may reach a table first).
_STARTING = 10.0
_POLL = 0.05


def runtime_functions(runtime: Runtime) -> dict[str, TaskFunction]:
    """A task function per app function, each invoking it through ``runtime``.

    The invocation's request id (``context.aws_request_id``) is a UUID made
    from the task's idempotency key, so a handler sees the same id when a
    crash makes the flow call it again for the same attempt.
    """

    def task(name: str) -> TaskFunction:
        async def call(payload: Any, context: TaskContext) -> Any:
            request_id = str(uuid.uuid5(_REQUESTS, context.idempotency_key))
            return await runtime.invoke(name, payload, request_id=request_id, wait=True)

        return call

    return {name: task(name) for name in runtime.app.functions}


def _declares(app: App, name: str) -> bool:
    """Whether ``app`` declares what starts the subsystem behind ``context.NAME``."""
    if name == "tables":
        return bool(app.tables)
    if name == "events":
        return bool(app.rules or app.schedules)
    return bool(app.edge_origins)


def _no_handler(event: Any, context: Any) -> None:
    """The handler of the flows' own function config: never invoked."""


def context_clients(runtime: Runtime) -> ClientSource:
    """Integration clients from a :class:`~reflow.functions.context.Context` per call.

    Its function is ``flow:NAME`` (the execution's flow) with the flow's
    declared ``permissions``, and its authoriser the runtime's, so an
    integration is authorised exactly as the same call from a handler. A
    subsystem the app does not run fails the task with ``States.Runtime``;
    one the app declares but that is still starting is waited for (up to ten
    seconds).
    """
    from reflow.app import FunctionConfig
    from reflow.functions.context import Context

    configs: dict[str, FunctionConfig] = {}

    def function_of(flow: str) -> FunctionConfig:
        config = configs.get(flow)
        if config is None:
            declared = runtime.app.flows.get(flow)
            config = configs[flow] = FunctionConfig(
                name=f"flow:{flow}",
                handler=_no_handler,
                permissions=declared.permissions if declared is not None else (),
                implicit=True,
            )
        return config

    async def source(name: str, task: TaskContext) -> Any:
        flow = task.execution_id.split(":execution:", 1)[-1].split(":", 1)[0]
        config = function_of(flow)
        for attempt in range(int(_STARTING / _POLL) + 1):
            context = Context(
                config,
                request_id=str(uuid.uuid5(_REQUESTS, task.idempotency_key)),
                clock=runtime.clock,
                region=runtime.region,
                authorizer=runtime.authorizer,
                blobs=runtime.backend.blobs if runtime.backend is not None else None,
                loop=asyncio.get_running_loop(),
            )
            try:
                return getattr(context, name)
            except NotAvailableError as error:
                if not _declares(runtime.app, name) or attempt * _POLL >= _STARTING:
                    raise StatesError(RUNTIME, f"{error.reason} (context.{name})") from None
            # Real time, not the runtime's clock: the subsystem starts in real time.
            await asyncio.sleep(_POLL)
        raise AssertionError("unreachable")

    return source


class FlowsService:
    """The platform service running an app's flows durably over its backend."""

    def __init__(
        self,
        app: App,
        backend: Backend,
        *,
        admin: AdminServer | None = None,
        workers: int = 4,
        extra_functions: Mapping[str, TaskFunction] | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        from reflow.functions.runtime import Runtime

        # The platform hands in its one shared runtime; alone, we make our own.
        self._owns_runtime = runtime is None
        self.runtime = runtime or Runtime(app, backend=backend, clock=backend.clock, serve=False)
        functions = {
            **integration_functions(context_clients(self.runtime)),
            **runtime_functions(self.runtime),
            **(extra_functions or {}),
        }
        flows = {name: config.definition for name, config in app.flows.items()}
        express = [name for name, config in app.flows.items() if config.kind == "EXPRESS"]
        self.flows = FlowService(
            backend, flows, functions=functions, workers=workers, express=express
        )
        self.admin = admin

    async def start(self) -> None:
        """Mount the admin routes, start the workers and timers, install ``context.flows``."""
        if self.admin is not None:
            mount(self.admin, self.flows)
        await self.flows.start()
        client.activate(self.flows)

    async def stop(self) -> None:
        """Remove ``context.flows``, stop the workers, then the functions runtime."""
        client.deactivate(self.flows)
        await self.flows.stop()
        if self._owns_runtime:
            await self.runtime.stop()
