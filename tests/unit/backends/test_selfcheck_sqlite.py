"""``reflow backend check`` against the embedded engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reflow.backends import open_backend
from reflow.cli.main import app
from reflow.selfcheck import run_self_check


async def test_every_primitive_passes_and_nothing_is_left_behind(tmp_path: Path) -> None:
    backend = await open_backend(f"sqlite:///{tmp_path / 'r.db'}", data_dir=tmp_path)
    try:
        results = await run_self_check(backend)
        assert [(r.primitive, r.ok) for r in results] == [
            ("Log", True),
            ("Log", True),
            ("Log", True),
            ("KV", True),
            ("KV", True),
            ("KV", True),
            ("PubSub", True),
            ("Blobs", True),
        ]
        assert all(r.milliseconds > 0 for r in results)
        assert await backend.kv.scan("reflow-check-") == []
        assert await backend.blobs.list("reflow-check-") == []
    finally:
        await backend.close()


async def test_a_broken_primitive_is_reported_not_raised(tmp_path: Path) -> None:
    # A plain file where the blobs directory should be: Blobs cannot work.
    (tmp_path / "blobs").write_text("in the way")
    backend = await open_backend(f"sqlite:///{tmp_path / 'r.db'}", data_dir=tmp_path)
    try:
        results = await run_self_check(backend)
    finally:
        await backend.close()
    failed = [r for r in results if not r.ok]
    assert [(r.primitive, r.operation) for r in failed] == [("Blobs", "put + get + delete")]
    assert failed[0].detail  # says what went wrong
    assert all(r.ok for r in results if r.primitive != "Blobs")


def test_the_command_checks_a_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'site.db'}"
    result = CliRunner().invoke(app, ["backend", "check", "--backend", url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["backend"] == url
    assert (tmp_path / "site.db").exists()
