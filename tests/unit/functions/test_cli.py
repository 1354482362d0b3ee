"""``reflow invoke`` and ``reflow functions list`` against a small app file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reflow.cli.main import app as cli

APP = """
from reflow import App

app = App("clidemo")


@app.function(timeout=5)
def hello(event, context):
    return {"hello": event["name"], "fn": context.function_name}


@app.function(isolation="process", reserved=2)
def boom(event, context):
    raise ValueError("boom " + str(event))
"""


@pytest.fixture
def app_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cliapp.py"
    path.write_text(APP)
    monkeypatch.setenv("REFLOW_BACKEND", f"sqlite:///{tmp_path / 'reflow.db'}")
    monkeypatch.setenv("REFLOW_DATA_DIR", str(tmp_path / "data"))
    return path


def test_invoke_prints_the_result_as_json(app_file: Path) -> None:
    result = CliRunner().invoke(
        cli, ["invoke", "hello", "--app", str(app_file), "--payload", '{"name": "ada"}']
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"hello": "ada", "fn": "hello"}


def test_invoke_reads_the_payload_from_a_file(app_file: Path, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"name": "grace"}')
    result = CliRunner().invoke(cli, ["invoke", "hello", "--app", str(app_file), "-p", f"@{event}"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hello"] == "grace"


def test_a_failing_process_function_prints_lambdas_error_shape_and_exits_1(
    app_file: Path,
) -> None:
    result = CliRunner().invoke(cli, ["invoke", "boom", "--app", str(app_file), "-p", "[1]"])
    assert result.exit_code == 1
    shape = json.loads(result.stdout)
    assert shape["errorType"] == "ValueError"
    assert shape["errorMessage"] == "boom [1]"
    # Only the handler's own frames, not the runtime's.
    assert all("cliapp.py" in line for line in shape["stackTrace"])


def test_invoke_refuses_bad_json_and_unknown_functions(app_file: Path) -> None:
    bad = CliRunner().invoke(cli, ["invoke", "hello", "--app", str(app_file), "-p", "{x"])
    assert bad.exit_code == 2 and "--payload is not valid JSON" in bad.stderr
    missing = CliRunner().invoke(cli, ["invoke", "nope", "--app", str(app_file)])
    assert missing.exit_code == 2 and "no function named 'nope'" in missing.stderr


def test_invoke_event_queues_durably_and_prints_the_request_id(app_file: Path) -> None:
    result = CliRunner().invoke(
        cli, ["invoke", "hello", "--app", str(app_file), "--event", "-p", '{"name": "x"}']
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["requestId"]) == 36


def test_functions_list_shows_settings_as_json(app_file: Path) -> None:
    result = CliRunner().invoke(cli, ["functions", "list", "--app", str(app_file), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["boom"]["isolation"] == "process" and rows["boom"]["reserved"] == 2
    assert rows["hello"]["timeout"] == 5.0 and rows["hello"]["metrics"] is None


def test_functions_list_table_names_every_function(app_file: Path) -> None:
    result = CliRunner().invoke(cli, ["functions", "list", "--app", str(app_file)])
    assert result.exit_code == 0, result.output
    assert "boom" in result.stdout and "hello" in result.stdout
    assert "no metrics published yet" in result.stdout
