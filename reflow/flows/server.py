"""Flows inside ``reflow run``: the app's flows, its functions as tasks, admin routes.

:class:`FlowsService` is what :class:`reflow.platform.Platform` starts when
the app registers flows. It builds a one-off functions runtime (it serves
no queue of its own) so each Task whose ``Resource`` names one of the app's
functions runs through the same runtime as every other handler — its
isolation, timeout and concurrency included — and mounts the executions
API on the admin server (see :func:`reflow.flows.routes.mount`).

``STANDARD`` flows run durably; ``EXPRESS`` flows run in memory in this
process (at-least-once: a crash loses them), see :mod:`reflow.flows.express`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reflow.flows.routes import mount
from reflow.flows.service import FlowService
from reflow.flows.tasks import TaskContext, TaskFunction

if TYPE_CHECKING:
    from reflow.admin import AdminServer
    from reflow.app import App
    from reflow.backends import Backend
    from reflow.functions.runtime import Runtime

__all__ = ["FlowsService", "runtime_functions"]

# Request ids derived from idempotency keys: the same on every redo of one attempt.
_REQUESTS = uuid.UUID("6f0c1b1e-6a59-4f43-9a55-0c2f7b0b2d51")


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
        functions = {**runtime_functions(self.runtime), **(extra_functions or {})}
        flows = {name: config.definition for name, config in app.flows.items()}
        express = [name for name, config in app.flows.items() if config.kind == "EXPRESS"]
        self.flows = FlowService(
            backend, flows, functions=functions, workers=workers, express=express
        )
        self.admin = admin

    async def start(self) -> None:
        """Mount the admin routes, then start the workers and timers."""
        if self.admin is not None:
            mount(self.admin, self.flows)
        await self.flows.start()

    async def stop(self) -> None:
        """Stop the workers, then the functions runtime."""
        await self.flows.stop()
        if self._owns_runtime:
            await self.runtime.stop()
