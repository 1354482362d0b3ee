"""Task integrations with reflow's own subsystems: the event bus, the edge cache, tables.

A Task whose ``Resource`` is one of these calls the subsystem directly, with
Step Functions' request and response shapes:

* ``arn:aws:states:::events:putEvents`` — EventBridge's optimized
  integration: ``{"Entries": [{"Detail", "DetailType", "Source",
  "EventBusName", "Resources", "Time"}]}`` in, ``{"Entries": [{"EventId"}],
  "FailedEntryCount": 0}`` out. The execution and state machine ARNs are
  appended to each entry's ``Resources``, as Step Functions does. An invalid
  entry fails the task with ``EventBridge.FailedEntry`` naming
  ``entries[i].field``, and nothing is put.
* ``arn:aws:states:::aws-sdk:cloudfront:createInvalidation`` and
  ``reflow:cache:purge`` — purging the edge (see :mod:`reflow.flows.integrations_cache`).
* ``arn:aws:states:::dynamodb:putItem|getItem|updateItem|deleteItem`` —
  reflow tables with DynamoDB's typed shapes (see
  :mod:`reflow.flows.integrations_dynamodb`);
  ``arn:aws:states:::aws-sdk:dynamodb:query|scan`` read many items (see
  :mod:`reflow.flows.integrations_dynamodb_reads`).

Each integration is a task function keyed by its resource ARN
(:func:`integration_functions`), so the in-memory executor and the durable
service run it exactly as they run any task — retries, timeouts, history and
idempotency keys included — and a ``.waitForTaskToken`` form in a durable
flow hands the payload (with its token) over the same way.

Where the clients come from is a :data:`ClientSource`: ``run(...,
events=, tables=, cache=)`` gives fixed ones (:func:`fixed_clients`); the
server gets them per call from a functions-runtime ``Context``
(:mod:`reflow.flows.server`), so every call passes the same authorisation
hook a handler's ``context.events`` / ``context.tables`` / ``context.cache``
does. A subsystem that is absent fails the task with ``States.Runtime``
saying what is missing.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reflow.errors import EventTooLargeError, InvalidEventError
from reflow.flows.errors import RUNTIME, StatesError

if TYPE_CHECKING:
    from reflow.flows.tasks import TaskContext, TaskFunction

__all__ = [
    "CACHE_PURGE",
    "CLOUDFRONT_INVALIDATION",
    "DYNAMODB",
    "DYNAMODB_SDK",
    "PUT_EVENTS",
    "ClientSource",
    "fixed_clients",
    "integration_functions",
    "is_integration",
    "unavailable",
]

PUT_EVENTS = "arn:aws:states:::events:putEvents"
CLOUDFRONT_INVALIDATION = "arn:aws:states:::aws-sdk:cloudfront:createInvalidation"
CACHE_PURGE = "reflow:cache:purge"
DYNAMODB = {
    f"arn:aws:states:::dynamodb:{verb}": verb
    for verb in ("putItem", "getItem", "updateItem", "deleteItem")
}
DYNAMODB_SDK = {f"arn:aws:states:::aws-sdk:dynamodb:{verb}": verb for verb in ("query", "scan")}

ClientSource = Callable[[str, "TaskContext"], Any]
"""``source(name, task_context)``: the ``events``, ``tables`` or ``cache`` client
(or an awaitable of it).

