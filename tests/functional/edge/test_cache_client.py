"""``context.cache.purge``: functions purge the edge, authorised, inline and from workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from reflow.app import FunctionConfig
from reflow.backends import Backend, memory_backend
from reflow.edge.service import EdgeService
from reflow.errors import HandlerError, PermissionDeniedError
from reflow.functions import Runtime
from tests.functional.edge.process_app import app
from tests.functional.edge.test_runtime_hooks import get


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    opened = memory_backend()
    await opened.blobs.put(
        "pages/index.html", b"home", content_type="text/html", metadata={"surrogate-key": "home"}
    )
    await opened.blobs.put("pages/inline/a.html", b"a", content_type="text/html")
    await opened.blobs.put("pages/inline/b.html", b"b", content_type="text/html")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def service(backend: Backend) -> AsyncIterator[EdgeService]:
    edge = EdgeService(app, backend, port=0)
    await edge.start()
    try:
        yield edge
    finally:
        await edge.stop()


async def cached(service: EdgeService, *paths: str) -> None:
    for path in paths:
        await get(service.port, path)
        _, headers, _ = await get(service.port, path)
        assert headers["x-cache"] == "Hit"


async def test_an_inline_function_purges_by_surrogate_key(
    service: EdgeService, backend: Backend
) -> None:
    await cached(service, "/index.html", "/inline/a.html")
    async with Runtime(app, backend=backend, serve=False) as runtime:
        assert await runtime.invoke("purge_inline", {"keys": ["home"]}) == 1
    _, headers, _ = await get(service.port, "/index.html")
    assert headers["x-cache"] == "Miss"
    _, headers, _ = await get(service.port, "/inline/a.html")
    assert headers["x-cache"] == "Hit"  # untagged: untouched
    assert service.metrics()["purges"] == 1


async def test_a_synchronous_inline_function_soft_purges_a_path_prefix(
    service: EdgeService, backend: Backend
) -> None:
    await cached(service, "/inline/a.html", "/inline/b.html")
    async with Runtime(app, backend=backend, serve=False) as runtime:
        assert await runtime.invoke("purge_inline_sync", {"paths": ["/inline/*"]}) == 2
    _, headers, _ = await get(service.port, "/inline/a.html")
    assert headers["x-cache"] in ("Stale", "Miss", "RefreshHit")


async def test_a_process_worker_purges_through_the_proxied_client(
    service: EdgeService, backend: Backend
) -> None:
    await cached(service, "/index.html")
    async with Runtime(app, backend=backend, serve=False) as runtime:
        assert await runtime.invoke("purge_from_worker", {"paths": ["/index.html"]}) == 1
    _, headers, _ = await get(service.port, "/index.html")
    assert headers["x-cache"] == "Miss"


async def test_a_refused_key_purges_nothing(service: EdgeService, backend: Backend) -> None:
    refused: list[tuple[str, str]] = []

    def only_keys_starting_with_a(function: FunctionConfig, action: str, resource: str) -> None:
        if not resource.startswith("key/a"):
            refused.append((action, resource))
            raise PermissionDeniedError(function.name, action, resource)

    await cached(service, "/index.html")
    async with Runtime(
        app, backend=backend, serve=False, authorizer=only_keys_starting_with_a
    ) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("purge_inline", {"keys": ["about", "home"]})
    assert caught.value.error_type == "PermissionDeniedError"
    assert refused == [("cache:purge", "key/home")]
    _, headers, _ = await get(service.port, "/index.html")
    assert headers["x-cache"] == "Hit"  # "about" was allowed, but nothing was purged


async def test_without_an_edge_in_the_process_the_client_is_not_available(
    backend: Backend,
) -> None:
    async with Runtime(app, backend=backend, serve=False) as runtime:
        with pytest.raises(HandlerError, match="no edge is running") as caught:
            await runtime.invoke("purge_inline", {"keys": ["home"]})
    assert caught.value.error_type == "NotAvailableError"
