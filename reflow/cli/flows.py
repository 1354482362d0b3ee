"""``reflow flows …``: start and inspect durable executions of a running app.

Every command talks to the running platform's admin API (``--admin``,
default ``http://HOST:ADMIN_PORT``, i.e. http://127.0.0.1:8081), the one
process that has the app's flows and functions loaded — so a command works
the same whichever backend the server uses, and needs no app file::

    reflow flows start publish --input '{"id": 7}' --name publish-7
    reflow flows list --status RUNNING
    reflow flows describe publish-7
    reflow flows history publish-7
    reflow flows stop publish-7 --error Operator --cause "wrong article"
    reflow flows redrive publish-7
    reflow flows send-task-success TOKEN --output '{"approved": true}'
    reflow flows send-task-failure TOKEN --error Rejected --cause "not now"
    reflow flows send-task-heartbeat TOKEN
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reflow.cli.output import console, fail, run_guarded
from reflow.config import Settings

__all__ = ["flows_app"]

flows_app = typer.Typer(
    help="Flows: start, inspect, stop and redrive executions of a running app.",
    no_args_is_help=True,
)

AdminOption = Annotated[
    str | None,
    typer.Option("--admin", help="Admin API URL (default http://HOST:ADMIN_PORT)."),
]
NameArgument = Annotated[str, typer.Argument(help="The execution's name.")]
TokenArgument = Annotated[str, typer.Argument(help="The task token ($$.Task.Token).")]


def _json_option(text: str, option: str) -> Any:
    """A JSON option's value: JSON text, or ``@file.json``."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"{option}: cannot read {str(path)!r}: {exc.strerror}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option} is not valid JSON: {exc.msg} at column {exc.colno}")


def _call(admin: str | None, method: str, path: str, body: Any = None) -> Any:
    """One admin API request; its JSON answer, or an error line and exit status 2."""
    if admin is None:
        with run_guarded():
            settings = Settings.load()
        admin = f"http://{settings.host}:{settings.admin_port}"
    url = admin.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError):
            message = ""
        fail(f"{method} {path}: {exc.code} {message}".rstrip())
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach the admin API at {admin}: {exc}")


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value))


@flows_app.command("start")
def start(
    flow: Annotated[str, typer.Argument(help="The flow's name.")],
    input: Annotated[
        str, typer.Option("--input", "-i", help="Input as JSON text or @file.json.")
    ] = "{}",
    name: Annotated[
        str | None, typer.Option("--name", help="Execution name (default: a UUID).")
    ] = None,
    admin: AdminOption = None,
) -> None:
    """Start an execution (the same name and input again returns the running one)."""
    body: dict[str, Any] = {"input": _json_option(input, "--input")}
    if name is not None:
        body["name"] = name
    _print_json(_call(admin, "POST", f"/api/flows/{_quote(flow)}/executions", body))


@flows_app.command("list")
def list_executions(
    flow: Annotated[str | None, typer.Option("--flow", help="Only this flow's.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="RUNNING, SUCCEEDED, FAILED, …")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    admin: AdminOption = None,
) -> None:
    """List executions, oldest name first."""
    query = urllib.parse.urlencode(
        {key: value for key, value in (("flow", flow), ("status", status)) if value}
    )
    rows = _call(admin, "GET", "/api/executions" + (f"?{query}" if query else ""))["executions"]
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "flow", "status", "started", "stopped")
    for row in rows:
        table.add_row(
            row["name"], row["flow"], row["status"], _time(row["start_time"]),
            _time(row["stop_time"]),
        )  # fmt: skip
    console.print(table)


def _time(value: float | None) -> str:
    from reflow.flows.history import iso_time

    return iso_time(value) if value is not None else "-"


@flows_app.command("describe")
def describe(name: NameArgument, admin: AdminOption = None) -> None:
    """Status, input, output or error, and the state a running execution is in."""
    _print_json(_call(admin, "GET", f"/api/executions/{_quote(name)}"))


@flows_app.command("history")
def history(
    name: NameArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    admin: AdminOption = None,
) -> None:
    """The execution's events, in order."""
    events = _call(admin, "GET", f"/api/executions/{_quote(name)}/history")["events"]
    if as_json:
        _print_json(events)
        return
    table = Table("id", "time", "type", "details")
    for event in events:
        details = json.dumps(event["details"], separators=(",", ":"))
        table.add_row(
            str(event["id"]), _time(event["timestamp"]), event["type"],
            details if len(details) <= 100 else details[:97] + "...",
        )  # fmt: skip
    console.print(table)


@flows_app.command("stop")
def stop(
    name: NameArgument,
    error: Annotated[str | None, typer.Option(help="Error recorded on the execution.")] = None,
    cause: Annotated[str | None, typer.Option(help="Cause recorded on the execution.")] = None,
    admin: AdminOption = None,
) -> None:
    """Abort a running execution (status ABORTED)."""
    body = {key: value for key, value in (("error", error), ("cause", cause)) if value}
    _print_json(_call(admin, "POST", f"/api/executions/{_quote(name)}/stop", body))


@flows_app.command("redrive")
def redrive(name: NameArgument, admin: AdminOption = None) -> None:
    """Run a failed, timed-out or aborted execution again from the state it stopped in."""
    _print_json(_call(admin, "POST", f"/api/executions/{_quote(name)}/redrive", {}))


@flows_app.command("send-task-success")
def send_task_success(
    token: TokenArgument,
    output: Annotated[str, typer.Option("--output", help="JSON text or @file.json.")] = "{}",
    admin: AdminOption = None,
) -> None:
    """Complete a .waitForTaskToken task with the --output value."""
    body = {"token": token, "output": _json_option(output, "--output")}
    _call(admin, "POST", "/api/tasks/success", body)
    console.print("task succeeded")


@flows_app.command("send-task-failure")
def send_task_failure(
    token: TokenArgument,
    error: Annotated[str | None, typer.Option(help="The task's error name.")] = None,
    cause: Annotated[str | None, typer.Option(help="The task's failure cause.")] = None,
    admin: AdminOption = None,
) -> None:
    """Fail a .waitForTaskToken task (its Retry and Catch apply)."""
    body = {"token": token, **{k: v for k, v in (("error", error), ("cause", cause)) if v}}
    _call(admin, "POST", "/api/tasks/failure", body)
    console.print("task failed")


@flows_app.command("send-task-heartbeat")
def send_task_heartbeat(token: TokenArgument, admin: AdminOption = None) -> None:
    """Restart a .waitForTaskToken task's HeartbeatSeconds."""
    _call(admin, "POST", "/api/tasks/heartbeat", {"token": token})
    console.print("heartbeat recorded")
