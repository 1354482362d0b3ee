"""``GET /metrics`` on the admin port: the edge's and the runtime's figures move as it serves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from reflow import App
from reflow.backends import memory_backend
from reflow.config import Settings
from reflow.platform import Platform
from tests.functional.edge.test_service import http
from tests.unit.edge.exposition import Family, parse

HOOK = "reflow_edge_hook_duration_seconds"
ORIGIN = "reflow_edge_origin_duration_seconds"


def metered_app() -> App:
    app = App("metered")
    app.bucket("pages")
    app.edge_origin("*", "bucket:pages", default_ttl=300)

    @app.edge("viewer-response", path="/*")
    def stamp(event: dict[str, Any], context: Any) -> Any:
        response = event["Records"][0]["cf"]["response"]
        response["headers"]["x-stamp"] = [{"key": "X-Stamp", "value": "1"}]
        return response

    @app.function()
    def render(event: dict[str, Any], context: Any) -> Any:
        return {"ok": True}

    return app


async def scrape(port: int) -> dict[str, Family]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert head.count(b"Content-Type") == 1
    return parse(body.decode("utf-8"))


def figure(
    families: dict[str, Family], name: str, sample: str | None = None, **labels: str
) -> float:
    return families[name].value(sample, **labels)


async def test_metrics_move_as_the_edge_serves_purges_and_runs_its_hook(tmp_path: Path) -> None:
    backend = memory_backend()
    await backend.blobs.put(
        "pages/index.html",
        b"<h1>home</h1>",
        content_type="text/html",
        metadata={"surrogate-key": "home"},
    )
    settings = Settings.load(
        env={}, backend="memory://", admin_port=0, edge_port=0, data_dir=str(tmp_path)
    )
    platform = Platform(metered_app(), settings, backend=backend)
    await platform.start()
    try:
        admin = platform.admin.port
        edge = platform.service("edge").port  # type: ignore[union-attr]
        before = await scrape(admin)
        assert figure(before, "reflow_edge_hits_total") == 0
        assert figure(before, ORIGIN, f"{ORIGIN}_count") == 0
        # The runtime is running (the app has functions): its families are there too.
        assert figure(before, "reflow_function_invocations_total", function="render") == 0

        status, head, _ = await http(edge, "GET", "/")  # a miss
        assert status == 200 and "X-Cache: Miss" in head
        for _ in range(3):
            status, head, _ = await http(edge, "GET", "/")  # hits
            assert "X-Cache: Hit" in head
        after = await scrape(admin)
        assert figure(after, "reflow_edge_hits_total") == 3
        assert figure(after, "reflow_edge_misses_total") == 1
        assert figure(after, ORIGIN, f"{ORIGIN}_count") == 1
        assert figure(after, ORIGIN, f"{ORIGIN}_sum") > 0
        hook = {"hook": "viewer-response", "function": "stamp"}
        assert figure(after, HOOK, f"{HOOK}_count", **hook) == 4
        assert figure(after, HOOK, f"{HOOK}_bucket", le="+Inf", **hook) == 4
        sent = figure(after, "reflow_edge_response_bytes_total")
        assert sent > 4 * len(b"<h1>home</h1>")
        assert figure(after, "reflow_edge_store_objects") == 1

        # A soft purge: counted, and the next request is served stale.
        request = json.dumps({"keys": ["home"], "soft": True}).encode()
        status, _, answer = await http(admin, "POST", "/api/cache/purge", request)
        assert status == 200 and json.loads(answer)["purged"] == 1
        status, head, _ = await http(edge, "GET", "/")
        assert "X-Cache: Stale" in head
        await asyncio.sleep(0.05)  # the background refresh
        purged = await scrape(admin)
        assert figure(purged, "reflow_edge_purges_total", source="local") == 1
        assert figure(purged, "reflow_edge_purges_total", source="relayed") == 0
        assert figure(purged, "reflow_edge_purged_objects_total") == 1
        assert figure(purged, "reflow_edge_stale_total") == 1
        assert figure(purged, "reflow_edge_response_bytes_total") > sent
        assert figure(purged, ORIGIN, f"{ORIGIN}_count") == 2  # the refresh went to the origin

        await platform.runtime.invoke("render", {})  # type: ignore[union-attr]
        invoked = await scrape(admin)
        assert figure(invoked, "reflow_function_invocations_total", function="render") == 1
    finally:
        await platform.stop()
        await backend.close()


async def test_a_stopped_edge_leaves_the_exposition_and_the_shared_runtime_stays(
    tmp_path: Path,
) -> None:
    backend = memory_backend()
    settings = Settings.load(
        env={}, backend="memory://", admin_port=0, edge_port=0, data_dir=str(tmp_path)
    )
    platform = Platform(metered_app(), settings, backend=backend)
    await platform.start()
    try:
        edge = platform.service("edge")
        assert "reflow_edge_hits_total" in await scrape(platform.admin.port)
        await edge.stop()  # type: ignore[union-attr]
        families = await scrape(platform.admin.port)
        assert "reflow_edge_hits_total" not in families
        assert "reflow_function_invocations_total" in families
    finally:
        await platform.stop()
        await backend.close()
