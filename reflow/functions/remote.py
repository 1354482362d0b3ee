"""Platform clients inside a ``process`` worker, proxied over the worker's socket.

A worker has no connection to the backend, and should not: the runtime is the
trusted side, and the authorisation hook must not be something a sandboxed
handler can step around. So ``context.blobs`` in a worker is a
:class:`RemoteBlobs` that turns each call into a ``CALL`` frame; the runtime
(:func:`serve_call`) performs it through the invocation's own server-side
:class:`Context` — authorisation hook included — and answers with a
``REPLY`` frame. The handler sees the same methods as inline (``await
context.blobs.put(...)`` or ``context.blobs.sync.put(...)``).

The object store has a typed proxy (bytes travel as base64), and so has the
event bus (:class:`RemoteEvents`: ``reflow.Event`` objects travel as their
CloudEvent JSON, and the runtime authorises ``events:put`` on the bus through
the invocation's context, as inline). Every other
client is proxied generically once its subsystem registers it
(:func:`register_client`): ``await context.tables.get(...)`` in a worker
becomes a call of the server-side client's ``get`` with the same JSON
arguments, its result (dataclasses as dicts) sent back. Synchronous handlers
use ``context.<client>.sync.<method>(...)``, as with blobs. The first use of
a client probes whether the runtime can serve it, so an unregistered one
raises :class:`NotAvailableError` where it is reached, as inline. The probe
costs no round trip for the clients the runtime named available
(:func:`available_clients`, in an ``INVOKE`` frame whenever the list differs
from what that worker was last told): the worker answers it itself. Only a
client missing from that list is asked about, and the runtime's answer
gives the error its inline message. A client that stops between the frame
and the call is still refused, with the same error, at its first method
call, because every call is performed through the runtime's own context.
A refusal, an unavailable client and the errors a handler may catch by type
(the flows and secrets clients', a malformed argument's ``ValueError``) are
raised in the worker as the same classes; anything else as
:class:`PlatformCallError`.
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from reflow.errors import (
    FunctionError,
    InvalidEventError,
    NotAvailableError,
    PermissionDeniedError,
)
from reflow.functions.context import CLIENT_NAMES, registered_client

if TYPE_CHECKING:
    from reflow.backends.protocols import Blob, BlobInfo
    from reflow.functions.context import Context

PROBE = "__probe__"  # asks whether the runtime can serve a client at all
# The clients whose first use probes (blobs has its own typed proxy, which
# does not): what available_clients() reports on.
_PROBED = tuple(name for name in CLIENT_NAMES if name != "blobs")

__all__ = [
    "PROBE",
    "available_clients",
    "PlatformCallError",
    "RemoteBlobs",
    "RemoteClient",
    "RemoteEvents",
    "serve_call",
]

Call = Callable[[str, str, dict[str, Any]], Any]


class PlatformCallError(FunctionError):
    """A proxied platform call failed in the runtime with an unexpected error."""

    def __init__(self, error_type: str, error_message: str) -> None:
        self.error_type = error_type
        self.error_message = error_message
        super().__init__(f"platform call failed: {error_type}: {error_message}")


def available_clients() -> list[str]:
    """The probed clients the runtime's context would build now, for an ``INVOKE`` frame.

    A worker answers the probe for these itself, saving a round trip per
    invocation. Computed per invocation (a few dictionary lookups) rather
    than cached, so that a subsystem stopping or starting while a worker
    lives is seen by that worker's next invocation: the runtime sends the
    list whenever it differs from the one that worker holds.
    """
    # secrets is built in (files need no subsystem), so it is always served.
    return [name for name in _PROBED if name == "secrets" or registered_client(name) is not None]


def _info_to_json(info: BlobInfo) -> dict[str, Any]:
    return {
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "content_type": info.content_type,
        "modified": info.modified,
        "metadata": dict(info.metadata),
    }


def _info_from_json(data: Mapping[str, Any]) -> BlobInfo:
    from reflow.backends.protocols import BlobInfo

    return BlobInfo(
        key=data["key"],
        size=int(data["size"]),
        etag=data["etag"],
        content_type=data["content_type"],
        modified=float(data["modified"]),
        metadata=dict(data["metadata"]),
    )


# Errors of the flows and secrets clients that a handler may catch by type:
# the runtime sends their fields and the worker raises the same class again.
_TYPED = {
    "ExecutionAlreadyExistsError": ("reflow.errors", ("name",)),
    "ExecutionNotFoundError": ("reflow.errors", ("name",)),
    "InvalidExecutionRequestError": ("reflow.flows.store", ("field", "problem")),
    "SecretNotFoundError": ("reflow.errors", ("name", "reason")),
}


def _typed_class(kind: str) -> type[Exception] | None:
    """The class :data:`_TYPED` names ``kind`` by (imported only when one is met)."""
    import importlib

    found = _TYPED.get(kind)
    if found is None:
        return None
    cls: type[Exception] = getattr(importlib.import_module(found[0]), kind)
    return cls


def _typed_reply(exc: Exception) -> dict[str, Any]:
    """The ``error`` of a REPLY for an exception the worker should see as its own type."""
    kind = type(exc).__name__
    reply: dict[str, Any] = {"type": kind, "message": str(exc)}
    cls = _typed_class(kind)
    if cls is not None and type(exc) is cls:
        reply["fields"] = {name: getattr(exc, name) for name in _TYPED[kind][1]}
    return reply


def raise_remote(error: Mapping[str, Any]) -> None:
    """Raise, in the worker, the error the runtime reported for a call."""
    kind, fields = error.get("type"), error.get("fields") or {}
    if isinstance(kind, str) and kind in _TYPED and fields:
        cls = _typed_class(kind)
        assert cls is not None
        raise cls(**fields)
    if kind == "ValueError":
        # A malformed argument (a secret's name, say): the same type as inline.
        raise ValueError(str(error.get("message")))
    if kind == "PermissionDeniedError":
        raise PermissionDeniedError(fields["function"], fields["action"], fields["resource"])
    if kind == "NotAvailableError":
        raise NotAvailableError(fields["client"], fields["reason"])
    if kind == "InvalidEventError":
        raise InvalidEventError(fields["field"], fields["problem"])
    raise PlatformCallError(str(kind), str(error.get("message")))


async def serve_call(context: Context, body: Mapping[str, Any]) -> dict[str, Any]:
    """Perform one proxied call through ``context``; the ``REPLY`` body."""
    try:
        client, method, args = body["c"], body["m"], body.get("a") or {}
        if client == "blobs":
            return {"ok": await _serve_blobs(context, method, args)}
        if client == "events":
            return {"ok": await _serve_events(context, method, args)}
        return {"ok": await _serve_generic(context, client, method, args)}
    except PermissionDeniedError as exc:
        fields = {"function": exc.function, "action": exc.action, "resource": exc.resource}
        return {"error": {"type": "PermissionDeniedError", "message": str(exc), "fields": fields}}
    except NotAvailableError as exc:
        fields = {"client": exc.client, "reason": exc.reason}
        return {"error": {"type": "NotAvailableError", "message": str(exc), "fields": fields}}
    except InvalidEventError as exc:
        fields = {"field": exc.field, "problem": exc.problem}
        return {"error": {"type": "InvalidEventError", "message": str(exc), "fields": fields}}
    except Exception as exc:
        return {"error": _typed_reply(exc)}


async def _serve_generic(
    context: Context, client: str, method: str, args: Mapping[str, Any]
) -> Any:
    """Any other registered client: a public method, JSON arguments and result."""
    if client not in CLIENT_NAMES:
        raise NotAvailableError(client, "no such platform client")
    target = getattr(context, client)  # NotAvailableError when nothing registered it
    if method == PROBE:
        return None
    if method.startswith("_") or not callable(getattr(target, method, None)):
        raise NotAvailableError(client, f"it has no method {method!r}")
    result = getattr(target, method)(*args.get("args", ()), **args.get("kwargs", {}))
    if inspect.isawaitable(result):
        result = await result
    if result is None or type(result) in _JSON_SCALARS:
        return result  # a secret's text, a count: nothing to convert or check
    value = _plain(result)
    json.dumps(value)  # refuse here, as an error reply, what the frame could not carry
    return value


# Results that JSON carries as they are (exact types: a subclass may not be).
_JSON_SCALARS = frozenset({str, int, float, bool})


def _plain(value: Any) -> Any:
    """Dataclasses as dicts, tuples as lists: what JSON can carry."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def _serve_blobs(context: Context, method: str, args: Mapping[str, Any]) -> Any:
    blobs = context.blobs
    if method == "put":
        info = await blobs.put(
            args["key"],
            base64.b64decode(args["data"]),
            content_type=args["content_type"],
            metadata=args.get("metadata"),
        )
        return _info_to_json(info)
    if method == "get":
        blob = await blobs.get(args["key"])
        if blob is None:
            return None
        return {"info": _info_to_json(blob.info), "data": base64.b64encode(blob.data).decode()}
    if method == "head":
        found = await blobs.head(args["key"])
        return None if found is None else _info_to_json(found)
    if method == "list":
        return [_info_to_json(i) for i in await blobs.list(args["prefix"], limit=args["limit"])]
    if method == "delete":
        return await blobs.delete(args["key"])
    raise NotAvailableError("blobs", f"unknown method {method!r}")


