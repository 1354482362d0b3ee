"""The functions runtime: invoke an App's functions, synchronously or as events.

:class:`Runtime` owns one pool per function (``pools.py``), the zygote that
process pools fork from (``sandbox.py``), the per-function metrics
(``metrics.py``) and, when it has a backend, the durable queue of
asynchronous invocations (``invocations.py``)::

    async with Runtime(app, backend=backend) as runtime:
        result = await runtime.invoke("render", {"id": 7})        # RequestResponse
        request_id = await runtime.invoke_async("render", {...})  # Event

A synchronous invocation returns the handler's result or raises from the
``FunctionError`` tree: :class:`HandlerError` (with Lambda's ``errorType`` and
``errorMessage``), :class:`FunctionTimeoutError`, :class:`FunctionCrashedError`
or :class:`ThrottledError`. An asynchronous one is durable in the backend's
``Log`` before ``invoke_async`` returns, and is retried, routed to its
destinations or dead-lettered there.

Process isolation needs the app to be importable by a fresh interpreter:
the runtime finds the module that defines the App (or takes ``target``,
anything ``reflow run`` accepts) and hands it to the zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from typing import Any

from reflow.app import App
from reflow.backends import Backend
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.errors import FunctionNotFoundError, RegistrationError
from reflow.functions.context import Authorizer, allow_all
from reflow.functions.invocations import DLQ_RETENTION, AsyncInvocations
from reflow.functions.metrics import FunctionMetrics
from reflow.functions.pools import InlinePool, Pool, ProcessPool
from reflow.functions.sandbox import Zygote

__all__ = ["Runtime", "app_target", "invoke_once", "metrics_key", "new_request_id"]


def app_target(app: App) -> str:
    """``path/to/module.py:attribute`` naming ``app``, for the zygote to import."""
    for function in app.functions.values():
        module = sys.modules.get(getattr(function.handler, "__module__", "") or "")
        path = getattr(module, "__file__", None)
        if module is None or not path:
            continue
        for attribute, value in vars(module).items():
            if value is app:
                return f"{path}:{attribute}"
    raise RegistrationError(
        app.name,
        "process isolation needs the app's module: define the App at module level "
        "in an importable file, or pass target='module:attribute'",
    )


METRICS_EVERY = 10.0  # seconds between metrics snapshots written to the backend
METRICS_TTL = 3600.0


def metrics_key(app: str, function: str) -> str:
    """The KV key holding ``function``'s latest metrics snapshot."""
    return f"functions/metrics/{app}/{function}"


_bits = random.SystemRandom().getrandbits(64)
_random = random.Random(_bits)


