"""Edge functions declared with isolation="process" run through the functions runtime."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import memory_backend
from reflow.config import Settings
from reflow.edge.service import EdgeService, hooks_from_app, needs_runtime
from reflow.functions.context import allow_all
from reflow.platform import Platform
from tests.functional.edge.process_app import app


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


@pytest.fixture
async def service() -> AsyncIterator[EdgeService]:
    backend = memory_backend()
    for path in ("index.html", "inline/a.html", "crash/a.html", "slow/a.html"):
        await backend.blobs.put(f"pages/{path}", b"<p>" + path.encode(), content_type="text/html")
    edge = EdgeService(app, backend, port=0)
    await edge.start()
    try:
        yield edge
    finally:
        await edge.stop()
        await backend.close()


class _Runtime:
    """Stands in for the functions runtime: only ``invoke`` and its authoriser are reached."""

    authorizer = staticmethod(allow_all)

    async def invoke(self, name: str, payload: object) -> object:
        return payload


def test_only_process_functions_are_routed_through_the_runtime() -> None:
    assert needs_runtime(app)
    hooks = hooks_from_app(app, runtime=_Runtime())  # type: ignore[arg-type]
    by_name = {hook.name: hook for hook in hooks}
    assert by_name["stamp_pid.viewer-response"].invoke is not None
    assert by_name["inline_tag.viewer-request"].invoke is None
    assert not by_name["inline_tag.viewer-request"].is_async  # stays on the sync hit path
    assert all(hook.invoke is None for hook in hooks_from_app(app))


async def test_a_process_hook_runs_in_a_worker_with_the_runtime_context_and_metrics(
    service: EdgeService,
) -> None:
    status, headers, body = await get(service.port, "/index.html")
    assert status == 200 and body == b"<p>index.html"
    worker = int(headers["x-worker-pid"])
    assert worker != os.getpid()
    assert len(headers["x-request-id"]) == 36  # the runtime's invocation id (a UUID)
    status, again, _ = await get(service.port, "/index.html")
    assert again["x-cache"] == "Hit"
    assert int(again["x-worker-pid"]) == worker  # the warm worker is reused
    assert again["x-request-id"] != headers["x-request-id"]
    assert service.runtime is not None
    assert service.runtime.metrics["stamp_pid"].invocations == 2


async def test_an_inline_hook_next_to_process_hooks_runs_in_the_server(
    service: EdgeService,
) -> None:
    status, headers, _ = await get(service.port, "/inline/a.html")
    assert status == 200
    assert headers["x-worker-pid"] != str(os.getpid())  # the response hook is the worker's
    assert service.edge is not None
    route = service.edge.route("/inline/a.html")
    assert route.hooks["viewer-request"].invoke is None


async def test_a_crashed_or_overrunning_worker_is_a_502_naming_the_hook(
    service: EdgeService,
) -> None:
    status, _, body = await get(service.port, "/crash/a.html")
    assert status == 502
    assert b"viewer-request" in body and b"FunctionCrashedError" in body
    status, _, body = await get(service.port, "/slow/a.html")
    assert status == 502
    assert b"slow.viewer-request" in body and (b"limit" in body or b"Timeout" in body)
    # The edge keeps serving afterwards.
    status, _, _ = await get(service.port, "/index.html")
    assert status == 200


async def test_under_the_platform_process_hooks_share_its_functions_runtime(
    tmp_path: Path,
) -> None:
    backend = memory_backend()
    await backend.blobs.put("pages/index.html", b"<p>home", content_type="text/html")
    settings = Settings.load(
        env={}, backend="memory://", admin_port=0, edge_port=0, data_dir=str(tmp_path)
    )
    platform = Platform(app, settings, backend=backend)
    await platform.start()
    try:
        edge = platform.service("edge")
        assert isinstance(edge, EdgeService)
        assert edge.runtime is not None and edge.runtime is platform.runtime
        status, headers, _ = await get(edge.port, "/index.html")
        assert status == 200 and int(headers["x-worker-pid"]) != os.getpid()
        assert platform.runtime is not None
        assert platform.runtime.metrics["stamp_pid"].invocations == 1
    finally:
        await platform.stop()
    assert edge.runtime is platform.runtime  # not ours: the platform stops it
