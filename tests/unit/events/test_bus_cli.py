"""``reflow events``, ``reflow rules`` and ``reflow dlq`` against a SQLite backend."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reflow.backends import open_backend
from reflow.cli.main import app
from reflow.events.delivery import decode_record, rule_stream
from reflow.events.dlq import DeadLetters
from reflow.events.model import Event

runner = CliRunner()

APP = """
from reflow import App

app = App("site")

@app.on({"source": ["cms"]}, name="render", max_attempts=4)
def render(event, context):
    return None

@app.schedule("rate(5 minutes)", name="sitemap")
def sitemap(event, context):
    return None
"""


@pytest.fixture
def backend_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'reflow.db'}"


def test_rules_test_prints_match() -> None:
    result = runner.invoke(
        app, ["rules", "test", '{"source": ["cms"]}', '{"source": "cms", "detail": {}}']
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "match"


def test_rules_test_prints_no_match_and_exits_1() -> None:
    result = runner.invoke(app, ["rules", "test", '{"source": ["cms"]}', '{"source": "shop"}'])
    assert result.exit_code == 1
    assert result.output.strip() == "no match"


def test_rules_test_prints_the_validation_error_and_exits_2() -> None:
    result = runner.invoke(
        app, ["rules", "test", '{"detail": {"n": [{"numeric": [">", "x"]}]}}', "{}"]
    )
    assert result.exit_code == 2
    assert "detail.n" in result.output


def test_rules_test_reads_a_cloudevent_through_its_eventbridge_view() -> None:
    event = {"specversion": "1.0", "id": "1", "source": "cms", "type": "Published", "data": {}}
    result = runner.invoke(
        app, ["rules", "test", '{"detail-type": ["Published"]}', json.dumps(event)]
    )
    assert result.exit_code == 0, result.output


def test_events_put_prints_ids_and_tail_shows_the_event(backend_url: str) -> None:
    event = {"source": "cms", "detail-type": "Published", "detail": {"id": 3}}
    put = runner.invoke(app, ["events", "put", json.dumps(event), "--backend", backend_url])
    assert put.exit_code == 0, put.output
    [event_id] = put.output.split()
    tail = runner.invoke(app, ["events", "tail", "--backend", backend_url])
    assert tail.exit_code == 0, tail.output
    assert event_id in tail.output and '"Published"' in tail.output


def test_events_put_refuses_an_invalid_event_naming_the_field(backend_url: str) -> None:
    result = runner.invoke(
        app, ["events", "put", '[{"source": "cms", "detail-type": 5}]', "--backend", backend_url]
    )
    assert result.exit_code == 2
    assert "entries[0].type" in result.output


def test_rules_list_shows_rules_and_schedules(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    result = runner.invoke(app, ["rules", "list", "--app", str(tmp_path / "app.py")])
    assert result.exit_code == 0, result.output
    assert "render" in result.output and "schedule.sitemap" in result.output
    assert "rate(5 minutes)" in result.output


def test_rules_list_shows_each_rules_target(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        APP + 'app.rule("audit", {"source": ["cms"]}, target="bus:audit-trail")\n'
    )
    result = runner.invoke(
        app, ["rules", "list", "--app", str(tmp_path / "app.py")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    [audit] = [line for line in result.output.splitlines() if line.strip().startswith("audit")]
    assert "bus:audit-trail" in audit
    [render] = [line for line in result.output.splitlines() if line.strip().startswith("render")]
    assert render.split().count("render") == 2  # an @app.on rule: its function is the target


def test_dlq_list_and_redrive(tmp_path: Path, backend_url: str) -> None:
    event = Event(source="cms", type="Published", data={"id": 1})

    async def seed() -> None:
        backend = await open_backend(backend_url, data_dir=tmp_path)
        try:
            letters = DeadLetters(backend.kv, backend.log, backend.clock)
            error = {"type": "RuntimeError", "message": "boom"}
            await letters.add("render", event, error=error, attempts=4, first=0.0)
        finally:
            await backend.close()

    asyncio.run(seed())
    listing = runner.invoke(app, ["dlq", "list", "--json", "--backend", backend_url])
    assert listing.exit_code == 0, listing.output
    [letter] = [json.loads(line) for line in listing.output.splitlines()]
    assert letter["event"]["id"] == event.id and letter["attempts"] == 4
    assert letter["error"] == {"type": "RuntimeError", "message": "boom"}

    redrive = runner.invoke(app, ["dlq", "redrive", "--rule", "render", "--backend", backend_url])
    assert redrive.exit_code == 0, redrive.output
    assert "redrove 1 event" in redrive.output

    async def queued() -> list[str]:
        backend = await open_backend(backend_url, data_dir=tmp_path)
        try:
            entries = await backend.log.range(rule_stream("render"))
            return [decode_record(entry.data)["event"].id for entry in entries]
        finally:
            await backend.close()

    assert asyncio.run(queued()) == [event.id]
    empty = runner.invoke(app, ["dlq", "list", "--backend", backend_url])
    assert "0 dead letters" in empty.output


def test_events_replay_queues_deliveries_for_the_window(tmp_path: Path, backend_url: str) -> None:
    (tmp_path / "app.py").write_text(APP)
    for n in range(3):
        event = {"source": "cms", "detail-type": "Published", "detail": {"n": n}}
        assert runner.invoke(app, ["events", "put", json.dumps(event), "--backend", backend_url])
    result = runner.invoke(
        app,
        [
            "events", "replay", "--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z",
            "--rule", "render", "--name", "again", "--app", str(tmp_path / "app.py"),
            "--backend", backend_url,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "replay again: 3 deliveries queued" in result.output


def test_events_replay_refuses_an_unknown_rule(tmp_path: Path, backend_url: str) -> None:
    (tmp_path / "app.py").write_text(APP)
    result = runner.invoke(
        app,
        [
            "events", "replay", "--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z",
            "--rule", "nope", "--app", str(tmp_path / "app.py"), "--backend", backend_url,
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "nope" in result.output


def test_rules_list_shows_a_webhooks_timeout_and_header_sources_never_values(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text(
        APP + 'app.rule("notify", {"source": ["cms"]}, target="https://h.example/x", timeout=5,\n'
        '         headers={"Authorization": "env:HOOK_TOKEN", "X-Team": "newsroom"})\n'
    )
    result = runner.invoke(
        app, ["rules", "list", "--app", str(tmp_path / "app.py")], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    [notify] = [line for line in result.output.splitlines() if line.strip().startswith("notify")]
    assert (
        "https://h.example/x (timeout 5 s; headers Authorization=env:HOOK_TOKEN, X-Team)" in notify
    )
    assert "newsroom" not in result.output
