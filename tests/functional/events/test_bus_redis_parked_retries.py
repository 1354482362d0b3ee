"""Listing parked retries on a real Redis server.

``test_retries_listing.py`` covers memory and SQLite. Here the parked keys
live in Redis's KV (hashes, scanned in key order by a Lua script), so the
same listing is checked over Redis: what failing rules parked, filtered by
rule and by bus (admin route and CLI), the CLI's JSON lines, and that a retry
the waker moved back to its stream leaves the listing. Virtual time on a
FakeClock without autojump: a back-off ends only when the test moves it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from reflow import App
from reflow.admin import AdminRequest, AdminServer
from reflow.backends import open_backend
from reflow.cli.main import app as cli
from reflow.events.delivery import encode_record, rule_stream
from reflow.events.model import Event
from reflow.events.retries import ParkedRetries
from reflow.events.service import EventsService
from reflow.testing import FakeClock
from tests.conftest import REDIS_URL, require_server
from tests.functional.events.helpers import eventually
from tests.functional.events.redis_prefix import fresh_prefix, redis_backend, unlink_prefix

# The same app and moment as the memory and SQLite listing tests.
from tests.unit.events.test_retries_listing import APP, NOW

runner = CliRunner()


class FailsOnce:
    """A handler failing each event's first attempt; records (event id, attempt) of calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, event: dict[str, Any], context: Any) -> None:
        attempt = sum(1 for seen, _ in self.calls if seen == context.aws_request_id) + 1
        self.calls.append((context.aws_request_id, attempt))
        if attempt == 1:
            raise RuntimeError("target down")


async def test_failing_rules_parked_retries_are_listed_filtered_and_leave_when_moved(
    tmp_path: Path,
) -> None:
    clock = FakeClock(NOW)
    flaky, broken = FailsOnce(), FailsOnce()
    app = App("failing-redis")

    @app.on({"source": ["cms"]}, name="flaky", bus="news")
    async def flaky_handler(event: dict[str, Any], context: Any) -> None:
        await flaky(event, context)

    @app.on({"source": ["cms"]}, name="broken")
    async def broken_handler(event: dict[str, Any], context: Any) -> None:
        await broken(event, context)

    admin = AdminServer()

    async def listed(**query: str) -> list[dict[str, Any]]:
        request = AdminRequest(
            "GET", "/api/events/retries", {k: [v] for k, v in query.items()}, {}, b""
        )
        reply = await admin.dispatch(request)
        assert reply.status == 200
        retries: list[dict[str, Any]] = reply.body["retries"]
        return retries

    async with redis_backend("parked-list", tmp_path, clock) as backend:
        events = EventsService(app.freeze(), backend, admin=admin)
        await events.start()
        try:
            [on_news] = await events.bus.put([{"source": "cms", "detail-type": "T"}], bus="news")
            [on_default] = await events.bus.put([{"source": "cms", "detail-type": "T"}])
            every: list[dict[str, Any]] = []
            for _ in range(2500):
                every = await listed()
                if len(every) == 2:
                    break
                await asyncio.sleep(0.004)
            by_rule = {row["rule"]: row for row in every}
            assert set(by_rule) == {"flaky", "broken"}
            one = by_rule["flaky"]
            assert (one["event_id"], one["attempt"]) == (on_news, 2)
            assert one["stream"] == rule_stream("flaky")
            assert one["error"] == {"type": "RuntimeError", "message": "target down"}
            assert one["claimed_until"] is None
            assert NOW + 0.5 <= one["due_at"] <= NOW + 1.0  # the first back-off: 0.5-1 s
            assert by_rule["broken"]["event_id"] == on_default
            assert [row["due_at"] for row in every] == sorted(row["due_at"] for row in every)
            assert await listed(rule="flaky") == [one]
            assert await listed(bus="news") == [one]
            assert await listed(bus="default") == [by_rule["broken"]]
            assert await listed(rule="flaky", bus="default") == []
            assert await listed(rule="nobody") == []
            listed_here = await events.bus.retries.list(streams={rule_stream("broken")})
            assert [r.event_id for r in listed_here] == [on_default]

            clock.advance(1.0)  # both back-offs are over: the waker moves them back
            await eventually(lambda: len(flaky.calls) == 2 and len(broken.calls) == 2)
            left = await listed()
        finally:
            await events.stop()
    assert flaky.calls == [(on_news, 1), (on_news, 2)]
    assert broken.calls == [(on_default, 1), (on_default, 2)]
    assert left == []


