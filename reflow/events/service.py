"""The events service: an App's rules and schedules running over the backend.

``reflow run`` starts one :class:`EventsService` per process (through
:meth:`reflow.platform.Platform.add_service`). It turns each ``@app.on``
rule into a bus :class:`~reflow.events.delivery.Rule` that invokes the
rule's function through the functions runtime, each ``App.rule`` into a rule
delivering to its function, flow, bus or webhook, each ``@app.schedule`` into a
rule plus a :class:`~reflow.events.scheduler.Scheduler` timer, and starts
the bus. Any number of processes may run it over the same backend: they
share each stream's consumer group, so every event is dispatched and
delivered by one of them at a time, and each schedule fires once per period.

It also delivers the records of functions' ``bus:`` and ``flow:``
destinations (a :class:`~reflow.events.destinations.DestinationReader`), and
installs ``context.events`` for handlers (an :class:`EventsClient`),
``app.events`` for scripts (an :class:`AppEvents`) and the admin API's events
routes (``POST /api/events``, ``GET /api/dlq``, ``POST /api/dlq/redrive``,
``GET /api/events/retries``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from reflow.app import App, RuleConfig
from reflow.clock import Clock
from reflow.errors import ExecutionAlreadyExistsError, NotAvailableError, RegistrationError
from reflow.events.bus import EventBus
from reflow.events.delivery import RetryPolicy, Rule, rule_stream
from reflow.events.destinations import DestinationReader
from reflow.events.model import Event
from reflow.events.scheduler import ScheduledRule, Scheduler, schedule_pattern
from reflow.events.targets import BusTarget, FlowTarget, FunctionTarget, Target, WebhookTarget
from reflow.events.transform import rule_input
from reflow.functions.invocations import app_destinations

if TYPE_CHECKING:
    from reflow.admin import AdminRequest, AdminResponse, AdminServer
    from reflow.backends import Backend
    from reflow.functions.context import Context
    from reflow.functions.runtime import Runtime

__all__ = [
    "AppEvents",
    "EventsClient",
    "EventsService",
    "FlowsLookup",
    "build_bus",
    "flow_starter",
    "retry_streams",
    "schedule_rule_name",
]

Entries = Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]]
FlowsLookup = Callable[[], Any]  # the running flows service (``.flows.start_execution``) or None

_active: list[EventsService] = []  # running services, for context.events and app.events


def schedule_rule_name(schedule: str) -> str:
    """The name of the bus rule that delivers schedule ``schedule``'s events."""
    return f"schedule.{schedule}"


def flow_starter(lookup: FlowsLookup) -> Callable[[str, Any, str], Any]:
    """A :class:`FlowTarget` ``start`` over the flows service ``lookup()`` returns.

    The service is looked up at each delivery, so the events service may start
    before the flows service: until that one runs, deliveries fail and are
    retried. An execution of that name that already exists (started by an
    earlier attempt of the same delivery, perhaps finished since) counts as
    delivered: the event id names the execution, so this is the redelivery.
    """

    async def start(flow: str, payload: Any, name: str) -> None:
        service = lookup()
        if service is None:
            raise NotAvailableError("flows", "the flows service is not running")
        with contextlib.suppress(ExecutionAlreadyExistsError):
            await service.flows.start_execution(flow, payload, name=name)

    return start


def _target(
    app: App,
    config: RuleConfig,
    bus: EventBus,
    runtime: Runtime,
    flows: FlowsLookup | None,
) -> Target:
    """The delivery target ``config`` declares; the function or flow it names must exist."""
    kind, ref = config.target_kind
    if kind == "function":
        if ref not in app.functions:
            raise RegistrationError(config.name, f"target function {ref!r} is not registered")
        return FunctionTarget(runtime, ref)
    if kind == "flow":
        if ref not in app.flows:
            raise RegistrationError(config.name, f"target flow {ref!r} is not registered")
        return FlowTarget(ref, flow_starter(flows) if flows is not None else None)
    if kind == "bus":
        return BusTarget(bus, ref)
    return WebhookTarget(ref, timeout=config.timeout, headers=dict(config.headers))


