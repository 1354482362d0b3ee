"""The ``reflow`` command line: one Typer app, sub-commands by area.

Each area adds its commands as a sub-app in ``reflow/cli/<area>.py`` and one
``add_typer`` line below. Errors from the ``ReflowError`` tree are printed as
one red line and exit with status 2; a traceback means a bug in reflow.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import reflow
from reflow.backends import open_backend
from reflow.cli import scaffold
from reflow.cli.cache import cache_app
from reflow.cli.events import dlq_app, events_app, rules_app
from reflow.cli.flows import flows_app
from reflow.cli.functions import functions_app, invoke
from reflow.cli.output import console, fail, run_guarded
from reflow.clock import SYSTEM_CLOCK
from reflow.config import Settings
from reflow.loader import load_app
from reflow.platform import Platform
from reflow.selfcheck import run_self_check

app = typer.Typer(
    name="reflow",
    help="reflow: reactive content delivery — events, functions, flows and an edge cache.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
backend_app = typer.Typer(help="Inspect and check the configured backend.", no_args_is_help=True)
app.add_typer(backend_app, name="backend")
app.add_typer(functions_app, name="functions")
app.add_typer(cache_app, name="cache")
app.add_typer(events_app, name="events")
app.add_typer(rules_app, name="rules")
app.add_typer(dlq_app, name="dlq")
app.add_typer(flows_app, name="flows")
app.command("invoke")(invoke)

BackendOption = Annotated[
    str | None,
    typer.Option("--backend", help="Backend URL (overrides REFLOW_BACKEND)."),
]


@app.command()
def version() -> None:
    """Print reflow's version."""
    console.print(f"reflow {reflow.__version__}")


@app.command()
def new(
    directory: Annotated[Path, typer.Argument(help="Folder to create the app in.")],
    name: Annotated[str | None, typer.Option(help="App name (default: the folder's name).")] = None,
    force: Annotated[bool, typer.Option(help="Write into a folder that is not empty.")] = False,
) -> None:
    """Scaffold a runnable app: a site served at the edge, its publishing handler, a flow, tests."""
    app_name = name or re.sub(r"[^A-Za-z0-9_-]", "-", directory.resolve().name).strip("-")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", app_name):
        fail(f"{app_name!r} is not a usable app name; pass --name")
    with run_guarded():
        written = scaffold.write(directory, app_name, force=force)
    console.print(f"[green]created[/] app [bold]{app_name}[/] in {directory}")
    for path in written:
        console.print(f"  {path}")
    console.print(f"\nnext:  cd {directory} && reflow run app.py")
    console.print("then open http://127.0.0.1:8080/ (README.md says how to publish an article)")


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="app.py, a module, or module:attribute.")],
    backend: BackendOption = None,
    edge_port: Annotated[int | None, typer.Option(help="Edge port (default 8080).")] = None,
    admin_port: Annotated[int | None, typer.Option(help="Admin port (default 8081).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
) -> None:
    """Load an app and serve it until interrupted (Ctrl-C)."""
    with run_guarded():
        settings = Settings.load(
            backend=backend, edge_port=edge_port, admin_port=admin_port, host=host
        )
        loaded = load_app(target)
        platform = Platform(loaded, settings)

        async def ready() -> None:
            summary = loaded.summary()
            table = Table(title=f"app {loaded.name}", show_header=True)
            table.add_column("kind")
            table.add_column("registered")
            for kind, names in summary.items():
                table.add_row(kind, ", ".join(names) or "-")
            console.print(table)
            console.print(
                f"backend [bold]{settings.backend}[/] ({settings.backend.kind}), "
                f"region {settings.region}"
            )
            console.print(
                f"admin API on http://{settings.host}:{platform.admin.port} "
                "(GET /healthz, GET /api/status, POST /api/backend/check)"
            )
            edge = platform.service("edge")
            if edge is not None:
                # The bound port: --edge-port 0 asks the system for a free one.
                port = getattr(edge, "port", settings.edge_port)
                console.print(f"edge on http://{settings.host}:{port}")
            if platform.services:
                console.print(f"services: {', '.join(platform.services)}")
            console.print("press Ctrl-C to stop")

        asyncio.run(platform.run_until_signalled(ready))
    console.print("stopped")


@backend_app.command("check")
def backend_check(
    backend: BackendOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Connect to the backend and self-test its four primitives, with latencies."""
    with run_guarded():
        settings = Settings.load(backend=backend)

        async def check() -> list[dict[str, object]]:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            opened = await open_backend(
                settings.backend, data_dir=settings.data_dir, clock=SYSTEM_CLOCK
            )
            try:
                results = await run_self_check(opened)
            finally:
                await opened.close()
            return [
                {
                    "primitive": r.primitive,
                    "operation": r.operation,
                    "ok": r.ok,
                    "ms": round(r.milliseconds, 3),
                    "detail": r.detail,
                }
                for r in results
            ]

        rows = asyncio.run(check())
    ok = all(row["ok"] for row in rows)
    if as_json:
        console.print_json(json.dumps({"backend": str(settings.backend), "ok": ok, "checks": rows}))
    else:
        table = Table(title=f"backend {settings.backend} ({settings.backend.kind})")
        for column in ("primitive", "operation", "result", "latency"):
            table.add_column(column, justify="right" if column == "latency" else "left")
        for row in rows:
            result = "[green]ok[/]" if row["ok"] else f"[red]FAILED[/] {row['detail']}"
            table.add_row(str(row["primitive"]), str(row["operation"]), result, f"{row['ms']} ms")
        console.print(table)
    if not ok:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``reflow`` script."""
    app()
