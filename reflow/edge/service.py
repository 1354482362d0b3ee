"""The edge as a platform service: an App's behaviours, hooks and buckets, served.

:class:`EdgeService` turns what an App declared — ``app.bucket(...)``,
``app.edge_origin(...)`` and ``@app.edge(...)`` hooks — into an
:class:`~reflow.edge.core.Edge` over the platform's backend, serves it with
an :class:`~reflow.edge.server.EdgeServer`, relays purges through the
backend's ``PubSub`` (waiting for every live edge's answer; a lost
subscription is reopened, see :class:`~reflow.edge.purge.Purger`), keeps its
membership of the fleet alive in ``KV`` (saying whether it hears purges), and
mounts the admin API's cache routes::

    POST /api/cache/purge   {"keys": [...], "paths": [...], "soft": false}
                            -> {"purged": n, "edges": {id: n}, "missing": [id], "plan": "..."}
    GET  /api/edge/members  the live edges of the fleet (reflow.edge.fleet)
    GET  /api/edge/metrics  the counters of reflow.edge.metrics.Metrics, as JSON
    GET  /metrics           the same (with histograms) in Prometheus' text format, and
                            the functions runtime's per-function metrics when it runs

Edge hooks of inline functions (the default) run their handler inline through
:class:`~reflow.edge.triggers.Hook`, on the synchronous hit path when they
can. Hooks of functions declared with ``isolation="process"`` run through the
functions runtime (:class:`reflow.functions.Runtime`): in a worker, with the
runtime's limits, metrics and ``Context`` (its authorisation hook included).
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from typing import TYPE_CHECKING, Any

from reflow.admin import AdminRequest, AdminResponse, AdminServer
from reflow.app import App
from reflow.backends import Backend
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.edge.cache import CachePolicy
from reflow.edge.client import activate, deactivate
from reflow.edge.core import Behaviour, Edge
from reflow.edge.fleet import (
    DEFAULT_PURGE_TIMEOUT,
    MEMBER_REFRESH,
    MEMBER_TTL,
    EdgeMember,
    FanOut,
    Membership,
    mount_routes,
)
from reflow.edge.metrics import prometheus_text
from reflow.edge.origins import Origin, OriginGroup, open_origin
from reflow.edge.purge import PurgePlan, Purger, PurgeResult
from reflow.edge.server import EdgeServer
from reflow.edge.store import Store
from reflow.edge.triggers import Hook
from reflow.errors import EdgeError
from reflow.functions.metrics import prometheus_text as function_metrics_text

if TYPE_CHECKING:
    from reflow.functions.runtime import Runtime

__all__ = ["EdgeService", "behaviours_from_app", "hooks_from_app", "needs_runtime"]

# Lambda@Edge's limits: 5 s for viewer hooks, 30 s for origin hooks.
_HOOK_LIMITS = {
    "viewer-request": 5.0,
    "viewer-response": 5.0,
    "origin-request": 30.0,
    "origin-response": 30.0,
}


def hooks_from_app(app: App, runtime: Runtime | None = None) -> list[Hook]:
    """The app's ``@app.edge`` registrations as hooks.

    Inline functions call their handler directly; with a ``runtime``, functions
    declared with ``isolation="process"`` are invoked through it. An inline
    hook's ``context.limits`` passes the runtime's authorisation hook (with
    the function's declared permissions); without a runtime, everything is
    allowed, as ``allow_all`` does.
    """
    from reflow.functions.context import allow_all

    authorizer = runtime.authorizer if runtime is not None else allow_all
    hooks = []
    for config in app.edges.values():
        function = app.functions[config.function]
        limit = min(function.timeout, _HOOK_LIMITS[config.hook])
        invoke = None
        if runtime is not None and function.isolation == "process":
            invoke = functools.partial(runtime.invoke, function.name)
        hooks.append(
            Hook(
                config.name,
                config.hook,
                config.path,
                function.handler,
                timeout=limit,
                include_body=config.include_body,
                distribution=app.name,
                shape=config.shape,
                invoke=invoke,
                function=config.function,
                authorize=functools.partial(authorizer, function),
            )
        )
    return hooks


def needs_runtime(app: App) -> bool:
    """Whether any edge function of ``app`` runs in a worker process."""
    return any(app.functions[c.function].isolation == "process" for c in app.edges.values())


def behaviours_from_app(app: App, backend: Backend, clock: Clock = SYSTEM_CLOCK) -> list[Behaviour]:
    """The app's ``edge_origin`` behaviours, with their origins opened."""
    behaviours = []
    for config in app.edge_origins.values():
        retries = config.connect_retries
        origin = _origin(app, config.origin, backend, config.timeout, clock, retries)
        if config.failover is not None:
            origin = OriginGroup(
                origin, _origin(app, config.failover, backend, config.timeout, clock, retries)
            )
        policy = CachePolicy(**dict(config.policy))
        behaviours.append(Behaviour(config.path_pattern, origin, policy))
    if behaviours and not any(b.pattern in ("*", "/*") for b in behaviours):
        # CloudFront's default behaviour: the first origin also serves what no pattern matches.
        behaviours.append(Behaviour("*", behaviours[0].origin, behaviours[0].policy))
    return behaviours


def _origin(
    app: App, spec: str, backend: Backend, timeout: float, clock: Clock, retries: int
) -> Origin:
    if spec.startswith("bucket:") and spec.removeprefix("bucket:") not in app.buckets:
        raise EdgeError(f"origin {spec!r}: no bucket of that name; declare it with app.bucket()")
    return open_origin(spec, backend.blobs, timeout=timeout, clock=clock, connect_retries=retries)


class EdgeService:
    """The edge server of one App over one backend; start/stop like every service."""

    def __init__(
        self,
        app: App,
        backend: Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        clock: Clock = SYSTEM_CLOCK,
        admin: AdminServer | None = None,
        budget: int = 256 * 1024 * 1024,
        runtime: Runtime | None = None,
        purge_timeout: float = DEFAULT_PURGE_TIMEOUT,
        member_ttl: float = MEMBER_TTL,
        member_refresh: float = MEMBER_REFRESH,
    ) -> None:
        self.app = app
        self.backend = backend
        self.host = host
        self.port = port
        self.clock = clock
        self.admin = admin
        self.store = Store(budget)
        self.edge: Edge | None = None
        self.server: EdgeServer | None = None
        self._started_at = 0.0
        self.id = uuid.uuid4().hex  # this edge in the fleet: membership and purge answers
        self.fanout = FanOut(
            backend.pubsub, backend.kv, sender=self.id, clock=clock, timeout=purge_timeout
        )
        self.purger = Purger(
            self.store, backend.pubsub, node=self.id, fanout=self.fanout, clock=clock
        )
        self.membership = Membership(
            backend.kv, self._member, clock=clock, ttl=member_ttl, refresh=member_refresh
        )
        # The member says whether it hears purges: rewritten as soon as that changes.
        self.purger.on_listening = lambda _: self.membership.renew_soon()
        # The functions runtime for process-isolated hooks: the platform's shared one,
        # or one this service starts (and stops) itself when a hook needs it.
        self.runtime: Runtime | None = runtime
        self._owns_runtime = False

    async def start(self) -> None:
        """Open the origins, start listening and subscribe to purges."""
        behaviours = behaviours_from_app(self.app, self.backend, self.clock)
        if not behaviours:
            raise EdgeError(f"app {self.app.name!r} declares no edge origin (app.edge_origin)")
        if needs_runtime(self.app) and self.runtime is None:
            # Imported here: an edge with inline hooks only never loads the runtime.
            from reflow.functions.runtime import Runtime

            self.runtime = Runtime(self.app, backend=self.backend, clock=self.clock, serve=False)
            self._owns_runtime = True
            await self.runtime.start()
        self.edge = Edge(
            behaviours, hooks_from_app(self.app, self.runtime), store=self.store, clock=self.clock
        )
        self.server = EdgeServer(self.edge, host=self.host, port=self.port)
        self.purger.metrics = self.edge.metrics  # counts gaps in the purge subscription
        await self.purger.start()
        try:
            await self.server.start()
        except OSError as exc:
            await self.purger.stop()
            await self._stop_own_runtime()
            raise EdgeError(
                f"the edge cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self.port = self.server.port
        # Joined only once it listens for purges and serves: a purge that
        # waits for this edge's answer gets one.
        self._started_at = self.clock.time()
        try:
            await self.membership.start()
        except BaseException:
            await self.server.stop()
            await self.purger.stop()
            await self._stop_own_runtime()
            raise
        activate(self.purge)  # context.cache for functions in this process
        if self.admin is not None:
            self._mount(self.admin)

    def _member(self) -> EdgeMember:
        admin_port = None
        if self.admin is not None:
            # Not listening yet (the platform starts it last): a renewal carries it.
            with contextlib.suppress(RuntimeError):
                admin_port = self.admin.port
        return EdgeMember(
            self.id,
            app=self.app.name,
            host=self.host,
            port=self.port,
            admin_port=admin_port,
            started_at=self._started_at,
            listening=self.purger.listening,
        )

    async def stop(self) -> None:
        """Leave the fleet, stop serving (gracefully) and stop listening for purges."""
        deactivate(self.purge)
        await self.membership.stop()
        if self.admin is not None:
            self.admin.remove_metrics("edge")
            if self._owns_runtime:
                self.admin.remove_metrics("functions")  # a shared runtime outlives the edge
        if self.server is not None:
            await self.server.stop()
            self.server = None
        await self.purger.stop()
        await self.fanout.close()
        await self._stop_own_runtime()

    async def _stop_own_runtime(self) -> None:
        if self._owns_runtime and self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
            self._owns_runtime = False

    async def purge(
        self,
        keys: list[str] | tuple[str, ...] = (),
        paths: list[str] | tuple[str, ...] = (),
        *,
        soft: bool = False,
    ) -> PurgeResult:
        """Purge on this edge and every other live one; what each purged, who did not answer."""
        result = await self.purger.purge(PurgePlan.of(keys, paths, soft=soft))
        if self.edge is not None:
            self.edge.metrics.purges += 1
            self.edge.metrics.purged_objects += result.edges.get(self.id, 0)
        return result

    def metrics(self) -> dict[str, Any]:
        """The edge's counters, plus the store's size."""
        if self.edge is None:
            return {}
        figures = self.edge.metrics.snapshot()
        figures.update(
            objects=len(self.store), bytes=self.store.bytes, evictions=self.store.evictions
        )
        return figures

    def _mount(self, admin: AdminServer) -> None:
        async def metrics(_: AdminRequest) -> AdminResponse:
            return AdminResponse(200, self.metrics())

        if not any(r.template == "/api/edge/metrics" for r in admin.routes):
            admin.route("GET", "/api/edge/metrics", metrics)
        mount_routes(admin, self.purge, self.backend.kv)
        admin.add_metrics("edge", self.prometheus)
        runtime = self.runtime
        if runtime is not None:
            # The runtime's own export, under one name: registered once whoever holds it.
            admin.add_metrics("functions", lambda: function_metrics_text(runtime.snapshot()))

    def prometheus(self) -> str:
        """The edge's metrics in Prometheus' text format ("" before :meth:`start`)."""
        if self.edge is None:
            return ""
        return prometheus_text(self.edge.metrics, store=self.store, purger=self.purger)
