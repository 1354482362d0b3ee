"""Platform clients from process workers: proxied to the runtime, authorised there."""

from __future__ import annotations

import hashlib

import pytest

from reflow.app import FunctionConfig
from reflow.backends import memory_backend
from reflow.errors import HandlerError, PermissionDeniedError
from reflow.functions import Runtime
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