It raises :class:`~reflow.flows.errors.StatesError` (``States.Runtime``) when
that subsystem is not available.
"""

_NEEDS = {
    "events": "the event bus (reflow.events)",
    "tables": "tables (reflow.state)",
    "cache": "the edge cache (reflow.edge)",
}
_MAX_ENTRIES = 10  # PutEvents takes at most ten entries per call
_ENTRY_FIELDS = frozenset(
    {"Detail", "DetailType", "Source", "EventBusName", "Resources", "Time", "TraceHeader"}
)
_BUS_ARN = ":event-bus/"


def _client_of(resource: str) -> str | None:
    if resource == PUT_EVENTS:
        return "events"
    if resource in (CLOUDFRONT_INVALIDATION, CACHE_PURGE):
        return "cache"
    if resource in DYNAMODB or resource in DYNAMODB_SDK:
        return "tables"
    return None


def is_integration(resource: str) -> bool:
    """Whether ``resource`` names one of the integrations of this module."""
    return _client_of(resource) is not None


def unavailable(resource: str) -> str | None:
    """Why an integration ``resource`` cannot run in memory (None: not an integration)."""
    client = _client_of(resource)
    if client is None:
        return None
    return _missing(resource, client)


def _missing(resource: str, client: str) -> str:
    given = f"which this run was not given: pass {client}=... to run()"
    return f"{resource} needs {_NEEDS[client]}, {given}"


def fixed_clients(
    *, events: Any = None, tables: Mapping[str, Any] | None = None, cache: Any = None
) -> ClientSource:
    """A :data:`ClientSource` over given clients (what ``run(...)`` uses).

    ``events`` has ``async put(entries, *, bus)`` returning the event ids (an
    :class:`~reflow.events.bus.EventBus` or ``context.events``); ``tables``
    maps a table name to a :class:`~reflow.state.tables.Table` (or
    ``context.tables``); ``cache`` has ``async purge(keys, paths, *, soft)``
    returning a count (an :class:`~reflow.edge.service.EdgeService` or
    ``context.cache``).
    """
    given = {"events": events, "tables": tables, "cache": cache}

    def source(name: str, context: TaskContext) -> Any:
        client = given.get(name)
        if client is None:
            raise StatesError(RUNTIME, _missing(f"this {name} integration", name))
        return client

    return source


def integration_functions(source: ClientSource) -> dict[str, TaskFunction]:
    """A task function per integration resource, reaching clients through ``source``."""
    from reflow.flows import integrations_dynamodb_reads
    from reflow.flows.integrations_cache import create_invalidation, purge
    from reflow.flows.integrations_dynamodb import operation

    def bind(call: Callable[[Any, Any, TaskContext], Awaitable[Any]], client: str) -> TaskFunction:
        async def task(payload: Any, context: TaskContext) -> Any:
            found = source(client, context)
            if inspect.isawaitable(found):
                found = await found
            return await call(found, payload, context)

        return task

    functions: dict[str, TaskFunction] = {
        PUT_EVENTS: bind(put_events, "events"),
        CLOUDFRONT_INVALIDATION: bind(create_invalidation, "cache"),
        CACHE_PURGE: bind(purge, "cache"),
    }
    for resource, verb in DYNAMODB.items():
        functions[resource] = bind(operation(verb), "tables")
    for resource, verb in DYNAMODB_SDK.items():
        functions[resource] = bind(integrations_dynamodb_reads.operation(verb), "tables")
    return functions


# -- events:putEvents ----------------------------------------------------------------


async def put_events(client: Any, payload: Any, context: TaskContext) -> Any:
    """PutEvents: validate every entry, put them (grouped by bus), answer with their ids."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("Entries"), list):
        raise StatesError(
            "EventBridge.AmazonEventBridgeException",
            "ValidationException: events:putEvents needs Entries, a list of entries",
        )
    entries = payload["Entries"]
    if not 1 <= len(entries) <= _MAX_ENTRIES:
        raise StatesError(
            "EventBridge.AmazonEventBridgeException",
            f"ValidationException: Entries holds {len(entries)} entries; "
            f"PutEvents takes 1 to {_MAX_ENTRIES}",
        )
    from reflow.events.bus import to_event

    machine_arn = _machine_arn(context.execution_id)
    by_bus: dict[str, list[tuple[int, Any]]] = {}
    for index, entry in enumerate(entries):
        try:
            bus, event = _entry(entry, index, [context.execution_id, machine_arn])
            # Validated here, all before any is put: a bad entry puts nothing.
            checked = to_event(event, index)
        except InvalidEventError as error:
            raise StatesError("EventBridge.FailedEntry", str(error)) from None
        except EventTooLargeError as error:
            raise StatesError(
                "EventBridge.FailedEntry", f"event entries[{index}]: {error}"
            ) from None
        by_bus.setdefault(bus, []).append((index, checked))
    ids: list[str] = [""] * len(entries)
    for bus, batch in by_bus.items():
        try:
            put = await client.put([event for _, event in batch], bus=bus)
        except InvalidEventError as error:
            # What only the bus checks (an event's stored size): name the entry as given.
            where = f"entries[{batch[0][0]}]"
            if error.field.startswith("entries["):
                inner = int(error.field[len("entries[") :].split("]", 1)[0])
                where = f"entries[{batch[inner][0]}]"
            raise StatesError(
                "EventBridge.FailedEntry", f"event {where}: {error.problem}"
            ) from None
        for (index, _), event_id in zip(batch, put, strict=True):
            ids[index] = event_id
    return {"Entries": [{"EventId": event_id} for event_id in ids], "FailedEntryCount": 0}


def _entry(entry: Any, index: int, resources: list[str]) -> tuple[str, dict[str, Any]]:
    """One PutEvents entry as the bus reads it, and the bus it goes to."""
    where = f"entries[{index}]"
    if not isinstance(entry, Mapping):
        raise InvalidEventError(where, "must be a JSON object")
    for name in entry:
        if name not in _ENTRY_FIELDS:
            raise InvalidEventError(f"{where}.{name}", "is not a PutEvents entry field")
    for name in ("Source", "DetailType"):
        if not isinstance(entry.get(name), str) or not entry[name]:
            raise InvalidEventError(f"{where}.{name}", "is required: a non-empty string")
    if "Detail" not in entry:
        raise InvalidEventError(f"{where}.Detail", "is required: a JSON object")
    detail = entry["Detail"]
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            raise InvalidEventError(f"{where}.Detail", "is not JSON text") from None
    if not isinstance(detail, Mapping):
        raise InvalidEventError(f"{where}.Detail", "must be a JSON object")
    bus = entry.get("EventBusName", "default")
    if not isinstance(bus, str) or not bus:
        raise InvalidEventError(f"{where}.EventBusName", "must be a non-empty string")
    if _BUS_ARN in bus:  # arn:aws:events:REGION:ACCOUNT:event-bus/NAME
        bus = bus.split(_BUS_ARN, 1)[1]
    extra = entry.get("Resources", [])
    if not isinstance(extra, list) or not all(isinstance(r, str) for r in extra):
        raise InvalidEventError(f"{where}.Resources", "must be a list of strings")
    event: dict[str, Any] = {
        "Source": entry["Source"],
        "DetailType": entry["DetailType"],
        "Detail": detail,
        "Resources": [*extra, *resources],
    }
    if entry.get("Time") is not None:
        event["Time"] = _time(entry["Time"], f"{where}.Time")
    return bus, event


def _time(value: Any, where: str) -> str:
    """PutEvents' Time (epoch seconds or an RFC 3339 string) as RFC 3339 text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidEventError(where, "must be epoch seconds or an RFC 3339 timestamp")
    if isinstance(value, str):
        return value
    stamp = datetime.fromtimestamp(value, UTC).isoformat().removesuffix("+00:00")
    return stamp + "Z"


def _machine_arn(execution_arn: str) -> str:
    """``…:execution:MACHINE:NAME`` → ``…:stateMachine:MACHINE``."""
    head, marker, rest = execution_arn.partition(":execution:")
    if not marker:
        return execution_arn
    return f"{head}:stateMachine:{rest.split(':', 1)[0]}"
