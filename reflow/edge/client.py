"""``context.cache``: purging the edge from a function.

``await context.cache.purge(keys=[...], paths=[...], soft=False)`` purges the
edge running in this process and, through its :class:`~reflow.edge.purge.Purger`,
every other edge subscribed to the backend's ``PubSub`` purge channel; it
returns the number of objects purged here. A synchronous handler calls
``context.cache.purge_sync(...)``. In a ``process`` worker the runtime proxies
the call to this client on the server side, so the authorisation hook runs
where the handler cannot step around it.

Every key and path is authorised before anything is purged, as action
``cache:purge`` on resource ``key/<key>`` or ``path<path>`` (``path/img/*``):
a refusal purges nothing.

:class:`~reflow.edge.service.EdgeService` installs the client when it starts
(:func:`activate`); with no edge in the process the client raises
:class:`~reflow.errors.NotAvailableError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from reflow.edge.purge import PurgePlan
from reflow.errors import NotAvailableError

if TYPE_CHECKING:
    from reflow.functions.context import Context

__all__ = ["CacheClient", "activate", "deactivate"]

# purge(keys, paths, soft) -> count, as EdgeService.purge
PurgeCall = Callable[..., Awaitable[int]]

# The running edges of this process, newest last, with the loop each runs on.
_active: list[tuple[PurgeCall, asyncio.AbstractEventLoop]] = []


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
    ) -> int:
        """Purge ``keys`` and ``paths`` on every edge; the count of objects purged here."""
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
    ) -> int:
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
    purge, loop = _active[-1]
    return CacheClient(purge, loop, context)


def activate(purge: PurgeCall) -> None:
    """Serve ``context.cache`` from ``purge`` (an edge starting on the running loop)."""
    from reflow.functions.context import register_client

    _active.append((purge, asyncio.get_running_loop()))
    register_client("cache", _client_for)


def deactivate(purge: PurgeCall) -> None:
    """Stop serving ``context.cache`` from ``purge`` (its edge is stopping)."""
    for index, (active, _) in enumerate(_active):
        if active == purge:
            del _active[index]
            return