def build_bus(
    app: App,
    backend: Backend,
    runtime: Runtime,
    *,
    flows: FlowsLookup | None = None,
    **options: Any,
) -> EventBus:
    """An :class:`EventBus` with every rule and schedule of ``app`` registered.

    ``flows`` finds the running flows service for rules targeting a flow;
    without it such deliveries fail (and end in the dead-letter queue).
    """
    bus = EventBus(backend, **options)
    for config in app.rules.values():
        bus.add_rule(
            Rule(
                name=config.name,
                pattern=config.pattern,
                target=_target(app, config, bus, runtime, flows),
                bus=config.bus,
                input=rule_input(config.input_path, config.input_template),
                retry=RetryPolicy(
                    max_attempts=config.max_attempts, max_event_age=config.max_event_age
                ),
                dead_letter=config.dead_letter,
            )
        )
    for schedule in app.schedules.values():
        bus.add_rule(
            Rule(
                name=schedule_rule_name(schedule.name),
                pattern=schedule_pattern(schedule.name),
                target=FunctionTarget(runtime, schedule.function),
            )
        )
    return bus


def retry_streams(bus: EventBus, rule: str | None, on_bus: str | None) -> set[str] | None:
    """The delivery streams whose parked retries to list: ``rule``'s, those of the
    rules on bus ``on_bus``, both (their intersection), or every one (None)."""
    streams: set[str] | None = None
    if on_bus is not None:
        streams = {rule_stream(name) for name, r in bus.rules.items() if r.bus == on_bus}
    if rule is not None:
        streams = {rule_stream(rule)} if streams is None else streams & {rule_stream(rule)}
    return streams


