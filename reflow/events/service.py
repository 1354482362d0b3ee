"""The events service: an App's rules and schedules running over the backend.

``reflow run`` starts one :class:`EventsService` per process (through
:meth:`reflow.platform.Platform.add_service`). It turns each ``@app.on``
rule into a bus :class:`~reflow.events.delivery.Rule` that invokes the
rule's function through the functions runtime, each ``@app.schedule`` into a
rule plus a :class:`~reflow.events.scheduler.Scheduler` timer, and starts
the bus. Any number of processes may run it over the same backend: they
share each stream's consumer group, so every event is dispatched and
delivered by one of them at a time, and each schedule fires once per period.

It also installs ``context.events`` for handlers (an :class:`EventsClient`)
and the admin API's events routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from reflow.app import App
from reflow.clock import Clock
from reflow.errors import NotAvailableError
from reflow.events.bus import EventBus
from reflow.events.delivery import RetryPolicy, Rule
from reflow.events.model import Event
from reflow.events.scheduler import ScheduledRule, Scheduler, schedule_pattern
from reflow.events.targets import FunctionTarget
from reflow.events.transform import rule_input

if TYPE_CHECKING:
    from reflow.admin import AdminRequest, AdminResponse, AdminServer
    from reflow.backends import Backend
    from reflow.functions.context import Context
    from reflow.functions.runtime import Runtime

__all__ = ["EventsClient", "EventsService", "build_bus", "schedule_rule_name"]

_active: list[EventBus] = []  # the bus of the running service, for context.events


def schedule_rule_name(schedule: str) -> str:
    """The name of the bus rule that delivers schedule ``schedule``'s events."""
    return f"schedule.{schedule}"


def build_bus(app: App, backend: Backend, runtime: Runtime, **options: Any) -> EventBus:
    """An :class:`EventBus` with every rule and schedule of ``app`` registered."""
    bus = EventBus(backend, **options)
    for config in app.rules.values():
        bus.add_rule(
            Rule(
                name=config.name,
                pattern=config.pattern,
                target=FunctionTarget(runtime, config.function),
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


class EventsClient:
    """``context.events``: put events on a bus from a handler."""

    def __init__(self, bus: EventBus, context: Context | None = None) -> None:
        self._bus = bus
        self._context = context

    async def put(
        self,
        entries: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]],
        *,
        bus: str = "default",
    ) -> list[str]:
        """Put one event or several on ``bus``; return their ids once durable."""
        if self._context is not None:
            self._context.authorize("events:put", f"bus/{bus}")
        batch = [entries] if isinstance(entries, Event | Mapping) else list(entries)
        return await self._bus.put(batch, bus=bus)

    def put_sync(
        self,
        entries: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]],
        *,
        bus: str = "default",
    ) -> list[str]:
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


def _client_for(context: Context) -> EventsClient:
    if not _active:
        raise NotAvailableError("events", "no events service is running in this process")
    return EventsClient(_active[-1], context)


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
        self.bus = build_bus(app, backend, self.runtime, clock=self.clock, **options)
        self.scheduler = Scheduler(
            [ScheduledRule(s.name, s.expression, s.payload) for s in app.schedules.values()],
            self.bus,
            backend.kv,
            clock=self.clock,
            namespace=app.name,
        )
        self.admin = admin

    async def start(self) -> None:
        """Start the runtime (if ours), the bus, the scheduler; install ``context.events``."""
        from reflow.functions.context import register_client

        if self._owns_runtime:
            await self.runtime.start()
        await self.bus.start()
        await self.scheduler.start()
        _active.append(self.bus)
        register_client("events", _client_for)
        if self.admin is not None:
            self._mount(self.admin)

    async def stop(self) -> None:
        """Stop the scheduler, the bus and the runtime (if ours)."""
        await self.scheduler.stop()
        await self.bus.stop()
        if self.bus in _active:
            _active.remove(self.bus)
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

        admin.route("POST", "/api/events", put)
        admin.route("GET", "/api/dlq", dlq_list)
        admin.route("POST", "/api/dlq/redrive", dlq_redrive)
