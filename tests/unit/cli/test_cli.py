"""The ``reflow`` command: version, new, backend check, and its error lines."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import reflow
from reflow.cli.main import app
from reflow.events.patterns import Pattern
from reflow.loader import load_app

runner = CliRunner()


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert reflow.__version__ in result.output


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("version", "new", "run", "backend"):
        assert command in result.output


def test_new_scaffolds_a_runnable_app(tmp_path: Path) -> None:
    target = tmp_path / "site"
    result = runner.invoke(app, ["new", str(target), "--name", "site"])
    assert result.exit_code == 0, result.output
    for relative in ("app.py", "flows/publish.asl.json", "tests/test_app.py", ".gitignore"):
        assert (target / relative).is_file(), relative
    assert 'App("site")' in (target / "app.py").read_text()
    json.loads((target / "flows/publish.asl.json").read_text())


def test_new_tells_the_user_what_to_open_after_running(tmp_path: Path) -> None:
    result = runner.invoke(app, ["new", str(tmp_path / "site"), "--name", "site"])
    assert result.exit_code == 0, result.output
    assert "reflow run app.py" in result.output
    assert "http://127.0.0.1:8080/" in result.output


def test_the_scaffolded_app_serves_a_bucket_at_the_edge_and_its_flow_names_a_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "site"
    assert runner.invoke(app, ["new", str(target), "--name", "site"]).exit_code == 0
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the folder on it
    try:
        loaded = load_app(str(target / "app.py"))
    finally:
        sys.modules.pop("app", None)
    assert list(loaded.buckets) == ["site"]
    behaviour = loaded.edge_origins["*"]
    assert behaviour.origin == "bucket:site"
    assert behaviour.policy["default_ttl"] > 0
    hooks = {(edge.hook, edge.function) for edge in loaded.edges.values()}
    assert hooks == {("origin-response", "welcome"), ("viewer-response", "security_headers")}
    tasks = [
        state["Resource"]
        for state in loaded.flows["publish"].definition["States"].values()
        if state["Type"] == "Task"
    ]
    assert tasks and all(t.removeprefix("reflow:function:") in loaded.functions for t in tasks)


def test_the_scaffolded_readmes_event_triggers_the_render_rule(tmp_path: Path) -> None:
    target = tmp_path / "site"
    assert runner.invoke(app, ["new", str(target), "--name", "site"]).exit_code == 0
    readme = (target / "README.md").read_text()
    command = readme[readme.index("reflow events put '") :]
    event = json.loads(command[len("reflow events put '") : command.index("'\n")])
    rule_pattern = re.search(r"@app\.on\((\{.*\})\)", (target / "app.py").read_text())
    assert rule_pattern is not None
    assert Pattern(json.loads(rule_pattern.group(1))).matches(event)


def test_new_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["new", str(tmp_path), "--name", "site"])
    assert result.exit_code == 2
    assert "is not empty" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_backend_check_on_memory_reports_every_primitive() -> None:
    result = runner.invoke(app, ["backend", "check", "--backend", "memory://", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert {row["primitive"] for row in report["checks"]} == {"Log", "KV", "PubSub", "Blobs"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x", "unknown scheme"),
        ("redis://127.0.0.1:99999/0", "port"),
        ("redis://127.0.0.1:6379/99", "out of range"),
    ],
)
def test_a_bad_backend_url_is_one_error_line_naming_the_setting(url: str, message: str) -> None:
    result = runner.invoke(app, ["backend", "check", "--backend", url])
    assert result.exit_code == 2
    assert "REFLOW_BACKEND" in result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_run_with_a_missing_app_file_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "missing.py"), "--backend", "memory://"])
    assert result.exit_code == 2
    assert "does not exist" in result.output