class EventsClient:
    """``context.events``: put events on a bus from a handler."""

    def __init__(self, bus: EventBus, context: Context | None = None) -> None:
        self._bus = bus
        self._context = context

    async def put(self, entries: Entries, *, bus: str = "default") -> list[str]:
        """Put one event or several on ``bus``; return their ids once durable."""
        if self._context is not None:
            self._context.authorize("events:put", f"bus/{bus}")
        return await self._bus.put(_batch(entries), bus=bus)

    def put_sync(self, entries: Entries, *, bus: str = "default") -> list[str]:
        """:meth:`put` for a synchronous handler running in a worker thread."""
        loop = self._bus.loop
        if loop is None:
            raise NotAvailableError("events", "the event bus is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Blocking the loop on itself would deadlock: async handlers await put().
            raise NotAvailableError("events.put_sync", "an async handler must await put()")
        return asyncio.run_coroutine_threadsafe(self.put(entries, bus=bus), loop).result()


def _batch(entries: Entries) -> list[Event | Mapping[str, Any]]:
    return [entries] if isinstance(entries, Event | Mapping) else list(entries)


def _client_for(context: Context) -> EventsClient:
    if not _active:
        raise NotAvailableError("events", "no events service is running in this process")
    return EventsClient(_active[-1].bus, context)


class AppEvents:
    """``app.events``: put events from scripts and tests, outside any handler.

    With ``backend=`` (an open :class:`~reflow.backends.Backend` or a backend
    URL such as ``sqlite:///data/reflow.db`` or ``redis://host:6379/0``) the
    events are appended to that backend's bus stream, where any running
    ``reflow run`` over it dispatches them. Without it, they go to the bus of
    this app's events service running in this process (a started
    :class:`~reflow.platform.Platform`), or :class:`NotAvailableError` says
    that none is.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    def _running(self) -> EventBus:
        for service in reversed(_active):
            if service.app is self.app:
                return service.bus
        raise NotAvailableError(
            "events",
            f"no events service of app {self.app.name!r} is running in this process; "
            "start its Platform or pass backend= (a Backend or a backend URL)",
        )

    async def put(
        self, entries: Entries, *, bus: str = "default", backend: Backend | str | None = None
    ) -> list[str]:
        """Put one event or several on ``bus``; return their ids once durable."""
        batch = _batch(entries)
        if backend is None:
            return await self._running().put(batch, bus=bus)
        if not isinstance(backend, str):
            return await EventBus(backend).put(batch, bus=bus)
        from reflow.backends import open_backend

        opened = await open_backend(backend)
        try:
            return await EventBus(opened).put(batch, bus=bus)
        finally:
            await opened.close()

    def put_sync(
        self, entries: Entries, *, bus: str = "default", backend: Backend | str | None = None
    ) -> list[str]:
        """:meth:`put` from synchronous code (a script, or a thread beside the platform)."""
        if backend is None:
            return EventsClient(self._running()).put_sync(entries, bus=bus)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.put(entries, bus=bus, backend=backend))
        raise NotAvailableError("events.put_sync", "inside an event loop, await put()")


class EventsService:
    """Rules, schedules and the bus of one App, started and stopped with the platform."""

    def __init__(
        self,
        app: App,
        backend: Backend,
        *,
        clock: Clock | None = None,
        runtime: Runtime | None = None,
        admin: AdminServer | None = None,
        flows: FlowsLookup | None = None,
        **options: Any,
    ) -> None:
        from reflow.functions.runtime import Runtime

        self.app = app
        self.backend = backend
        self.clock = clock or backend.clock
        self._owns_runtime = runtime is None
        self.runtime = runtime or Runtime(app, backend=backend, clock=self.clock, serve=False)
        # A delivery's lease must outlast the slowest function it may invoke.
        longest = max((f.timeout for f in app.functions.values()), default=0.0)
        options.setdefault("lease", max(120.0, float(longest) + 60.0))
        self.bus = build_bus(app, backend, self.runtime, flows=flows, clock=self.clock, **options)
        self.scheduler = Scheduler(
            [ScheduledRule(s.name, s.expression, s.payload) for s in app.schedules.values()],
            self.bus,
            backend.kv,
            clock=self.clock,
            namespace=app.name,
        )
        self.destinations = DestinationReader(
            backend,
            app_destinations(app.functions).values(),
            bus=self.bus,
            start_flow=flow_starter(flows) if flows is not None else None,
            clock=self.clock,
        )
        self.admin = admin

    async def start(self) -> None:
        """Start the runtime (if ours), the bus, the destination reader, the scheduler;
        install ``context.events``."""
        from reflow.functions.context import register_client

        if self._owns_runtime:
            await self.runtime.start()
        await self.bus.start()
        await self.destinations.start()
        await self.scheduler.start()
        _active.append(self)
        register_client("events", _client_for)
        if self.admin is not None:
            self._mount(self.admin)

    async def stop(self) -> None:
        """Stop the scheduler, the destination reader, the bus and the runtime (if ours)."""
        await self.scheduler.stop()
        await self.destinations.stop()
        await self.bus.stop()
        if self in _active:
            _active.remove(self)
        if self._owns_runtime:
            await self.runtime.stop()

    def _mount(self, admin: AdminServer) -> None:
        from reflow.admin import AdminResponse

        if any(route.template == "/api/events" for route in admin.routes):
            return

        async def put(request: AdminRequest) -> AdminResponse:
            body = request.json()
            entries = body.get("entries", []) if isinstance(body, dict) else body
            bus = body.get("bus", "default") if isinstance(body, dict) else "default"
            ids = await self.bus.put(entries, bus=bus)
            return AdminResponse(200, {"ids": ids})

        async def dlq_list(request: AdminRequest) -> AdminResponse:
            rule = request.query.get("rule", [""])[0] or None
            letters = await self.bus.dead_letters.list(rule)
            return AdminResponse(200, {"letters": [letter.to_json() for letter in letters]})

        async def dlq_redrive(request: AdminRequest) -> AdminResponse:
            body = request.json() or {}
            ids = await self.bus.dead_letters.redrive(body.get("rule"), keys=body.get("keys"))
            return AdminResponse(200, {"redriven": ids})

        async def retries(request: AdminRequest) -> AdminResponse:
            rule = request.query.get("rule", [""])[0] or None
            bus = request.query.get("bus", [""])[0] or None
            parked = await self.bus.retries.list(streams=retry_streams(self.bus, rule, bus))
            return AdminResponse(200, {"retries": [retry.to_json() for retry in parked]})

        admin.route("POST", "/api/events", put)
        admin.route("GET", "/api/events/retries", retries)
        admin.route("GET", "/api/dlq", dlq_list)
        admin.route("POST", "/api/dlq/redrive", dlq_redrive)