def retry(rule: str, event: Event, attempt: int, message: str) -> bytes:
    error = {"type": "RuntimeError", "message": message}
    return encode_record(event, rule, attempt=attempt, first=NOW, due=0.0, error=error)


def test_cli_lists_redis_retries_as_json_by_rule_and_bus(tmp_path: Path) -> None:
    require_server(REDIS_URL, "Redis")
    prefix = fresh_prefix("parked-cli")
    url = f"{REDIS_URL}?prefix={prefix}"
    (tmp_path / "app.py").write_text(APP)
    clock = FakeClock(NOW)
    events = [Event(source="cms", type="T", data={"n": n}) for n in range(3)]

    async def seed() -> None:
        backend = await open_backend(url, data_dir=tmp_path, clock=clock)
        try:
            retries = ParkedRetries(backend.kv, backend.log, clock=clock)
            await retries.park(
                rule_stream("render"), retry("render", events[0], 2, "boom"), NOW + 30
            )
            await retries.park(rule_stream("bill"), retry("bill", events[1], 5, "down"), NOW + 10)
            await retries.park(
                rule_stream("render"), retry("render", events[2], 3, "again"), NOW + 20
            )
        finally:
            await backend.close()

    async def move_due(at: float) -> int:
        """Move what is due at ``at`` back to its stream; how many entries bill's stream has."""
        clock.advance(at - clock.time())
        backend = await open_backend(url, data_dir=tmp_path, clock=clock)
        try:
            await ParkedRetries(backend.kv, backend.log, clock=clock).move_due()
            return await backend.log.length(rule_stream("bill"))
        finally:
            await backend.close()

    def rows(*args: str) -> list[dict[str, Any]]:
        result = runner.invoke(cli, ["events", "retries", "--json", *args, "--backend", url])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.output.splitlines()]

    try:
        asyncio.run(seed())
        listed = rows()
        assert [(r["rule"], r["event_id"], r["attempt"]) for r in listed] == [
            ("bill", events[1].id, 5),
            ("render", events[2].id, 3),
            ("render", events[0].id, 2),
        ]
        first = listed[0]
        assert first["error"] == {"type": "RuntimeError", "message": "down"}
        assert first["stream"] == rule_stream("bill")
        assert (first["due"], first["due_at"]) == ("2023-11-14T22:13:30.000Z", NOW + 10)
        assert first["claimed_until"] is None
        assert first["key"].startswith("events.retry/") and first["key"].endswith(
            "/events.rule.bill"
        )
        assert [r["event_id"] for r in rows("--rule", "render")] == [events[2].id, events[0].id]
        app_path = str(tmp_path / "app.py")
        assert [r["rule"] for r in rows("--bus", "orders", "--app", app_path)] == ["bill"]
        on_default = rows("--bus", "default", "--app", app_path)
        assert [r["rule"] for r in on_default] == ["render", "render"]
        assert rows("--bus", "orders", "--rule", "render", "--app", app_path) == []
        table = runner.invoke(cli, ["events", "retries", "--backend", url], env={"COLUMNS": "200"})
        assert table.exit_code == 0, table.output
        assert "RuntimeError: down" in table.output and "3 parked retries" in table.output

        # Bill's retry falls due and is moved back to its stream: it leaves the listing.
        assert asyncio.run(move_due(NOW + 15)) == 1
        assert [(r["rule"], r["event_id"]) for r in rows()] == [
            ("render", events[2].id),
            ("render", events[0].id),
        ]
        assert rows("--bus", "orders", "--app", app_path) == []
    finally:
        asyncio.run(unlink_prefix(prefix))