async def _serve_events(context: Context, method: str, args: Mapping[str, Any]) -> Any:
    """``put`` typed; the probe and any other method of the registered client generically."""
    if method != "put":
        return await _serve_generic(context, "events", method, args)
    # The server-side client authorises events:put on the bus.
    return list(await context.events.put(list(args["entries"]), bus=str(args["bus"])))


def _event_json(entry: Any) -> Any:
    """An entry as JSON: a ``reflow.Event`` as its CloudEvent, anything else as given."""
    from reflow.events.model import Event

    return entry.to_cloudevent() if isinstance(entry, Event) else entry


class _RemoteBlobsSync:
    """The object store's calls, each one round trip to the runtime."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Store an object under ``key``."""
        args = {
            "key": key,
            "data": base64.b64encode(bytes(data)).decode(),
            "content_type": content_type,
            "metadata": dict(metadata or {}),
        }
        return _info_from_json(self._call("blobs", "put", args))

    def get(self, key: str) -> Blob | None:
        """The object, or None."""
        from reflow.backends.protocols import Blob

        found = self._call("blobs", "get", {"key": key})
        if found is None:
            return None
        return Blob(_info_from_json(found["info"]), base64.b64decode(found["data"]))

    def head(self, key: str) -> BlobInfo | None:
        """The object's information, or None."""
        found = self._call("blobs", "head", {"key": key})
        return None if found is None else _info_from_json(found)

    def list(self, prefix: str = "", *, limit: int | None = None) -> list[BlobInfo]:
        """Objects under ``prefix``."""
        rows = self._call("blobs", "list", {"prefix": prefix, "limit": limit})
        return [_info_from_json(row) for row in rows]

    def delete(self, key: str) -> bool:
        """Remove an object."""
        return bool(self._call("blobs", "delete", {"key": key}))


