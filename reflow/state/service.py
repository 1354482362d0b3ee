"""The state subsystem as the platform runs it: an app's tables, relays and change handlers.

:class:`StateService` turns an app's ``TableConfig`` and ``ChangeConfig``
records into live objects on one backend: a :class:`Table` per declared
table (what ``context.tables`` holds), a :class:`StreamRelay` per streamed
table, a :class:`StreamConsumer` per ``@app.on_change`` handler (its consumer
group is the handler's name, so each handler sees every record once), plus
the :class:`RateLimiter` and :class:`Counters` that ``context.limits``
exposes (``LimitsClient``, every call through the authorisation hook).

Delivery goes through ``deliver(function, event)``: the platform passes its
functions runtime (timeouts, retries, isolation); without one, the handler
is called in-process as ``handler(event, None)``. The event is the record's
EventBridge form (:func:`to_event`). A record is acknowledged only after its
handler returned, so a crash means redelivery, never loss.

:meth:`StateService.install` plugs ``context.tables`` and ``context.limits``
into the functions runtime (``reflow.functions.context.register_client``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from reflow.app import App, ChangeConfig
from reflow.backends import Backend
from reflow.clock import Clock
from reflow.state.clients import LimitsClient, TablesClient
from reflow.state.counters import Counters
from reflow.state.limits import RateLimiter
from reflow.state.replication import GlobalTable
from reflow.state.streams import StreamConsumer, StreamRecord, StreamRelay, to_event
from reflow.state.tables import Table

if TYPE_CHECKING:
    from reflow.functions.context import ClientFactory, Context

__all__ = ["Deliver", "LimitsClient", "StateService"]

Deliver = Callable[[str, dict[str, Any]], Awaitable[object]]


class StateService:
    """Live tables, stream relays and change-handler consumers for one app."""

    def __init__(
        self,
        app: App,
        backend: Backend,
        *,
        clock: Clock | None = None,
        deliver: Deliver | None = None,
        consumer: str = "worker-1",
        region: str = "local",
    ) -> None:
        self._app = app
        self._clock = clock or backend.clock
        self._deliver = deliver or self._call_inline
        self._region = region
        # A table with replicate_to is a global table: writes stamped by this
        # region's hybrid clock, deletes kept as tombstones (replication.py).
        self._tables: dict[str, Table | GlobalTable] = {
            name: GlobalTable(
                name,
                region,
                backend.kv,
                key=config.key,
                sort_key=config.sort_key,
                clock=self._clock,
            )
            if config.replicate_to
            else Table(
                name,
                backend.kv,
                key=config.key,
                sort_key=config.sort_key,
                ttl_attribute=config.ttl_attribute,
                stream=config.stream,
                clock=self._clock,
            )
            for name, config in app.tables.items()
        }
        self._relays = [
            StreamRelay(
                backend.kv, backend.log, name, clock=self._clock, retention=config.retention
            )
            for name, config in app.tables.items()
            if config.stream
        ]
        self._consumers: list[tuple[ChangeConfig, StreamConsumer]] = [
            (
                change,
                StreamConsumer(backend.log, change.table, group=change.name, consumer=consumer),
            )
            for change in app.changes.values()
        ]
        self.limits = RateLimiter.for_backend(backend, clock=self._clock)
        self.counters = Counters.for_backend(backend)
        self._installed: list[tuple[str, ClientFactory]] = []

    @property
    def tables(self) -> Mapping[str, Table | GlobalTable]:
        """The app's tables by name (``context.tables``); global ones are :class:`GlobalTable`."""
        return MappingProxyType(self._tables)

    def install(self) -> None:
        """Make ``context.tables`` and ``context.limits`` reach this service."""
        from reflow.functions.context import register_client

        tables, limiter, counters = self.tables, self.limits, self.counters

        # Per invocation: each context authorises against its own function.
        def tables_client(context: Context) -> TablesClient:
            return TablesClient(tables, context.authorize)

        def limits_client(context: Context) -> LimitsClient:
            return LimitsClient(limiter, counters, context.authorize)

        self._installed = [("tables", tables_client), ("limits", limits_client)]
        for name, factory in self._installed:
            register_client(name, factory)

    async def step(self) -> int:
        """Relay every outbox, then one batch to each change handler; return how many ran."""
        for relay in self._relays:
            await relay.pump()
        handled = 0
        for change, consumer in self._consumers:
            handled += await consumer.process(self._handler_for(change), change.batch_size)
        return handled

    async def run(self, *, interval: float = 0.2) -> None:
        """Step until cancelled, sleeping on the clock when there was nothing to do."""
        me = asyncio.current_task()
        while True:
            handled = await self.step()
            # A cancellation that arrived while a client library was finishing a
            # call can be swallowed below us (seen with redis-py on 3.11): the
            # task still says it is cancelling, so honour that before sleeping.
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            if handled == 0:
                await self._clock.sleep(interval)
            else:
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Release what the service opened (Redis pools of the limiter and counters)."""
        from reflow.functions.context import unregister_client

        installed, self._installed = self._installed, []
        for name, factory in installed:
            unregister_client(name, factory)
        await self.limits.close()
        await self.counters.close()

    def _handler_for(self, change: ChangeConfig) -> Callable[[StreamRecord], Awaitable[object]]:
        async def handle(record: StreamRecord) -> object:
            return await self._deliver(change.function, to_event(record, region=self._region))

        return handle

    async def _call_inline(self, function: str, event: dict[str, Any]) -> object:
        result = self._app.functions[function].handler(event, None)
        if inspect.isawaitable(result):
            result = await result
        return result
