"""Flows inside the platform: the app's functions as tasks, the admin API and the CLI.

A platform over SQLite runs an app with two flows; every command of
``reflow flows`` talks to its admin API (the CLI runs in a thread, since it
blocks on HTTP while the server answers on this loop).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from reflow.app import App
from reflow.cli.main import app as cli
from reflow.config import Settings
from reflow.platform import Platform


def flows_app() -> App:
    app = App("pipes")

    @app.function()
    def shout(event: Any, context: Any) -> Any:
        return {"text": str(event["text"]).upper(), "request": context.aws_request_id}

    @app.function()
    def explode(event: Any, context: Any) -> Any:
        raise ValueError("no way")

    app.flow(
        "loud",
        {
            "StartAt": "Shout",
            "States": {"Shout": {"Type": "Task", "Resource": "reflow:function:shout", "End": True}},
        },
    )
    app.flow(
        "approve",
        {
            "StartAt": "Ask",
            "States": {
                "Ask": {
                    "Type": "Task",
                    "Resource": "approval.waitForTaskToken",  # no function: only waits
                    "Parameters": {"token.$": "$$.Task.Token"},
                    "Next": "Boom",
                },
                "Boom": {"Type": "Task", "Resource": "explode", "End": True},
            },
        },
    )
    app.flow(
        "parked",
        {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": True}}},
    )
    return app


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings.load(
        env={},
        backend=f"sqlite:///{tmp_path / 'flows.db'}",
        admin_port=0,
        edge_port=0,
        data_dir=str(tmp_path),
    )
    running = Platform(flows_app(), settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def flows(platform: Platform, *args: str) -> Result:
    admin = f"http://127.0.0.1:{platform.admin.port}"
    return await asyncio.to_thread(
        CliRunner().invoke, cli, ["flows", *args, "--admin", admin], catch_exceptions=False
    )


async def settled(platform: Platform, name: str, status: str = "RUNNING") -> dict[str, Any]:
    """Describe ``name`` once it has left ``status`` (or reached a wait)."""
    for _ in range(400):
        result = await flows(platform, "describe", name)
        described: dict[str, Any] = json.loads(result.stdout)
        if described["status"] != status or described["waiting_for"] in ("token", "timer"):
            return described
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} stayed {status}")


async def test_reflow_run_starts_the_flows_service_and_tasks_run_the_apps_functions(
    platform: Platform,
) -> None:
    assert "flows" in platform.services
    started = await flows(platform, "start", "loud", "--input", '{"text": "hi"}', "--name", "l1")
    assert started.exit_code == 0, started.output
    assert json.loads(started.stdout)["name"] == "l1"
    described = await settled(platform, "l1")
    assert described["status"] == "SUCCEEDED"
    assert described["output"]["text"] == "HI"
    listed = await flows(platform, "list", "--flow", "loud", "--json")
    assert [row["name"] for row in json.loads(listed.stdout)] == ["l1"]
    history = await flows(platform, "history", "l1", "--json")
    types = [event["type"] for event in json.loads(history.stdout)]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert "TaskSucceeded" in types


async def test_send_task_success_resumes_and_redrive_reruns_the_failed_state(
    platform: Platform,
) -> None:
    await flows(platform, "start", "approve", "--name", "a1")
    waiting = await settled(platform, "a1")
    assert waiting["waiting_for"] == "token"
    events = json.loads((await flows(platform, "history", "a1", "--json")).stdout)
    token = next(e for e in events if e["type"] == "TaskScheduled")["details"]["parameters"]
    sent = await flows(platform, "send-task-success", token["token"], "--output", '{"ok": 1}')
    assert sent.exit_code == 0, sent.output
    failed = await settled(platform, "a1")
    assert (failed["status"], failed["error"], failed["state"]) == ("FAILED", "ValueError", "Boom")
    again = await flows(platform, "redrive", "a1")
    assert again.exit_code == 0, again.output
    redriven = await settled(platform, "a1")
    assert (redriven["status"], redriven["redrive_count"]) == ("FAILED", 1)
    refused = await flows(platform, "send-task-failure", token["token"], "--error", "Late")
    assert refused.exit_code == 2
    assert "no longer waiting" in refused.output


async def test_stop_aborts_and_unknown_names_fail_with_one_line(platform: Platform) -> None:
    await flows(platform, "start", "parked", "--name", "p1")
    assert (await settled(platform, "p1"))["waiting_for"] == "timer"
    stopped = await flows(platform, "stop", "p1", "--error", "Operator")
    assert json.loads(stopped.stdout)["status"] == "ABORTED"
    missing = await flows(platform, "describe", "nobody")
    assert missing.exit_code == 2
    assert "404" in missing.output
    clash = await flows(platform, "start", "parked", "--name", "p1", "--input", '{"x": 1}')
    assert clash.exit_code == 2 and "409" in clash.output
