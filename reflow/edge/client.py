"""``context.cache``: purging the edge from a function.

``await context.cache.purge(keys=[...], paths=[...], soft=False)`` purges the
edge running in this process and, through its :class:`~reflow.edge.purge.Purger`,
every other edge subscribed to the backend's ``PubSub`` purge channel; it
returns a :class:`~reflow.edge.purge.PurgeResult`, an ``int`` (the objects
purged on every edge that answered) with ``.edges`` and ``.missing``. A
synchronous handler calls ``context.cache.purge_sync(...)``. In a ``process``
worker the runtime proxies the call to this client on the server side, so the
authorisation hook runs where the handler cannot step around it (the worker
receives the total as a plain ``int``).

Every key and path is authorised before anything is purged, as action
``cache:purge`` on resource ``key/<key>`` or ``path<path>`` (``path/img/*``):
a refusal purges nothing.

:class:`~reflow.edge.service.EdgeService` installs the client when it starts
(:func:`activate`). A process with functions but no edge gets a publish-only
:class:`~reflow.edge.fleet.PurgePublisher` from the platform (and from
``reflow invoke``), which purges the fleet over PubSub; an edge running in the
process is preferred to it. With neither the client raises
:class:`~reflow.errors.NotAvailableError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from reflow.edge.purge import PurgePlan, PurgeResult
from reflow.errors import NotAvailableError

if TYPE_CHECKING:
    from reflow.functions.context import Context

__all__ = ["CacheClient", "activate", "deactivate"]

# purge(keys, paths, soft) -> result, as EdgeService.purge
PurgeCall = Callable[..., Awaitable[PurgeResult]]

# The running edges (edge=True) and publish-only purgers of this process,
# newest last, with the loop each runs on.
_active: list[tuple[PurgeCall, asyncio.AbstractEventLoop, bool]] = []


class CacheClient:
    """Purges by surrogate key and by path, authorised per key and path."""

    def __init__(
        self, purge: PurgeCall, loop: asyncio.AbstractEventLoop, context: Context | None = None
    ) -> None:
        self._purge = purge
        self._loop = loop
        self._context = context

    async def purge(
        self, keys: Sequence[str] = (), paths: Sequence[str] = (), *, soft: bool = False
    ) -> PurgeResult:
        """Purge ``keys`` and ``paths`` on every edge; what every edge that answered purged."""
        plan = PurgePlan.of(keys, paths, soft=soft)
        if self._context is not None:
            # All checks first: a refusal part-way must not leave a half-done purge.
            for key in plan.keys:
                self._context.authorize("cache:purge", f"key/{key}")
            for path in plan.paths:
                self._context.authorize("cache:purge", f"path{path}")
        return await self._purge(plan.keys, plan.paths, soft=plan.soft)

    def purge_sync(
        self, keys: Sequence[str] = (), paths: Sequence[str] = (), *, soft: bool = False
    ) -> PurgeResult:
        """:meth:`purge` for a synchronous handler running on a worker thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            # Blocking the loop on itself would deadlock: async handlers await purge().
            raise NotAvailableError("cache.purge_sync", "an async handler must await purge()")
        future = asyncio.run_coroutine_threadsafe(self.purge(keys, paths, soft=soft), self._loop)
        return future.result()


def _client_for(context: Context) -> CacheClient:
    if not _active:
        raise NotAvailableError("cache", "no edge is running in this process")
    # An edge here purges its own store at once; a publish-only purger is the fallback.
    edges = [(purge, loop) for purge, loop, edge in _active if edge]
    purge, loop = edges[-1] if edges else _active[-1][:2]
    return CacheClient(purge, loop, context)


def activate(purge: PurgeCall, *, edge: bool = True) -> None:
    """Serve ``context.cache`` from ``purge`` on the running loop.

    ``edge=True``: an edge starting in this process; ``edge=False``: a
    publish-only purger, used while no edge runs here.
    """
    from reflow.functions.context import register_client

    _active.append((purge, asyncio.get_running_loop(), edge))
    register_client("cache", _client_for)


def deactivate(purge: PurgeCall) -> None:
    """Stop serving ``context.cache`` from ``purge`` (its edge or purger is stopping)."""
    for index, (active, _, _) in enumerate(_active):
        if active == purge:
            del _active[index]
            return
