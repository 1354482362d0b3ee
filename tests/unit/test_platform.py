"""The Platform: an App over a backend, with the admin API and ordered services."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from reflow import App
from reflow.backends import memory_backend
from reflow.config import Settings
from reflow.errors import AppFrozenError
from reflow.platform import Platform


def make_app() -> App:
    app = App("shop")

    @app.function
    def ping(event: object, context: object) -> str:
        return "pong"

    return app


async def get(port: int, method: str, path: str) -> tuple[int, object]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


class Recorder:
    """A service that notes when it starts and stops."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


async def test_admin_api_reports_health_status_and_backend_check(tmp_path: Path) -> None:
    settings = Settings.load(env={}, backend="memory://", admin_port=0, data_dir=str(tmp_path))
    platform = Platform(make_app(), settings, backend=memory_backend())
    await platform.start()
    try:
        port = platform.admin.port
        assert await get(port, "GET", "/healthz") == (200, {"status": "ok"})
        status, body = await get(port, "GET", "/api/status")
        assert status == 200
        assert isinstance(body, dict)
        assert body["app"] == "shop"
        assert body["backend"] == "memory"
        assert body["registered"]["functions"] == ["ping"]
        status, check = await get(port, "POST", "/api/backend/check")
        assert status == 200
        assert isinstance(check, dict) and check["ok"] is True
        assert {row["primitive"] for row in check["checks"]} == {"Log", "KV", "PubSub", "Blobs"}
    finally:
        await platform.stop()


async def test_starting_freezes_the_app(tmp_path: Path) -> None:
    app = make_app()
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(app, settings, backend=memory_backend())
    await platform.start(admin=False)
    try:
        assert app.frozen
        try:
            app.function(lambda e, c: None, name="late")
        except AppFrozenError as exc:
            assert "late" in str(exc)
        else:
            raise AssertionError("a frozen app accepted a registration")
    finally:
        await platform.stop()


async def test_services_stop_in_reverse_order(tmp_path: Path) -> None:
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(make_app(), settings, backend=memory_backend())
    log: list[str] = []
    await platform.start(admin=False)
    await platform.add_service("a", Recorder("a", log))
    await platform.add_service("b", Recorder("b", log))
    # The app has a function: the shared runtime first, context.cache (no edge here:
    # the publish-only purger), then the bus (context.events)
    # and state (context.limits).
    assert platform.services == ["functions", "cache", "events", "state", "a", "b"]
    assert platform.runtime is not None
    await platform.stop()
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_run_until_signalled_stops_on_request(tmp_path: Path) -> None:
    settings = Settings.load(env={}, backend="memory://", admin_port=0, data_dir=str(tmp_path))
    platform = Platform(make_app(), settings)
    ready = asyncio.Event()

    async def on_ready() -> None:
        ready.set()

    task = asyncio.create_task(platform.run_until_signalled(on_ready))
    await asyncio.wait_for(ready.wait(), 5)
    platform.request_stop()
    await asyncio.wait_for(task, 5)


async def test_one_runtime_serves_the_bus_and_the_flows(tmp_path: Path) -> None:
    app = make_app()
    app.on({"source": ["shop"]})(app.functions["ping"].handler)
    app.flow(
        "noop",
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
    )
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(app, settings, backend=memory_backend())
    await platform.start(admin=False)
    try:
        assert platform.services[0] == "functions"
        assert {"events", "flows"} <= set(platform.services)
        started = {s.name: s.service for s in platform._services}
        assert getattr(started["events"], "runtime", None) is platform.runtime
        assert getattr(started["flows"], "runtime", None) is platform.runtime
    finally:
        await platform.stop()


async def test_metrics_show_the_functions_of_an_app_without_an_edge(tmp_path: Path) -> None:
    settings = Settings.load(env={}, backend="memory://", admin_port=0, data_dir=str(tmp_path))
    platform = Platform(make_app(), settings, backend=memory_backend())
    await platform.start()
    try:
        assert platform.runtime is not None
        assert await platform.runtime.invoke("ping", {}) == "pong"
        reader, writer = await asyncio.open_connection("127.0.0.1", platform.admin.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"text/plain; version=0.0.4" in head
        lines = body.decode().splitlines()
        invocations = [
            line for line in lines if 'function="ping"' in line and "invocations" in line
        ]
        assert invocations and invocations[0].split()[-1] in ("1", "1.0")
    finally:
        await platform.stop()
