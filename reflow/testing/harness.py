"""Call an app's handlers in a unit test, with a real ``context`` over memory.

A handler is a plain function, so a test can call it directly; what it cannot
do without help is reach the platform through ``context``. :class:`Harness`
gives it one: ``context.blobs`` over an in-memory object store and
``context.cache`` recording the purges instead of reaching an edge::

    from reflow.testing import Harness

    def test_render_writes_the_page_and_purges_it():
        with Harness(app) as harness:
            harness.invoke("render", {"detail": {"slug": "hello", ...}})
            assert b"Hello" in harness.blob("site/articles/hello")
            assert harness.purged_paths == ["/articles/hello", "/"]

Plain and ``async def`` handlers both work: the harness runs an event loop on
a thread of its own, as the runtime does, so ``context.blobs.sync`` and
``context.cache.purge_sync`` behave as they do under ``reflow run``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from reflow.app import App
from reflow.backends.memory import MemoryBlobs
from reflow.backends.protocols import Blobs
from reflow.edge.purge import PurgePlan, PurgeResult
from reflow.errors import FunctionNotFoundError, NotAvailableError
from reflow.functions.context import Context

__all__ = ["Harness", "RecordingCache"]

T = TypeVar("T")


class RecordingCache:
    """``context.cache`` for tests: validates and records purges, purges nothing."""

    def __init__(self) -> None:
        self.plans: list[PurgePlan] = []

    async def purge(
        self, keys: Sequence[str] = (), paths: Sequence[str] = (), *, soft: bool = False
    ) -> PurgeResult:
        """Record the purge (after the edge's own validation); 0 objects, on no edge."""
        return self.purge_sync(keys, paths, soft=soft)

    def purge_sync(
        self, keys: Sequence[str] = (), paths: Sequence[str] = (), *, soft: bool = False
    ) -> PurgeResult:
        """:meth:`purge` for a synchronous handler."""
        # PurgePlan.of refuses what the real edge refuses (a path without '/').
        self.plans.append(PurgePlan.of(keys, paths, soft=soft))
        return PurgeResult()  # an int, like the real client's, with .edges and .missing


class _HarnessContext(Context):
    """A :class:`Context` whose ``cache`` is the harness's recorder."""

    def __init__(self, *args: Any, recorder: RecordingCache, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorder = recorder

    @property
    def cache(self) -> RecordingCache:
        """Purges are recorded on the harness, not sent to an edge."""
        return self._recorder


class Harness:
    """Invoke an app's functions with a context over in-memory blobs.

    Use it as a context manager: it owns an event loop thread, stopped on exit.
    """

    def __init__(self, app: App, *, blobs: Blobs | None = None) -> None:
        self.app = app
        self.blobs: Blobs = blobs if blobs is not None else MemoryBlobs()
        self.cache = RecordingCache()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Harness:
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name="reflow-testing-harness", daemon=True
        )
        self._loop = loop
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the harness's loop and return its result."""
        if self._loop is None:
            coroutine.close()
            raise NotAvailableError("harness", "use the Harness in a with block")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def context(self, name: str) -> Context:
        """A fresh context for function ``name``, as one invocation gets."""
        function = self.app.functions.get(name)
        if function is None:
            raise FunctionNotFoundError(name)
        return _HarnessContext(function, blobs=self.blobs, loop=self._loop, recorder=self.cache)

    def invoke(self, name: str, event: Any = None) -> Any:
        """Call function ``name`` with ``event`` and a fresh context; its result."""
        context = self.context(name)
        function = self.app.functions[name]
        if function.is_async:
            return self.run(function.handler(event, context))
        if self._loop is None:
            raise NotAvailableError("harness", "use the Harness in a with block")
        # A plain handler runs on the caller's thread, off the loop, as on a
        # runtime worker thread: its .sync calls are served by the loop.
        return function.handler(event, context)

    def blob(self, key: str) -> bytes | None:
        """The bytes stored under ``key`` (``bucket/path``), or None."""
        found = self.run(self.blobs.get(key))
        return None if found is None else found.data

    @property
    def purged_paths(self) -> list[str]:
        """Every path purged so far, in order."""
        return [path for plan in self.cache.plans for path in plan.paths]

    @property
    def purged_keys(self) -> list[str]:
        """Every surrogate key purged so far, in order."""
        return [key for plan in self.cache.plans for key in plan.keys]
