"""The fleet over the admin API and the CLI: purges from a platform with no edge, members."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from reflow import App
from reflow.backends import memory_backend, open_backend
from reflow.cli.main import app as cli
from reflow.config import Settings
from reflow.edge.fleet import MEMBERS_PREFIX, EdgeMember, Membership
from reflow.edge.service import EdgeService
from reflow.platform import Platform
from tests.functional.edge.test_service import http, site_app


def worker_app() -> App:
    app = App("worker")

    @app.function()
    def render(event: dict[str, Any], context: Any) -> Any:
        return event

    return app


async def test_a_platform_without_an_edge_purges_the_fleet_over_its_admin_api(
    tmp_path: Path,
) -> None:
    backend = memory_backend()
    await backend.blobs.put(
        "pages/index.html", b"home", content_type="text/html", metadata={"surrogate-key": "home"}
    )

    def settings(name: str) -> Settings:
        return Settings.load(
            env={}, backend="memory://", admin_port=0, edge_port=0, data_dir=str(tmp_path / name)
        )

    edge_platform = Platform(site_app(), settings("edge"), backend=backend)
    worker = Platform(worker_app(), settings("worker"), backend=backend)
    await edge_platform.start()
    await worker.start()
    try:
        assert "edge" not in worker.services and "cache" in worker.services
        edge = edge_platform.service("edge")
        assert isinstance(edge, EdgeService)
        edge_id, edge_port = edge.id, edge.port
        await http(edge_port, "GET", "/index.html")
        _, head, _ = await http(edge_port, "GET", "/index.html")
        assert "X-Cache: Hit" in head

        request = json.dumps({"keys": ["home"]}).encode()
        status, _, body = await http(worker.admin.port, "POST", "/api/cache/purge", request)
        answer = json.loads(body)
        assert status == 200
        assert answer == {
            "purged": 1,
            "edges": {edge_id: 1},
            "missing": [],
            "plan": "hard purge of keys home",
        }
        _, head, _ = await http(edge_port, "GET", "/index.html")
        assert "X-Cache: Miss" in head

        for port in (worker.admin.port, edge_platform.admin.port):
            status, _, body = await http(port, "GET", "/api/edge/members")
            [member] = json.loads(body)["edges"]
            assert (member["id"], member["app"], member["port"]) == (edge_id, "site", edge_port)

        # The CLI through the worker's admin API: each edge's count; a silent member fails it.
        url = f"http://127.0.0.1:{worker.admin.port}"
        runner = CliRunner()
        result = await asyncio.to_thread(
            runner.invoke, cli, ["cache", "purge", "--path", "/index.html", "--admin", url]
        )
        assert result.exit_code == 0, result.output
        assert "objects purged on 1 edge" in result.output and edge_id in result.output
        await backend.kv.put(MEMBERS_PREFIX + "ghost", EdgeMember("ghost").to_json(), ttl=60)
        result = await asyncio.to_thread(
            runner.invoke, cli, ["cache", "purge", "--key", "home", "--admin", url]
        )
        assert result.exit_code == 1
        assert "did not answer in time" in result.output and "ghost" in result.output

        status, _, body = await http(worker.admin.port, "POST", "/api/cache/purge", b"[1]")
        assert status == 400
    finally:
        await worker.stop()
        await edge_platform.stop()
        await backend.close()


async def test_reflow_cache_edges_lists_the_live_members(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    backend = await open_backend(url, data_dir=tmp_path)
    member = EdgeMember("e1", app="site", host="127.0.0.1", port=8080, admin_port=8081)
    membership = Membership(backend.kv, member)
    runner = CliRunner(env={"REFLOW_DATA_DIR": str(tmp_path)})
    try:
        result = await asyncio.to_thread(runner.invoke, cli, ["cache", "edges", "--backend", url])
        assert result.exit_code == 0 and "no live edges" in result.output
        await membership.start()
        result = await asyncio.to_thread(
            runner.invoke, cli, ["cache", "edges", "--backend", url, "--json"]
        )
        assert result.exit_code == 0, result.output
        [shown] = json.loads(result.output)
        assert (shown["id"], shown["port"], shown["admin_port"]) == ("e1", 8080, 8081)
        result = await asyncio.to_thread(runner.invoke, cli, ["cache", "edges", "--backend", url])
        assert result.exit_code == 0 and "e1" in result.output and "8081" in result.output

        # An edge whose purge subscription is down, and one from before the flag existed.
        deaf = EdgeMember("e2", app="site", hostname="h", listening=False)
        await backend.kv.put(MEMBERS_PREFIX + "e2", deaf.to_json(), ttl=60)
        legacy = {"id": "e3", "app": "site", "hostname": "h", "port": 9090}
        await backend.kv.put(MEMBERS_PREFIX + "e3", json.dumps(legacy).encode(), ttl=60)
        # One that stopped renewing a minute ago: listed until its key expires, but stale.
        dead = EdgeMember("e4", hostname="h", renewed_at=time.time() - 60, refresh=1.0)
        await backend.kv.put(MEMBERS_PREFIX + "e4", dead.to_json(), ttl=60)
        result = await asyncio.to_thread(
            runner.invoke, cli, ["cache", "edges", "--backend", url], env={"COLUMNS": "200"}
        )
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        [header] = [line for line in lines if line.split()[:1] == ["edge"]]
        assert header.split()[-1] == "listening"
        rows = {
            line.split()[0]: line.split()
            for line in lines
            if line.split()[:1] in (["e1"], ["e2"], ["e3"], ["e4"])
        }
        # The last column: e1 renews with its subscription open, e2 says it is down,
        # e3 has no field at all and counts as listening.
        assert {edge: row[-1] for edge, row in rows.items()} == {
            "e1": "yes",
            "e2": "no",
            "e3": "yes",
            "e4": "yes",
        }
        # The "renewed" column before it: e1 just now, e4 stale, e3 without the stamp.
        assert rows["e1"][-2] == "ago" and "ago," not in rows["e1"]
        assert rows["e4"][-4:-1] == ["60s", "ago,", "stale"]
        assert "ago" not in rows["e3"]
        result = await asyncio.to_thread(
            runner.invoke, cli, ["cache", "edges", "--backend", url, "--json"]
        )
        assert result.exit_code == 0, result.output
        shown = {member["id"]: member for member in json.loads(result.output)}
        assert {edge: m["listening"] for edge, m in shown.items()} == {
            "e1": True,
            "e2": False,
            "e3": True,
            "e4": True,
        }
        assert shown["e1"]["refresh"] == membership.refresh
    finally:
        await membership.stop()
        await backend.close()


async def test_reflow_cache_purge_through_the_backend_needs_no_admin_api(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    backend = await open_backend(url, data_dir=tmp_path)
    await backend.blobs.put(
        "pages/index.html", b"home", content_type="text/html", metadata={"surrogate-key": "home"}
    )
    edge = EdgeService(site_app(), backend, port=0)
    await edge.start()
    runner = CliRunner(env={"REFLOW_DATA_DIR": str(tmp_path)})
    try:
        await http(edge.port, "GET", "/index.html")
        # The CLI opens its own connection: the purge crosses SQLite's polled PubSub.
        result = await asyncio.to_thread(
            runner.invoke, cli, ["cache", "purge", "--key", "home", "--backend", url]
        )
        assert result.exit_code == 0, result.output
        assert "1 objects purged on 1 edge" in result.output and edge.id in result.output
        _, head, _ = await http(edge.port, "GET", "/index.html")
        assert "X-Cache: Miss" in head
        await backend.kv.put(MEMBERS_PREFIX + "ghost", EdgeMember("ghost").to_json(), ttl=60)
        result = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["cache", "purge", "--key", "home", "--backend", url, "--timeout", "0.2"],
        )
        assert result.exit_code == 1 and "ghost" in result.output
        both = ["cache", "purge", "--key", "k", "--backend", url, "--admin", "http://x"]
        assert (await asyncio.to_thread(runner.invoke, cli, both)).exit_code == 2
    finally:
        await edge.stop()
        await backend.close()
