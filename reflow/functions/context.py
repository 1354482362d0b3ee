"""The ``context`` a handler receives: Lambda's attributes and reflow's clients.

A handler written for AWS Lambda reads ``context.function_name``,
``context.aws_request_id``, ``context.get_remaining_time_in_millis()`` and so
on; :class:`Context` carries all of them, so such a handler runs unchanged.

It is also the single door through which a handler reaches platform
resources: ``context.blobs``, ``context.tables``, ``context.events``,
``context.cache``, ``context.secrets``, ``context.flows`` and
``context.limits``. Every call made through one of them passes through one
authorisation hook, ``authorize(function, action, resource)``, which sees the
function's declared ``permissions``. The hook allows everything until
enforcement lands (``reflow.security``); the seam and the declarations exist
from the start so that turning enforcement on changes no handler.

A client whose subsystem is not available in this build or in this
isolation mode raises :class:`NotAvailableError` when it is reached, rather
than pretending to work. Subsystems plug their clients in with
:func:`register_client`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from reflow.app import FunctionConfig
from reflow.errors import NotAvailableError

# ``import reflow`` brings this module in, and so does every app: keep asyncio,
# logging, uuid and the backends out of its import (together they cost tens
# of milliseconds at every cold start and in the import floor) and reach for
# them only when a context actually needs them.
if TYPE_CHECKING:
    import asyncio
    import logging

    from reflow.backends.protocols import Blob, BlobInfo, Blobs
    from reflow.clock import Clock

__all__ = [
    "CLIENT_NAMES",
    "Authorizer",
    "BlobsClient",
    "ClientFactory",
    "Context",
    "allow_all",
    "function_arn",
    "log_stream_for",
    "register_client",
    "registered_client",
    "unregister_client",
]

T = TypeVar("T")

CLIENT_NAMES = ("blobs", "cache", "events", "flows", "limits", "secrets", "tables")

# Which issue brings each client that is not built yet, for the error message.
_PENDING = {
    "tables": "the state subsystem (reflow.state, issue 7)",
    "limits": "the state subsystem's rate limits (reflow.state.limits, issue 7)",
    "events": "the event bus (reflow.events, issue 3)",
    "flows": "the flows service (reflow.flows.server), which `reflow run` starts for an app "
    "that declares flows",
    "cache": "the edge cache (reflow.edge, issue 5)",
    "blobs": "a backend (the runtime was built without one)",
}


class Authorizer(Protocol):
    """The one authorisation hook every platform call passes through.

    ``action`` is ``"service:verb"`` (``"blobs:write"``), ``resource`` the
    thing acted on (``"site/index.html"``); ``function.permissions`` holds the
    declarations (``"blobs:write:site/*"``). Raise
    :class:`reflow.errors.PermissionDeniedError` to refuse.
    """

    def __call__(self, function: FunctionConfig, action: str, resource: str) -> None: ...


def allow_all(function: FunctionConfig, action: str, resource: str) -> None:
    """The hook until enforcement lands: every call is allowed."""


def log_stream_for(clock: Clock | None = None, version: str = "$LATEST") -> str:
    """A fresh execution environment's log stream name, Lambda's way."""
    day = time.strftime("%Y/%m/%d", time.gmtime(clock.time() if clock else time.time()))
    return f"{day}/[{version}]{os.urandom(16).hex()}"


def _uuid4() -> str:
    """``str(uuid.uuid4())`` without importing ``uuid`` at module load."""
    import uuid

    return str(uuid.uuid4())


def function_arn(name: str, region: str, account: str = "000000000000") -> str:
    """The ARN-shaped identifier a handler sees as ``invoked_function_arn``."""
    return f"arn:reflow:lambda:{region}:{account}:function:{name}"


class ClientFactory(Protocol):
    """Builds a platform client for one invocation's context."""

    def __call__(self, context: Context) -> Any: ...


_factories: dict[str, ClientFactory] = {}


def register_client(name: str, factory: ClientFactory) -> None:
    """Install the factory for ``context.<name>``; subsystems call this when they land."""
    if name not in CLIENT_NAMES:
        raise ValueError(f"unknown platform client {name!r}; expected one of {CLIENT_NAMES}")
    _factories[name] = factory


