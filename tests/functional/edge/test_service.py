"""An App's buckets, behaviours and hooks served by the platform; purge over the admin API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from reflow import App
from reflow.backends import memory_backend
from reflow.config import Settings
from reflow.errors import RegistrationError
from reflow.platform import Platform


def site_app() -> App:
    app = App("site")
    app.bucket("pages")
    app.edge_origin("*", "bucket:pages", default_ttl=300)
    app.edge_origin("/api/*", "http://127.0.0.1:9", failover="bucket:pages", timeout=1)

    @app.edge("viewer-response", path="/*")
    def stamp(event: dict[str, Any], context: Any) -> Any:
        response = event["Records"][0]["cf"]["response"]
        response["headers"]["x-served-by"] = [{"key": "X-Served-By", "value": "reflow"}]
        return response

    return app


async def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head.decode("latin-1"), payload


async def test_platform_serves_the_bucket_through_the_edge_and_purges_by_admin_api(
    tmp_path: Path,
) -> None:
    backend = memory_backend()
    await backend.blobs.put(
        "pages/index.html",
        b"<h1>home</h1>",
        content_type="text/html",
        metadata={"surrogate-key": "home"},
    )
    await backend.blobs.put("pages/api/index.html", b"api fallback", content_type="text/plain")
    settings = Settings.load(
        env={}, backend="memory://", admin_port=0, edge_port=0, data_dir=str(tmp_path)
    )
    platform = Platform(site_app(), settings, backend=backend)
    await platform.start()
    try:
        assert "edge" in platform.services
        edge_port = platform.service("edge").port  # type: ignore[union-attr]
        status, head, body = await http(edge_port, "GET", "/")
        assert (status, body) == (200, b"<h1>home</h1>")
        assert "X-Served-By: reflow" in head and "X-Cache: Miss" in head
        status, head, _ = await http(edge_port, "GET", "/")
        assert "X-Cache: Hit" in head
        # /api/* fails over from the dead HTTP origin to the bucket.
        status, _, body = await http(edge_port, "GET", "/api/")
        assert (status, body) == (200, b"api fallback")
        request = json.dumps({"keys": ["home"]}).encode()
        status, _, answer = await http(platform.admin.port, "POST", "/api/cache/purge", request)
        assert status == 200 and json.loads(answer)["purged"] >= 1
        status, _, metrics = await http(platform.admin.port, "GET", "/api/edge/metrics")
        figures = json.loads(metrics)
        assert figures["hits"] >= 1 and figures["purges"] == 1
        status, head, _ = await http(edge_port, "GET", "/")
        assert "X-Cache: Miss" in head
    finally:
        await platform.stop()
        await backend.close()


def test_edge_origin_validates_its_arguments_at_registration() -> None:
    app = App("v")
    with pytest.raises(RegistrationError, match="bucket:NAME"):
        app.edge_origin("/*", "ftp://nope")
    with pytest.raises(RegistrationError, match="unknown policy option"):
        app.edge_origin("/*", "bucket:b", max_age=3)
    with pytest.raises(RegistrationError, match="min_ttl"):
        app.edge_origin("/*", "bucket:b", min_ttl=10, max_ttl=5)
    with pytest.raises(RegistrationError, match="wrong type"):
        app.edge_origin("/*", "bucket:b", headers="accept")
    with pytest.raises(RegistrationError, match="must start with '/'"):
        app.edge_origin("images/*", "bucket:b")
    config = app.edge_origin("/img/*", "bucket:b", headers=["accept"], query_strings="all")
    assert config.policy["headers"] == ("accept",)
    with pytest.raises(RegistrationError, match="already registered"):
        app.edge_origin("/img/*", "bucket:c")
    app.bucket("b")
    with pytest.raises(RegistrationError, match="already registered"):
        app.bucket("b")


async def test_an_undeclared_bucket_origin_fails_at_start(tmp_path: Path) -> None:
    app = App("missing")
    app.edge_origin("*", "bucket:nowhere")
    settings = Settings.load(
        env={}, backend="memory://", admin_port=0, edge_port=0, data_dir=str(tmp_path)
    )
    backend = memory_backend()
    platform = Platform(app, settings, backend=backend)
    from reflow.errors import EdgeError

    with pytest.raises(EdgeError, match="app.bucket"):
        await platform.start(admin=False)
    await platform.stop()
    await backend.close()


async def test_a_busy_edge_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from reflow.edge.service import EdgeService
    from reflow.errors import EdgeError

    app = App("busy")
    app.bucket("b")
    app.edge_origin("*", "bucket:b")
    backend = memory_backend()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = EdgeService(app, backend, port=port)
        with pytest.raises(EdgeError, match=f"cannot listen on 127.0.0.1:{port}"):
            await service.start()
    await backend.close()


def limited_app() -> App:
    app = App("limited")
    app.bucket("pages")
    app.edge_origin("*", "bucket:pages", default_ttl=300)

    @app.edge("viewer-request", path="/*")
    async def throttle(event: dict[str, Any], context: Any) -> Any:
        request = event["Records"][0]["cf"]["request"]
        decision = await context.limits.hit(f"ip:{request['clientIp']}", rate="2/minute")
        if not decision.allowed:
            return {"status": "429", "statusDescription": "Too Many Requests", "headers": {}}
        return request

    return app


async def test_a_viewer_request_hook_rate_limits_through_context_limits(tmp_path: Path) -> None:
    backend = memory_backend()
    await backend.blobs.put("pages/index.html", b"home", content_type="text/plain")
    settings = Settings.load(
        env={}, backend="memory://", admin_port=0, edge_port=0, data_dir=str(tmp_path)
    )
    platform = Platform(limited_app(), settings, backend=backend)
    await platform.start()
    try:
        edge_port = platform.service("edge").port  # type: ignore[union-attr]
        statuses = [(await http(edge_port, "GET", "/"))[0] for _ in range(4)]
        # Two per minute per client: the third and fourth are refused before the cache.
        assert statuses == [200, 200, 429, 429]
    finally:
        await platform.stop()
