"""The running platform: one App, one backend, and the services started for them.

``reflow run`` builds a :class:`Platform` and calls :meth:`Platform.start`.
The platform opens the backend the settings name, freezes the app, and
starts each subsystem's service over the same backend and clock, then the
admin API. Stopping runs the same list backwards. The services are the seams
where each subsystem plugs in; the platform itself holds no logic of theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import reflow
from reflow.admin import AdminRequest, AdminResponse, AdminServer
from reflow.app import App
from reflow.backends import Backend, open_backend
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.config import Settings
from reflow.selfcheck import run_self_check

if TYPE_CHECKING:
    from reflow.functions.runtime import Runtime

__all__ = ["Platform", "Service"]


class Service(Protocol):
    """A subsystem's long-running part: started once, stopped once."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class _Started:
    name: str
    service: Service


class Platform:
    """An App running over a backend: services, admin API, orderly shutdown."""

    def __init__(
        self,
        app: App,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        backend: Backend | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        self._backend = backend
        self._owns_backend = backend is None
        self.admin = AdminServer()
        self.runtime: Runtime | None = None  # the shared functions runtime, once started
        self._services: list[_Started] = []
        self._started_at = 0.0
        self._stopping = asyncio.Event()

    @property
    def backend(self) -> Backend:
        """The open backend; only valid after :meth:`start`."""
        if self._backend is None:
            raise RuntimeError("the platform has not started")
        return self._backend

    @property
    def services(self) -> list[str]:
        """Names of the services running, in start order."""
        return [s.name for s in self._services]

    def service(self, name: str) -> Service | None:
        """The running service called ``name`` (``"edge"``, ``"events"``, ...), or None."""
        for started in self._services:
            if started.name == name:
                return started.service
        return None

    async def start(self, *, admin: bool = True) -> None:
        """Open the backend, start every service, then the admin API."""
        self.app.freeze()
        if self._backend is None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            self._backend = await open_backend(
                self.settings.backend, data_dir=self.settings.data_dir, clock=self.clock
            )
        self._started_at = time.time()
        self._mount_core_routes()
        runtime = None
        if self.app.functions:
            # One runtime serves every caller in this process — the bus, flows,
            # change handlers and the async invocation queue — so they share
            # its workers, its zygote, its concurrency limits and its metrics.
            from reflow.functions.runtime import Runtime

            runtime = Runtime(
                self.app, backend=self.backend, clock=self.clock, region=self.settings.region
            )
            await self.add_service("functions", runtime)
            from reflow.functions.metrics import prometheus_text

            # GET /metrics shows the functions even when no edge runs here.
            shared = runtime
            self.admin.add_metrics("functions", lambda: prometheus_text(shared.snapshot()))
        self.runtime = runtime
        if self.app.edge_origins:
            # Imported here: an app without edge origins never loads the edge server.
            from reflow.edge.service import EdgeService

            edge = EdgeService(
                self.app,
                self.backend,
                host=self.settings.host,
                port=self.settings.edge_port,
                clock=self.clock,
                admin=self.admin,
                runtime=runtime,
            )
            await self.add_service("edge", edge)
        elif self.app.functions:
            # No edge here, but functions may purge one: context.cache publishes
            # the purge to the fleet's edges and waits for their answers.
            from reflow.edge.fleet import PurgePublisher

            publisher = PurgePublisher(
                self.backend.pubsub, self.backend.kv, clock=self.clock, admin=self.admin
            )
            await self.add_service("cache", publisher)
        if self.app.rules or self.app.schedules or self.app.functions or self.app.flows:
            # Any handler or flow may put events (context.events, putEvents tasks),
            # archived for replay even before a rule matches them.
            # Imported here: an app with none of these never loads the bus.
            from reflow.events.service import EventsService

            # Rules targeting a flow find the flows service when they deliver:
            # it starts after the bus, and a delivery before that is retried.
            events = EventsService(
                self.app,
                self.backend,
                clock=self.clock,
                runtime=runtime,
                admin=self.admin,
                flows=lambda: self.service("flows"),
            )
            await self.add_service("events", events)
        if self.app.flows:
            # Imported here: an app without flows never loads the flows engine.
            from reflow.flows.server import FlowsService

            flows = FlowsService(self.app, self.backend, admin=self.admin, runtime=runtime)
            await self.add_service("flows", flows)
        if self.app.tables or self.app.changes or self.app.functions:
            # Every function may reach context.limits (rate limits, counters),
            # not only those of apps that declare tables.
            # Imported here: an app with neither functions nor tables never loads it.
            from reflow.state.running import StateRunner

            state = StateRunner(
                self.app,
                self.backend,
                clock=self.clock,
                region=self.settings.region,
                replicas=self.settings.replicas,
                data_dir=self.settings.data_dir,
                runtime=runtime,
                admin=self.admin,
            )
            await self.add_service("state", state)
        if admin:
            await self.admin.start(self.settings.host, self.settings.admin_port)

    async def add_service(self, name: str, service: Service) -> None:
        """Start ``service`` now and stop it (in reverse order) with the platform."""
        await service.start()
        self._services.append(_Started(name, service))

    async def stop(self) -> None:
        """Stop the admin API and every service, newest first, then close the backend."""
        await self.admin.stop()
        while self._services:
            started = self._services.pop()
            with contextlib.suppress(Exception):
                await started.service.stop()
        if self._backend is not None and self._owns_backend:
            await self._backend.close()
            self._backend = None

    async def run_until_signalled(
        self, on_ready: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Start, wait for SIGINT/SIGTERM (or :meth:`request_stop`), then stop."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._stopping.set)
        await self.start()
        try:
            if on_ready is not None:
                await on_ready()
            await self._stopping.wait()
        finally:
            await self.stop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)

    def request_stop(self) -> None:
        """Ask :meth:`run_until_signalled` to shut down."""
        self._stopping.set()

    def describe(self) -> dict[str, Any]:
        """What the admin API's ``/api/status`` reports."""
        return {
            "app": self.app.name,
            "version": reflow.__version__,
            "backend": self.settings.backend.kind,
            "region": self.settings.region,
            "uptime_seconds": round(time.time() - self._started_at, 3) if self._started_at else 0,
            "services": self.services,
            "registered": self.app.summary(),
        }

    def _mount_core_routes(self) -> None:
        async def health(_: AdminRequest) -> AdminResponse:
            return AdminResponse(200, {"status": "ok"})

        async def status(_: AdminRequest) -> AdminResponse:
            return AdminResponse(200, self.describe())

        async def check(_: AdminRequest) -> AdminResponse:
            results = await run_self_check(self.backend)
            ok = all(r.ok for r in results)
            rows = [
                {
                    "primitive": r.primitive,
                    "operation": r.operation,
                    "ok": r.ok,
                    "ms": round(r.milliseconds, 3),
                    "detail": r.detail,
                }
                for r in results
            ]
            return AdminResponse(200 if ok else 503, {"ok": ok, "checks": rows})

        if not any(r.template == "/healthz" for r in self.admin.routes):
            self.admin.route("GET", "/healthz", health)
            self.admin.route("GET", "/api/status", status)
            self.admin.route("POST", "/api/backend/check", check)
