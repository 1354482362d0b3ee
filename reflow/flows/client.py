"""``context.flows``: starting and steering executions from a function.

:class:`~reflow.flows.server.FlowsService` installs the client when it
starts (:func:`activate`) and removes it when it stops; without a running
flows service ``context.flows`` raises
:class:`~reflow.errors.NotAvailableError`. A handler calls::

    started = await context.flows.start_execution("orders", {"id": 7}, name="order-7")
    await context.flows.describe_execution(started["name"])
    await context.flows.send_task_success(token, {"approved": True})

and a synchronous handler the same through ``context.flows.sync``. The
results are the flows service's own JSON (what ``reflow flows`` and the
admin API show): ``start_execution`` returns the execution's description —
``name``, ``id`` (its ARN, Step Functions' ``executionArn``), ``flow``,
``status``, ``start_time`` (``startDate``), ``input`` … — so it travels
unchanged to a ``process`` worker over the generic proxy.

Starting again with the name of a RUNNING execution of the same flow and
input returns that execution (Step Functions' idempotent StartExecution);
any other reuse of a name raises
:class:`~reflow.errors.ExecutionAlreadyExistsError`. An unknown flow raises
:class:`~reflow.flows.store.InvalidExecutionRequestError` naming it and the
flows the app declares.

Every call passes the authorisation hook first: ``start_execution`` as
``flows:start`` on ``flow/<flow>``; ``describe_execution`` and
``get_execution_history`` as ``flows:read`` on ``execution/<flow>/<name>``;
``list_executions`` as ``flows:read`` on ``flow/<flow>`` (``flow/*`` when
it lists every flow's); ``stop_execution`` as ``flows:stop`` on
``execution/<flow>/<name>``; ``send_task_success``, ``send_task_failure`` and
``send_task_heartbeat`` as ``flows:callback`` on ``token``.

An execution's resource names its flow (as Step Functions' execution ARN
does), so ``flows:read:execution/orders/*`` covers the executions of
``orders`` only. The flow is read from the store, never taken from the
caller, so a caller cannot claim another flow's execution as its own. An
execution that does not exist is authorised as ``execution/*/<name>`` — any
flow's — so only a caller allowed to read every flow's executions learns
that it is missing; anyone else is refused exactly as for an execution of a
flow they may not touch. (Names cannot contain ``/``, so the resource splits
one way only.)

A task token is itself the credential for its task, and must not end up in
a refusal's message or a log, so the callbacks are authorised on the fixed
resource ``token`` (Step Functions' SendTask* calls take no resource either).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from reflow.errors import ExecutionNotFoundError, NotAvailableError
from reflow.flows.store import InvalidExecutionRequestError

if TYPE_CHECKING:
    from reflow.flows.service import FlowService
    from reflow.functions.context import Context

__all__ = ["FlowsClient", "activate", "deactivate"]

T = TypeVar("T")

# The flows services running in this process, newest last, with their loops.
_active: list[tuple[FlowService, asyncio.AbstractEventLoop]] = []


class FlowsClient:
    """Executions of the app's flows, as a handler sees them: every call authorised."""

    def __init__(
        self, service: FlowService, context: Context, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._service = service
        self._authorize = context.authorize
        self.sync = _SyncFlows(self, loop)

    async def start_execution(
        self, flow: str, input: Any = None, name: str | None = None
    ) -> dict[str, Any]:
        """Start ``flow`` on ``input`` (a JSON value; ``{}`` when None); its description."""
        self._authorize("flows:start", f"flow/{flow}")
        if flow not in self._service.machines:
            known = ", ".join(sorted(self._service.machines)) or "none"
            raise InvalidExecutionRequestError(
                "flow", f"no flow named {flow!r}; the app declares: {known}"
            )
        return await self._service.start_execution(flow, input, name=name)

    async def describe_execution(self, name: str) -> dict[str, Any]:
        """Status, input, output or error of execution ``name``."""
        # One read: the description names the flow to authorise against, and
        # nothing of it leaves here before the hook has said yes.
        try:
            described = await self._service.describe(name)
        except ExecutionNotFoundError:
            self._authorize("flows:read", f"execution/*/{name}")
            raise
        self._authorize("flows:read", f"execution/{described['flow']}/{name}")
        return described

    async def get_execution_history(self, name: str) -> list[dict[str, Any]]:
        """Execution ``name``'s events, oldest first."""
        await self._authorize_execution("flows:read", name)
        return await self._service.history(name)

    async def list_executions(
        self, flow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` executions in name order, of ``flow`` (all when None), in ``status``."""
        self._authorize("flows:read", f"flow/{'*' if flow is None else flow}")
        return await self._service.list_executions(flow=flow, status=status, limit=limit)

    async def stop_execution(
        self, name: str, error: str | None = None, cause: str | None = None
    ) -> dict[str, Any]:
        """Abort RUNNING execution ``name``; its description (status ABORTED)."""
        await self._authorize_execution("flows:stop", name)
        return await self._service.stop_execution(name, error=error, cause=cause)

    async def send_task_success(self, token: str, output: Any) -> None:
        """The callback task holding ``token`` succeeded with ``output`` (a JSON value)."""
        self._authorize("flows:callback", "token")
        await self._service.send_task_success(token, output)

    async def send_task_failure(
        self, token: str, error: str | None = None, cause: str | None = None
    ) -> None:
        """The callback task holding ``token`` failed with ``error`` and ``cause``."""
        self._authorize("flows:callback", "token")
        await self._service.send_task_failure(token, error=error, cause=cause)

    async def send_task_heartbeat(self, token: str) -> None:
        """The callback task holding ``token`` is alive: its heartbeat timeout starts again."""
        self._authorize("flows:callback", "token")
        await self._service.send_task_heartbeat(token)

    async def _authorize_execution(self, action: str, name: str) -> None:
        """Authorise ``action`` on execution ``name`` as ``execution/<flow>/<name>``."""
        flow = await self._service.flow_of(name)
        self._authorize(action, f"execution/{'*' if flow is None else flow}/{name}")

    def __repr__(self) -> str:
        return f"FlowsClient(flows={sorted(self._service.machines)})"


class _SyncFlows:
    """:class:`FlowsClient`'s calls for synchronous handlers running on a thread."""

    def __init__(self, client: FlowsClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def _run(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            # Blocking the loop on itself would deadlock: async handlers await instead.
            raise NotAvailableError("flows.sync", "an async handler must await context.flows")
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def start_execution(
        self, flow: str, input: Any = None, name: str | None = None
    ) -> dict[str, Any]:
        """See :meth:`FlowsClient.start_execution`."""
        return self._run(lambda: self._client.start_execution(flow, input, name))

    def describe_execution(self, name: str) -> dict[str, Any]:
        """See :meth:`FlowsClient.describe_execution`."""
        return self._run(lambda: self._client.describe_execution(name))

    def get_execution_history(self, name: str) -> list[dict[str, Any]]:
        """See :meth:`FlowsClient.get_execution_history`."""
        return self._run(lambda: self._client.get_execution_history(name))

    def list_executions(
        self, flow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """See :meth:`FlowsClient.list_executions`."""
        return self._run(lambda: self._client.list_executions(flow, status, limit))

    def stop_execution(
        self, name: str, error: str | None = None, cause: str | None = None
    ) -> dict[str, Any]:
        """See :meth:`FlowsClient.stop_execution`."""
        return self._run(lambda: self._client.stop_execution(name, error, cause))

    def send_task_success(self, token: str, output: Any) -> None:
        """See :meth:`FlowsClient.send_task_success`."""
        self._run(lambda: self._client.send_task_success(token, output))

    def send_task_failure(
        self, token: str, error: str | None = None, cause: str | None = None
    ) -> None:
        """See :meth:`FlowsClient.send_task_failure`."""
        self._run(lambda: self._client.send_task_failure(token, error, cause))

    def send_task_heartbeat(self, token: str) -> None:
        """See :meth:`FlowsClient.send_task_heartbeat`."""
        self._run(lambda: self._client.send_task_heartbeat(token))


def _client_for(context: Context) -> FlowsClient:
    if not _active:
        raise NotAvailableError("flows", "no flows service is running in this process")
    service, loop = _active[-1]
    return FlowsClient(service, context, loop)


def activate(service: FlowService) -> None:
    """Serve ``context.flows`` from ``service``, on the running loop (its start)."""
    from reflow.functions.context import register_client

    _active.append((service, asyncio.get_running_loop()))
    register_client("flows", _client_for)


def deactivate(service: FlowService) -> None:
    """Stop serving ``context.flows`` from ``service`` (it is stopping)."""
    from reflow.functions.context import unregister_client

    _active[:] = [(active, loop) for active, loop in _active if active is not service]
    if not _active:
        unregister_client("flows", _client_for)
