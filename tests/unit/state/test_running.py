"""``reflow run`` and the state subsystem: the platform's ``state`` service.

An app with tables gets a ``state`` service that relays change streams,
delivers ``@app.on_change`` handlers through the functions runtime, puts
change records on the event bus for ``@app.on`` rules, and replicates global
tables between regions whose backends ``REFLOW_REPLICAS`` names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reflow import App
from reflow.backends import memory_backend, open_backend
from reflow.config import Settings, parse_backend_url
from reflow.errors import ConfigError
from reflow.platform import Platform
from reflow.state import Table
from reflow.state.replication import GlobalTable
from reflow.state.running import StateRunner


@pytest.fixture(autouse=True)
def restore_clients() -> Iterator[None]:
    from reflow.functions import context as context_module

    before = dict(context_module._factories)  # install() registers globally
    yield
    context_module._factories.clear()
    context_module._factories.update(before)


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings.load(env={}, backend="memory://", data_dir=str(tmp_path), **extra)


async def test_run_starts_state_and_delivers_changes_to_on_change_handlers(
    tmp_path: Path,
) -> None:
    app = App("site")
    app.table("articles")
    seen: list[dict[str, Any]] = []

    @app.on_change("articles")
    async def rerender(event: dict[str, Any], context: Any) -> None:
        seen.append(event)

    platform = Platform(app, settings(tmp_path), backend=memory_backend())
    await platform.start(admin=False)
    try:
        assert "state" in platform.services
        await Table("articles", platform.backend.kv, stream=True).put({"id": "a"})
        await eventually(lambda: len(seen) == 1)
        assert seen[0]["source"] == "reflow.tables"
        assert seen[0]["detail"]["newImage"] == {"id": "a"}
    finally:
        await platform.stop()
    assert platform.services == []


async def test_an_app_with_only_functions_gets_limits_and_they_go_when_it_stops(
    tmp_path: Path,
) -> None:
    from reflow.functions.context import registered_client

    app = App("site")

    @app.function
    def ping(event: object, context: object) -> str:
        return "pong"

    platform = Platform(app, settings(tmp_path), backend=memory_backend())
    await platform.start(admin=False)
    try:
        # No tables, but every function may still use context.limits.
        assert "state" in platform.services
        assert registered_client("limits") is not None
    finally:
        await platform.stop()
    assert registered_client("limits") is None
    assert registered_client("tables") is None


async def test_an_app_without_functions_or_tables_gets_no_state_service(tmp_path: Path) -> None:
    app = App("site")
    app.flow("noop", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    platform = Platform(app, settings(tmp_path), backend=memory_backend())
    await platform.start(admin=False)
    try:
        assert "state" not in platform.services
    finally:
        await platform.stop()


async def test_change_records_reach_on_rules_through_the_bus(tmp_path: Path) -> None:
    app = App("site")
    app.table("articles")
    matched: list[dict[str, Any]] = []

    @app.on({"source": ["reflow.tables"], "detail-type": ["Item Removed"]})
    async def audit(event: dict[str, Any], context: Any) -> None:
        matched.append(event)

    platform = Platform(app, settings(tmp_path), backend=memory_backend())
    await platform.start(admin=False)
    try:
        articles = Table("articles", platform.backend.kv, stream=True)
        await articles.put({"id": "a"})
        await articles.delete("a")
        await eventually(lambda: len(matched) == 1)
        assert matched[0]["detail"]["oldImage"] == {"id": "a"}
        assert matched[0]["resources"] == ["table/articles"]
    finally:
        await platform.stop()


async def test_forwarded_events_keep_their_id_and_region(tmp_path: Path) -> None:
    app = App("site")
    app.table("articles")
    put: list[dict[str, Any]] = []

    async def capture(events: list[dict[str, Any]]) -> None:
        put.extend(events)

    backend = memory_backend()
    runner = StateRunner(app, backend, region="eu", put_events=capture, interval=0.02)
    await runner.start()
    try:
        await Table("articles", backend.kv, stream=True).put({"id": "a"})
        await eventually(lambda: len(put) == 1)
        assert put[0]["region"] == "eu"
        assert put[0]["detail-type"] == "Item Inserted"
    finally:
        await runner.stop()
        await backend.close()


async def test_two_regions_replicate_a_global_table(tmp_path: Path) -> None:
    urls = {r: f"sqlite:///{tmp_path / f'{r}.db'}" for r in ("eu", "us")}
    app = App("site")
    app.table("articles", replicate_to=["eu", "us"])
    backends = {r: await open_backend(u, data_dir=tmp_path) for r, u in urls.items()}
    runners = {
        r: StateRunner(
            app,
            backends[r],
            region=r,
            replicas={p: parse_backend_url(urls[p], data_dir=tmp_path) for p in urls if p != r},
            data_dir=tmp_path,
            interval=0.02,
        )
        for r in urls
    }
    try:
        for runner in runners.values():
            await runner.start()
        eu, us = (runners[r].service.tables["articles"] for r in ("eu", "us"))  # type: ignore[union-attr]
        assert isinstance(eu, GlobalTable) and isinstance(us, GlobalTable)
        await eu.put({"id": "a", "from": "eu"})
        await us.put({"id": "b", "from": "us"})
        await eventually(lambda: us.get("a"))
        await eventually(lambda: eu.get("b"))
        await eu.delete("b")
        await eventually(lambda: _gone(us, "b"))
        assert runners["us"].metrics()["articles"]["replication_applied_total"] >= 2
    finally:
        for runner in runners.values():
            await runner.stop()
        for backend in backends.values():
            await backend.close()


async def _gone(table: GlobalTable, key: str) -> bool:
    return await table.get(key) is None


def test_a_global_table_naming_a_region_without_a_url_is_a_config_error() -> None:
    app = App("site")
    app.table("articles", replicate_to=["eu", "us", "ap"])
    with pytest.raises(ConfigError) as caught:
        StateRunner(
            app,
            memory_backend(),
            region="eu",
            replicas={"us": parse_backend_url("memory://")},
        )
    assert caught.value.setting == "REFLOW_REPLICAS"
    assert "ap" in caught.value.problem


async def _admin_get(port: int, path: str) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200"
    loaded: dict[str, Any] = json.loads(body)
    return loaded


async def test_reflow_run_replicates_from_replicas_and_serves_the_lag(tmp_path: Path) -> None:
    us_url = f"sqlite:///{tmp_path / 'us.db'}"
    app = App("site")
    app.table("articles", replicate_to=["eu", "us"])
    loaded = Settings.load(
        env={"REFLOW_REGION": "eu", "REFLOW_REPLICAS": f"us={us_url}"},
        backend=f"sqlite:///{tmp_path / 'eu.db'}",
        data_dir=str(tmp_path),
        admin_port=0,
    )
    us = await open_backend(us_url, data_dir=tmp_path)
    platform = Platform(app, loaded)
    await platform.start()
    try:
        await GlobalTable("articles", "us", us.kv).put({"id": "a", "from": "us"})
        port = platform.admin.port

        async def applied() -> bool:
            body = await _admin_get(port, "/api/state/replication")
            tables = body["tables"]
            return bool(tables) and tables["articles"]["replication_applied_total"] >= 1

        await eventually(applied)
        body = await _admin_get(port, "/api/state/replication")
        assert body["region"] == "eu"
        assert body["tables"]["articles"]["replication_lag_p99_seconds"] >= 0
        eu = GlobalTable("articles", "eu", platform.backend.kv)
        assert await eu.get("a") == {"id": "a", "from": "us"}
    finally:
        await platform.stop()
        await us.close()