class RemoteBlobs:
    """``context.blobs`` in a worker: the inline client's methods, proxied."""

    def __init__(self, call: Call) -> None:
        self.sync = _RemoteBlobsSync(call)

    # The worker's event loop runs only this invocation, so the async
    # methods may block on the socket without starving anything.

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Store an object under ``key``."""
        return self.sync.put(key, data, content_type=content_type, metadata=metadata)

    async def get(self, key: str) -> Blob | None:
        """The object, or None."""
        return self.sync.get(key)

    async def head(self, key: str) -> BlobInfo | None:
        """The object's information, or None."""
        return self.sync.head(key)

    async def list(self, prefix: str = "", *, limit: int | None = None) -> list[BlobInfo]:
        """Objects under ``prefix``."""
        return self.sync.list(prefix, limit=limit)

    async def delete(self, key: str) -> bool:
        """Remove an object."""
        return self.sync.delete(key)


class _RemoteMethods:
    """``client.sync``: each attribute a blocking call of the runtime's client."""

    def __init__(self, client: str, call: Call) -> None:
        self._name = client
        self._call = call

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def invoke(*args: Any, **kwargs: Any) -> Any:
            return self._call(self._name, method, {"args": list(args), "kwargs": kwargs})

        return invoke


class RemoteClient:
    """Any registered platform client, in a worker: its methods, proxied."""

    def __init__(self, client: str, call: Call) -> None:
        call(client, PROBE, {})  # NotAvailableError now, where the client is reached
        self.sync = _RemoteMethods(client, call)

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        blocking = getattr(self.sync, method)

        async def invoke(*args: Any, **kwargs: Any) -> Any:
            return blocking(*args, **kwargs)

        return invoke


class _RemoteEventsSync(_RemoteMethods):
    """The bus's calls, each one round trip to the runtime."""

    def put(self, entries: Any, *, bus: str = "default") -> list[str]:
        """Put one event (an Event or a JSON object) or a list of them on ``bus``; their ids."""
        from reflow.events.model import Event

        # One event (a JSON object or an Event), or any iterable of them, as inline.
        batch = [entries] if isinstance(entries, Mapping | Event) else list(entries)
        args = {"entries": [_event_json(entry) for entry in batch], "bus": bus}
        return [str(i) for i in self._call("events", "put", args)]


class RemoteEvents(RemoteClient):
    """``context.events`` in a worker: ``put`` (async), ``put_sync`` and ``sync.put``.

    Any other method of the client registered as ``events`` is proxied
    generically, as :class:`RemoteClient` does.
    """

    def __init__(self, call: Call) -> None:
        super().__init__("events", call)
        self.sync: _RemoteEventsSync = _RemoteEventsSync("events", call)

    async def put(self, entries: Any, *, bus: str = "default") -> list[str]:
        """Put events on ``bus``; return their ids once durable."""
        return self.sync.put(entries, bus=bus)

    def put_sync(self, entries: Any, *, bus: str = "default") -> list[str]:
        """:meth:`put` for a synchronous handler, as inline."""
        return self.sync.put(entries, bus=bus)
