"""Platform clients from process workers: proxied to the runtime, authorised there."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from reflow.app import FunctionConfig
from reflow.backends import memory_backend
from reflow.errors import HandlerError, PermissionDeniedError
from reflow.functions import Context, Runtime, register_client
from reflow.functions.context import _factories
from tests.functional.functions.sample_app import app


async def test_a_worker_reads_and_writes_blobs_through_the_runtime() -> None:
    backend = memory_backend()
    async with Runtime(app, backend=backend, serve=False) as runtime:
        result = await runtime.invoke("store", {"key": "site/a.txt", "text": "héllo"})
    stored = await backend.blobs.get("site/a.txt")
    assert stored is not None and stored.data == "héllo".encode()
    assert stored.info.content_type == "text/plain"
    expected = '"' + hashlib.md5("héllo".encode(), usedforsecurity=False).hexdigest() + '"'
    assert result == {"etag": expected, "text": "héllo", "listed": ["site/a.txt"]}


async def test_async_handlers_in_workers_await_the_same_client_with_binary_data() -> None:
    backend = memory_backend()
    async with Runtime(app, backend=backend, serve=False) as runtime:
        result = await runtime.invoke("store_async", {"key": "bin"})
    assert result == {"size": 8, "missing": "NotAvailableError", "deleted": False}
    blob = await backend.blobs.get("bin")
    assert blob is not None and blob.data == b"\x00\xffbinary"


async def test_the_authorisation_hook_runs_in_the_runtime_for_worker_calls() -> None:
    seen: list[tuple[str, tuple[str, ...], str, str]] = []

    def only_site(function: FunctionConfig, action: str, resource: str) -> None:
        seen.append((function.name, function.permissions, action, resource))
        if not resource.startswith("site/"):
            raise PermissionDeniedError(function.name, action, resource)

    backend = memory_backend()
    async with Runtime(app, backend=backend, authorizer=only_site, serve=False) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("store", {"key": "secret/x", "text": "no"})
    assert caught.value.error_type == "PermissionDeniedError"
    assert "may not blobs:write 'secret/x'" in caught.value.error_message
    assert seen == [("store", ("blobs:write:site/*",), "blobs:write", "secret/x")]
    assert await backend.blobs.head("secret/x") is None


async def test_without_a_backend_worker_blob_calls_are_not_available() -> None:
    async with Runtime(app) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("store", {"key": "site/a", "text": "x"})
    assert caught.value.error_type == "NotAvailableError"
    assert "context.blobs is not available" in caught.value.error_message


@dataclasses.dataclass(frozen=True)
class _Receipt:
    accepted: int
    ids: tuple[str, ...]


class _FakeBus:
    """A stand-in events client, as reflow.events would register one."""

    def __init__(self, context: Context, sink: list[Any]) -> None:
        self.context = context
        self.sink = sink

    async def put_events(self, entries: list[dict[str, Any]]) -> _Receipt:
        self.context.authorize("events:put", "default")
        self.sink.extend(entries)
        return _Receipt(len(entries), tuple(f"id-{e['n']}" for e in entries))


async def test_a_registered_client_is_proxied_from_workers_generically() -> None:
    sink: list[Any] = []
    hooks: list[tuple[str, str, str]] = []

    def hook(function: FunctionConfig, action: str, resource: str) -> None:
        hooks.append((function.name, action, resource))

    register_client("events", lambda context: _FakeBus(context, sink))
    try:
        async with Runtime(app, authorizer=hook) as runtime:
            result = await runtime.invoke("emits", {"n": 1})
    finally:
        _factories.pop("events")
    assert result == {
        "first": {"accepted": 1, "ids": ["id-1"]},
        "second": {"accepted": 1, "ids": ["id-2"]},
    }
    assert sink == [{"source": "cms", "n": 1}, {"source": "cms", "n": 2}]
    assert hooks == [("emits", "events:put", "default")] * 2


async def test_an_unregistered_client_is_not_available_where_the_worker_reaches_it() -> None:
    async with Runtime(app) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("emits", {"n": 1})
    assert caught.value.error_type == "NotAvailableError"
    assert "context.events is not available" in caught.value.error_message
