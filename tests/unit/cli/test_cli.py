"""The ``reflow`` command: version, new, backend check, and its error lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import reflow
from reflow.cli.main import app

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