def unregister_client(name: str, factory: ClientFactory) -> None:
    """Remove ``factory`` from ``context.<name>`` if it is still the one installed.

    A subsystem calls this when it stops, so a later context in the same
    process gets ``NotAvailableError`` instead of a client over closed parts.
    """
    if _factories.get(name) is factory:
        del _factories[name]


def registered_client(name: str) -> ClientFactory | None:
    """The factory installed for ``context.<name>``, if its subsystem runs here.

    For callers that hand handlers a context of their own (the edge's hooks).
    """
    return _factories.get(name)


_time_now, _monotonic_now = time.time, time.monotonic


class _RealTime:
    """The system clock's two readings, without importing asyncio for its sleep."""

    def time(self) -> float:
        return _time_now()

    def monotonic(self) -> float:
        return _monotonic_now()

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(max(0.0, seconds))


class Context:
    """What a handler is told about its invocation, and its door to the platform."""

    function_version = "$LATEST"
    identity: Any = None  # Lambda sets these only for mobile SDK calls
    client_context: Any = None

    def __init__(
        self,
        function: FunctionConfig,
        *,
        request_id: str | None = None,
        deadline: float | None = None,
        clock: Clock | None = None,
        region: str = "local",
        authorizer: Authorizer = allow_all,
        blobs: Blobs | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        unavailable: str | None = None,
        log_stream_name: str | None = None,
        remote: Callable[[str, str, dict[str, Any]], Any] | None = None,
    ) -> None:
        self.function = function
        self.function_name = function.name
        self.memory_limit_in_mb = function.memory_mb
        self.aws_request_id = request_id or _uuid4()
        self.invoked_function_arn = function_arn(function.name, region)
        self.log_group_name = f"/reflow/functions/{function.name}"
        # Lambda names a log stream per execution environment, not per request:
        # pools pass their worker's name; a one-off context makes its own.
        self.log_stream_name = log_stream_name or log_stream_for(clock)
        self._clock: Clock = clock if clock is not None else _RealTime()
        now = self._clock.monotonic()
        self._deadline = now + function.timeout if deadline is None else deadline
        self._authorizer = authorizer
        self._blobs = blobs
        self._loop = loop
        self._unavailable = unavailable
        self._remote = remote  # in a process worker: calls proxied to the runtime
        self._clients: dict[str, Any] = {}

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """``reflow.functions.<name>``, tagging records with the request id."""
        # Built on first use: most invocations never log, and a context is
        # created for every one of them.
        adapter = self.__dict__.get("_logger")
        if adapter is None:
            import logging

            adapter = self.__dict__["_logger"] = logging.LoggerAdapter(
                logging.getLogger(f"reflow.functions.{self.function_name}"),
                {"aws_request_id": self.aws_request_id},
            )
        return adapter

    @property
    def request_id(self) -> str:
        """The invocation's id (the same as ``aws_request_id``)."""
        return self.aws_request_id

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the runtime stops this invocation."""
        return max(0, int((self._deadline - self._clock.monotonic()) * 1000))

    def authorize(self, action: str, resource: str) -> None:
        """Pass ``action`` on ``resource`` through the authorisation hook."""
        self._authorizer(self.function, action, resource)

    # -- platform clients ---------------------------------------------------

    @property
    def blobs(self) -> BlobsClient:
        """The object store."""
        client: BlobsClient = self._client("blobs")
        return client

    @property
    def tables(self) -> Any:
        """Tables with items, conditional writes and queries."""
        return self._client("tables")

    @property
    def events(self) -> Any:
        """The event bus: put events."""
        return self._client("events")

    @property
    def cache(self) -> Any:
        """The edge cache: purge by key or surrogate key."""
        return self._client("cache")

    @property
    def secrets(self) -> Any:
        """Secrets mounted as files (``REFLOW_SECRETS_DIR``): ``get(name)``."""
        return self._client("secrets")

    @property
    def flows(self) -> Any:
        """State machines: start, describe and stop executions; answer callback tasks."""
        return self._client("flows")

    @property
    def limits(self) -> Any:
        """Rate limits and counters."""
        return self._client("limits")

    def _client(self, name: str) -> Any:
        client = self._clients.get(name)
        if client is not None:
            return client
        if self._unavailable is not None:
            raise NotAvailableError(name, self._unavailable)
        if self._remote is not None:
            from reflow.functions.remote import RemoteBlobs, RemoteClient, RemoteEvents

            remote: Any
            if name == "blobs":
                remote = RemoteBlobs(self._remote)
            elif name == "events":
                remote = RemoteEvents(self._remote)
            else:
                remote = RemoteClient(name, self._remote)
            self._clients[name] = remote
            return remote
        factory = _factories.get(name)
        if factory is None:
            if name == "blobs" and self._blobs is not None:
                client = BlobsClient(self._blobs, self.authorize, self._loop)
            elif name == "secrets":
                # Built in: files need no subsystem (a registered store would win).
                from reflow.functions.secrets import SecretsClient

                client = SecretsClient(self.authorize)
            else:
                raise NotAvailableError(name, f"it arrives with {_PENDING[name]}")
        else:
            client = factory(self)
        self._clients[name] = client
        return client

    def __repr__(self) -> str:
        return f"Context(function_name={self.function_name!r}, request_id={self.aws_request_id!r})"


class BlobsClient:
    """The object store as a handler sees it: every call authorised first.

    The methods are coroutines for ``async def`` handlers; a synchronous
    handler (which runs in a thread) uses the same calls through ``.sync``.
    """

    def __init__(
        self,
        blobs: Blobs,
        authorize: Callable[[str, str], None],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self._blobs = blobs
        self._authorize = authorize
        self.sync = _SyncBlobs(self, loop)

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Store an object under ``key`` (action ``blobs:write``)."""
        self._authorize("blobs:write", key)
        return await self._blobs.put(key, data, content_type=content_type, metadata=metadata)

    async def get(self, key: str) -> Blob | None:
        """The object, or None (action ``blobs:read``)."""
        self._authorize("blobs:read", key)
        return await self._blobs.get(key)

    async def head(self, key: str) -> BlobInfo | None:
        """The object's information, or None (action ``blobs:read``)."""
        self._authorize("blobs:read", key)
        return await self._blobs.head(key)

    async def list(self, prefix: str = "", *, limit: int | None = None) -> list[BlobInfo]:
        """Objects under ``prefix`` (action ``blobs:list``)."""
        self._authorize("blobs:list", prefix)
        return await self._blobs.list(prefix, limit=limit)

    async def delete(self, key: str) -> bool:
        """Remove an object (action ``blobs:delete``)."""
        self._authorize("blobs:delete", key)
        return await self._blobs.delete(key)


class _SyncBlobs:
    """:class:`BlobsClient`'s calls for synchronous handlers running in a thread."""

    def __init__(self, client: BlobsClient, loop: asyncio.AbstractEventLoop | None) -> None:
        self._client = client
        self._loop = loop

    def _run(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        import asyncio

        if self._loop is None:
            raise NotAvailableError("blobs.sync", "no event loop to run the call on")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            # Blocking the loop on itself would deadlock: async handlers await instead.
            raise NotAvailableError("blobs.sync", "an async handler must await context.blobs")
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Store an object under ``key``."""
        return self._run(
            lambda: self._client.put(key, data, content_type=content_type, metadata=metadata)
        )

    def get(self, key: str) -> Blob | None:
        """The object, or None."""
        return self._run(lambda: self._client.get(key))

    def head(self, key: str) -> BlobInfo | None:
        """The object's information, or None."""
        return self._run(lambda: self._client.head(key))

    def list(self, prefix: str = "", *, limit: int | None = None) -> list[BlobInfo]:
        """Objects under ``prefix``."""
        return self._run(lambda: self._client.list(prefix, limit=limit))

    def delete(self, key: str) -> bool:
        """Remove an object."""
        return self._run(lambda: self._client.delete(key))
