"""The executions API on the admin server (``reflow flows …`` talks to it).

=======  ======================================  ==========================
method   path                                    body / answer
=======  ======================================  ==========================
GET      /api/flows                              the flow names
POST     /api/flows/{flow}/executions            ``{"input", "name"?}`` → execution
GET      /api/executions?flow=&status=           execution summaries
GET      /api/executions/{name}                  the execution
GET      /api/executions/{name}/history          its events
POST     /api/executions/{name}/stop             ``{"error"?, "cause"?}``
POST     /api/executions/{name}/redrive          —
POST     /api/tasks/success                      ``{"token", "output"}``
POST     /api/tasks/failure                      ``{"token", "error"?, "cause"?}``
POST     /api/tasks/heartbeat                    ``{"token"}``
=======  ======================================  ==========================

Errors answer ``{"error": message}`` (plus ``"field"`` for a bad request):
400 for a malformed request, 404 for an unknown execution, 409 when a name
is taken by another execution.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from reflow.admin import AdminRequest, AdminResponse, AdminServer
from reflow.errors import ExecutionAlreadyExistsError, ExecutionNotFoundError
from reflow.flows.service import FlowService
from reflow.flows.store import InvalidExecutionRequestError

__all__ = ["mount"]

Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]


def _guarded(handler: Callable[[AdminRequest], Awaitable[Any]]) -> Handler:
    async def route(request: AdminRequest) -> AdminResponse:
        try:
            return AdminResponse(200, await handler(request))
        except ExecutionNotFoundError as error:
            return AdminResponse(404, {"error": str(error)})
        except ExecutionAlreadyExistsError as error:
            return AdminResponse(409, {"error": str(error)})
        except InvalidExecutionRequestError as error:
            return AdminResponse(400, {"error": str(error), "field": error.field})

    return route


def _body(request: AdminRequest) -> dict[str, Any]:
    body = request.json()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidExecutionRequestError("body", "must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    if body.get(key) is None:
        return None
    return _required(body, key)


def _required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidExecutionRequestError(key, "must be a non-empty string")
    return value


def _query(request: AdminRequest, key: str) -> str | None:
    values = request.query.get(key)
    return values[0] if values else None


def mount(admin: AdminServer, service: FlowService) -> None:
    """Add the executions routes for ``service`` to ``admin`` (once)."""
    if any(route.template == "/api/flows" for route in admin.routes):
        return

    async def flows(_: AdminRequest) -> Any:
        return {"flows": sorted(service.machines)}

    async def start(request: AdminRequest) -> Any:
        body = _body(request)
        return await service.start_execution(
            request.params["flow"], body.get("input"), name=_text(body, "name")
        )

    async def listing(request: AdminRequest) -> Any:
        found = await service.list_executions(
            flow=_query(request, "flow"), status=_query(request, "status")
        )
        return {"executions": found}

    async def describe(request: AdminRequest) -> Any:
        return await service.describe(request.params["name"])

    async def history(request: AdminRequest) -> Any:
        return {"events": await service.history(request.params["name"])}

    async def stop(request: AdminRequest) -> Any:
        body = _body(request)
        return await service.stop_execution(
            request.params["name"], error=_text(body, "error"), cause=_text(body, "cause")
        )

    async def redrive(request: AdminRequest) -> Any:
        return await service.redrive(request.params["name"])

    async def success(request: AdminRequest) -> Any:
        body = _body(request)
        await service.send_task_success(_required(body, "token"), body.get("output"))
        return {"ok": True}

    async def failure(request: AdminRequest) -> Any:
        body = _body(request)
        await service.send_task_failure(
            _required(body, "token"), error=_text(body, "error"), cause=_text(body, "cause")
        )
        return {"ok": True}

    async def heartbeat(request: AdminRequest) -> Any:
        await service.send_task_heartbeat(_required(_body(request), "token"))
        return {"ok": True}

    admin.route("GET", "/api/flows", _guarded(flows))
    admin.route("POST", "/api/flows/{flow}/executions", _guarded(start))
    admin.route("GET", "/api/executions", _guarded(listing))
    admin.route("GET", "/api/executions/{name}", _guarded(describe))
    admin.route("GET", "/api/executions/{name}/history", _guarded(history))
    admin.route("POST", "/api/executions/{name}/stop", _guarded(stop))
    admin.route("POST", "/api/executions/{name}/redrive", _guarded(redrive))
    admin.route("POST", "/api/tasks/success", _guarded(success))
    admin.route("POST", "/api/tasks/failure", _guarded(failure))
    admin.route("POST", "/api/tasks/heartbeat", _guarded(heartbeat))
