"""``reflow cache purge``: the plan it prints, and the admin API it calls."""

from __future__ import annotations

from typer.testing import CliRunner

from reflow.cli.main import app


def test_dry_run_prints_the_plan_and_purges_nothing() -> None:
    result = CliRunner().invoke(
        app, ["cache", "purge", "--key", "home", "--path", "/blog/*", "--soft", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "soft purge of keys home; paths /blog/*" in result.output


def test_a_purge_needs_a_key_or_a_path() -> None:
    result = CliRunner().invoke(app, ["cache", "purge"])
    assert result.exit_code == 2


def test_a_bad_path_is_refused_before_anything_is_sent() -> None:
    result = CliRunner().invoke(app, ["cache", "purge", "--path", "blog", "--dry-run"])
    assert result.exit_code == 2


def test_an_unreachable_admin_api_is_a_clear_error() -> None:
    result = CliRunner().invoke(
        app, ["cache", "purge", "--key", "k", "--admin", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2