def new_request_id() -> str:
    """A random (version 4) UUID as text, cheaper than ``str(uuid.uuid4())``.

    Request ids must be unique, not secret: a seeded generator suffices and
    saves the system call on the hot path of every invocation.
    """
    value = _random.getrandbits(128)
    value = (value & ~(0xF << 76)) | (0x4 << 76)  # the version nibble: 4
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # the variant bits: RFC 4122
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Runtime:
    """Runs an App's functions: pools, zygote, metrics and the async queue."""

    def __init__(
        self,
        app: App,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
        authorizer: Authorizer = allow_all,
        region: str = "local",
        target: str | None = None,
        keep_alive: float = 600.0,
        spawn: bool = False,
        serve: bool = True,
        dlq_retention: float = DLQ_RETENTION,
    ) -> None:
        self.app = app
        self.dlq_retention = dlq_retention  # seconds a dead letter is kept
        # serve=False: a one-off runtime (``reflow invoke``) that neither
        # consumes the async queue nor publishes metrics over a server's.
        self.serve = serve
        self.backend = backend
        self.clock = clock or (backend.clock if backend is not None else SYSTEM_CLOCK)
        self.authorizer = authorizer
        self.region = region
        self.keep_alive = keep_alive
        self.spawn = spawn
        self._target = target
        self.metrics: dict[str, FunctionMetrics] = {
            name: FunctionMetrics(name) for name in app.functions
        }
        self.pools: dict[str, Pool] = {}
        self.zygote: Zygote | None = None
        self.invocations: AsyncInvocations | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._started = False
        self._starting: asyncio.Lock | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the zygote, provisioned workers and the async consumers."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._started:
                return
            await self._start()
            self._started = True

    async def _start(self) -> None:
        functions = self.app.functions
        for name in functions:  # registered after this runtime was built
            self.metrics.setdefault(name, FunctionMetrics(name))
        if any(f.isolation == "process" for f in functions.values()):
            self.zygote = Zygote(self._target or app_target(self.app))
            await self.zygote.start()
        blobs = self.backend.blobs if self.backend is not None else None
        for name, config in functions.items():
            if config.isolation == "process":
                assert self.zygote is not None
                self.pools[name] = ProcessPool(
                    config,
                    self.metrics[name],
                    self.zygote,
                    clock=self.clock,
                    keep_alive=self.keep_alive,
                    spawn=self.spawn,
                    region=self.region,
                    authorizer=self.authorizer,
                    blobs=blobs,
                )
            else:
                self.pools[name] = InlinePool(
                    config,
                    self.metrics[name],
                    clock=self.clock,
                    region=self.region,
                    authorizer=self.authorizer,
                    blobs=blobs,
                )
        await asyncio.gather(*(pool.start() for pool in self.pools.values()))
        if any(isinstance(p, ProcessPool) for p in self.pools.values()):
            self._janitor = asyncio.create_task(self._retire_idle_workers())
        if self.backend is not None and self.serve:
            self.invocations = AsyncInvocations(
                self, self.backend.log, self.clock, dlq_retention=self.dlq_retention
            )
            await self.invocations.start()
            self._publisher = asyncio.create_task(self._publish_metrics_every(METRICS_EVERY))

    async def stop(self) -> None:
        """Stop consumers, workers and the zygote; in-flight async events stay queued."""
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        if self.backend is not None and self._started and self.serve:
            with contextlib.suppress(Exception):  # metrics are best effort at shutdown
                await self.publish_metrics()
        if self.invocations is not None:
            await self.invocations.stop()
            self.invocations = None
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
            self._janitor = None
        for pool in self.pools.values():
            await pool.close()
        self.pools.clear()
        if self.zygote is not None:
            await self.zygote.close()
            self.zygote = None
        self._started = False

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish_metrics(self) -> None:
        """Write every function's snapshot to the backend's KV, for other processes.

        ``reflow functions list`` and the dashboard read them from there; each
        key expires unless refreshed, so a stopped runtime's figures age out.
        """
        if self.backend is None:
            return
        for row in self.snapshot():
            key = metrics_key(self.app.name, row["name"])
            await self.backend.kv.put(key, json.dumps(row).encode(), ttl=METRICS_TTL)

    async def _publish_metrics_every(self, seconds: float) -> None:
        while True:
            await self.clock.sleep(seconds)
            with contextlib.suppress(Exception):  # a backend hiccup must not stop the runtime
                await self.publish_metrics()

    async def _retire_idle_workers(self) -> None:
        interval = max(1.0, self.keep_alive / 4)
        while True:
            await self.clock.sleep(interval)
            for pool in list(self.pools.values()):
                await pool.retire_idle()

    # -- invoking -------------------------------------------------------------

    def pool(self, name: str) -> Pool:
        """The pool running ``name``."""
        pool = self.pools.get(name)
        if pool is None:
            raise FunctionNotFoundError(name)
        return pool

    async def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        request_id: str | None = None,
        wait: bool = False,
    ) -> Any:
        """Run ``name`` now and return its result (Lambda's ``RequestResponse``).

        Over the function's reserved concurrency this raises
        :class:`ThrottledError`, unless ``wait`` asks to queue for a slot.
        """
        if not self._started:
            await self.start()
        pool = self.pool(name)
        return await pool.invoke(payload, request_id or new_request_id(), wait=wait)

    async def invoke_async(self, name: str, payload: Any = None) -> str:
        """Queue an event invocation (Lambda's ``Event``); return its request id.

        When this returns, the invocation is durable in the backend's log; it
        will be run, retried, and finally recorded at a destination or in the
        dead-letter queue — never dropped.
        """
        if not self._started:
            await self.start()
        if name not in self.app.functions:
            raise FunctionNotFoundError(name)
        if self.invocations is None:
            raise RegistrationError(name, "asynchronous invocations need a runtime with a backend")
        return await self.invocations.submit(name, payload)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every function's configuration and metrics, for the CLI and dashboard."""
        rows = []
        for name, config in sorted(self.app.functions.items()):
            row = self.metrics[name].snapshot()
            pool = self.pools.get(name)
            row.update(
                isolation=config.isolation,
                timeout=config.timeout,
                memory_mb=config.memory_mb,
                provisioned=config.provisioned,
                reserved=config.reserved,
                workers=pool.workers if isinstance(pool, ProcessPool) else None,
            )
            rows.append(row)
        return rows


def invoke_once(app: App, name: str, payload: Any = None, *, target: str | None = None) -> Any:
    """Run ``name`` once through a fresh runtime and return its result (blocking).

    For scripts and tests outside an event loop: it starts the runtime (and,
    for process isolation, the zygote), invokes, and stops it again.
    """

    async def run() -> Any:
        async with Runtime(app, target=target, serve=False) as runtime:
            return await runtime.invoke(name, payload)

    return asyncio.run(run())
