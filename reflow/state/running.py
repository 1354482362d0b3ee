"""The state subsystem under ``reflow run``: one platform service for it all.

:class:`StateRunner` is what :class:`reflow.platform.Platform` starts (as the
service ``state``) for an app that declares tables or change handlers. On
start it

* builds a :class:`StateService` over the platform's backend, whose change
  handlers are delivered through the functions runtime (timeouts, retries,
  isolation), and installs ``context.tables`` and ``context.limits``;
* runs the service's loop (outbox relays, ``@app.on_change`` consumers);
* forwards every change record to the event bus as an event (source
  ``reflow.tables``) when the app has rules to react to them, through the
  consumer group ``reflow.bus`` of each table's stream, so a record reaches
  the bus at least once, with the same event id on redelivery;
* for each global table (``replicate_to``), opens the other regions'
  backends named by ``REFLOW_REPLICAS`` and runs a :class:`Replicator`,
  whose lag it serves at ``GET /api/state/replication`` on the admin API.

Stopping reverses it: replicators finish their batch, loops are cancelled
(unacknowledged records come back to the next run), the runtime stops and
the replica backends close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflow.app import App
from reflow.backends import Backend, open_backend
from reflow.clock import Clock
from reflow.config import DEFAULT_DATA_DIR, BackendURL
from reflow.errors import ConfigError
from reflow.state.replication import GlobalTable, Region, Replicator
from reflow.state.service import StateService
from reflow.state.streams import StreamConsumer, StreamRecord, to_event

if TYPE_CHECKING:
    from reflow.admin import AdminServer
    from reflow.functions.runtime import Runtime

__all__ = ["BUS_GROUP", "StateRunner"]

BUS_GROUP = "reflow.bus"
PutEvents = Callable[[list[dict[str, Any]]], Awaitable[object]]


class StateRunner:
    """Tables, change handlers, bus forwarding and replication for one running app."""

    def __init__(
        self,
        app: App,
        backend: Backend,
        *,
        clock: Clock | None = None,
        region: str = "local",
        replicas: Mapping[str, BackendURL] | None = None,
        data_dir: Path = DEFAULT_DATA_DIR,
        runtime: Runtime | None = None,
        put_events: PutEvents | None = None,
        interval: float = 0.2,
        admin: AdminServer | None = None,
    ) -> None:
        self.app = app
        self.backend = backend
        self.clock = clock or backend.clock
        self.region = region
        self._replica_urls = dict(replicas or {})
        self._data_dir = data_dir
        self._runtime = runtime
        self._owns_runtime = False
        self._put_events = put_events
        self._interval = interval
        self._admin = admin
        self.service: StateService | None = None
        self.replicators: dict[str, Replicator] = {}
        self._replica_backends: dict[str, Backend] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._check_replicas()

    async def start(self) -> None:
        """Build and start everything the module docstring lists."""
        deliver = None
        if self.app.changes:
            if self._runtime is None:
                from reflow.functions.runtime import Runtime

                self._runtime = Runtime(
                    self.app,
                    backend=self.backend,
                    clock=self.clock,
                    region=self.region,
                    serve=False,
                )
                self._owns_runtime = True
                await self._runtime.start()
            deliver = self._runtime.invoke
        service = StateService(
            self.app, self.backend, clock=self.clock, deliver=deliver, region=self.region
        )
        self.service = service
        service.install()
        self._tasks.append(asyncio.create_task(service.run(interval=self._interval)))
        put_events = self._put_events or self._bus_put()
        if put_events is not None:
            for name, config in self.app.tables.items():
                if config.stream:
                    self._tasks.append(asyncio.create_task(self._forward(name, put_events)))
        await self._start_replication(service)
        if self._admin is not None:
            self._mount(self._admin)

    async def stop(self) -> None:
        """Stop replication, the loops and the runtime; close the replica backends."""
        for replicator in self.replicators.values():
            replicator.stop()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.service is not None:
            await self.service.close()
            self.service = None
        if self._owns_runtime and self._runtime is not None:
            await self._runtime.stop()
            self._runtime = None
        backends, self._replica_backends = self._replica_backends, {}
        for backend in backends.values():
            await backend.close()

    def metrics(self) -> dict[str, dict[str, float]]:
        """Replication metrics (lag p50/p99, writes applied) per global table."""
        return {name: r.metrics() for name, r in self.replicators.items()}

    def _mount(self, admin: AdminServer) -> None:
        """``GET /api/state/replication``: lag p50/p99 and writes applied per global table."""
        from reflow.admin import AdminRequest, AdminResponse

        if any(route.template == "/api/state/replication" for route in admin.routes):
            return

        async def replication(_: AdminRequest) -> AdminResponse:
            return AdminResponse(200, {"region": self.region, "tables": self.metrics()})

        admin.route("GET", "/api/state/replication", replication)

    # -- replication --------------------------------------------------------------

    def _check_replicas(self) -> None:
        """Every region a global table names must have a backend (or be this one).

        With no replicas configured at all the app runs single-region, as in
        development: global tables still stamp and tombstone, nothing ships.
        """
        if not self._replica_urls:
            return
        for name, config in self.app.tables.items():
            missing = [
                r for r in config.replicate_to if r != self.region and r not in self._replica_urls
            ]
            if missing:
                raise ConfigError(
                    "REFLOW_REPLICAS",
                    f"table {name!r} replicates to {', '.join(missing)}, which has no URL here",
                )

    async def _start_replication(self, service: StateService) -> None:
        local = Region(self.region, self.backend.kv, self.backend.log)
        for name, config in self.app.tables.items():
            table = service.tables[name]
            if not isinstance(table, GlobalTable):
                continue
            peers: dict[str, Region] = {}
            for region in config.replicate_to:
                if region == self.region or region not in self._replica_urls:
                    continue
                backend = await self._replica(region)
                peers[region] = Region(region, backend.kv, backend.log)
            if not peers:
                continue
            replicator = Replicator(table, local, peers, clock=self.clock)
            self.replicators[name] = replicator
            self._tasks.append(asyncio.create_task(replicator.run(interval=self._interval)))

    async def _replica(self, region: str) -> Backend:
        if region not in self._replica_backends:
            self._replica_backends[region] = await open_backend(
                self._replica_urls[region], data_dir=self._data_dir, clock=self.clock
            )
        return self._replica_backends[region]

    # -- the bus --------------------------------------------------------------------

    def _bus_put(self) -> PutEvents | None:
        """A put onto the default bus, when there are rules to match table events."""
        if not self.app.rules:
            return None
        from reflow.events.bus import EventBus

        bus = EventBus(self.backend, clock=self.clock)

        async def put(events: list[dict[str, Any]]) -> object:
            return await bus.put(events)

        return put

    async def _forward(self, table: str, put_events: PutEvents) -> None:
        consumer = StreamConsumer(
            self.backend.log, table, group=BUS_GROUP, consumer=self.region, clock=self.clock
        )

        async def forward(record: StreamRecord) -> None:
            await put_events([to_event(record, region=self.region)])

        while True:
            if await consumer.process(forward, 100) == 0:
                await self.clock.sleep(self._interval)
