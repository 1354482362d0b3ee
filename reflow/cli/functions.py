"""``reflow invoke`` and ``reflow functions list``.

``reflow invoke FN --payload '{...}'`` loads the app, runs the function once
through the same runtime the server uses (its isolation, timeout and memory
limit included) and prints the result as JSON; a failure prints Lambda's
error shape and exits with status 1. With ``--event`` the invocation is
queued durably in the backend instead, for a running ``reflow run`` to take.

``reflow functions list`` shows every function's configuration and, where a
runtime has published them to the backend, its metrics.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from reflow.backends import open_backend
from reflow.cli.output import console, errors, fail, run_guarded
from reflow.config import Settings
from reflow.errors import (
    FunctionError,
    FunctionNotFoundError,
)
from reflow.loader import load_app

__all__ = ["functions_app", "invoke"]

functions_app = typer.Typer(help="Functions: list them with their metrics.", no_args_is_help=True)

AppOption = Annotated[
    str, typer.Option("--app", help="app.py, a module, or module:attribute (default app.py).")
]
BackendOption = Annotated[
    str | None, typer.Option("--backend", help="Backend URL (overrides REFLOW_BACKEND).")
]


def _payload(text: str) -> Any:
    """``--payload`` as JSON text, or ``@file.json``."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"--payload: cannot read {str(path)!r}: {exc.strerror}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--payload is not valid JSON: {exc.msg} at column {exc.colno}")


def invoke(
    function: Annotated[str, typer.Argument(help="The function's name.")],
    payload: Annotated[
        str, typer.Option("--payload", "-p", help="The event as JSON, or @file.json.")
    ] = "{}",
    app_target: AppOption = "app.py",
    backend: BackendOption = None,
    event: Annotated[
        bool, typer.Option("--event", help="Queue it asynchronously (durable) instead.")
    ] = False,
) -> None:
    """Invoke a function once and print its result as JSON."""
    from reflow.functions.invocations import lambda_error
    from reflow.functions.runtime import Runtime

    event_payload = _payload(payload)
    with run_guarded():
        settings = Settings.load(backend=backend)
        loaded = load_app(app_target)
        if function not in loaded.functions:
            raise FunctionNotFoundError(function)

        async def run() -> tuple[bool, Any]:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            opened = await open_backend(settings.backend, data_dir=settings.data_dir)
            runtime = Runtime(
                loaded, backend=opened, region=settings.region, target=app_target, serve=False
            )
            # context.cache purges the edges running over this backend.
            from reflow.edge.fleet import PurgePublisher

            cache = PurgePublisher(opened.pubsub, opened.kv)
            await cache.start()
            try:
                if event:
                    from reflow.functions.invocations import AsyncInvocations

                    # Only the append: a running server's consumers take it from here.
                    queue = AsyncInvocations(runtime, opened.log, opened.clock)
                    return True, {"requestId": await queue.submit(function, event_payload)}
                try:
                    return True, await runtime.invoke(function, event_payload)
                except FunctionError as exc:
                    return False, lambda_error(exc)
                finally:
                    await runtime.stop()
            finally:
                await cache.stop()
                await opened.close()

        ok, result = asyncio.run(run())
    console.print_json(json.dumps(result, default=str))
    if not ok:
        errors.print(f"[bold red]{function} failed:[/] {result.get('errorType')}")
        raise typer.Exit(1)


@functions_app.command("list")
def list_functions(
    app_target: AppOption = "app.py",
    backend: BackendOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the app's functions with their settings and published metrics."""
    from reflow.functions.runtime import metrics_key

    with run_guarded():
        settings = Settings.load(backend=backend)
        loaded = load_app(app_target)

        async def read() -> dict[str, dict[str, Any]]:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            opened = await open_backend(settings.backend, data_dir=settings.data_dir)
            try:
                keys = [metrics_key(loaded.name, name) for name in loaded.functions]
                items = await opened.kv.get_many(keys)
            finally:
                await opened.close()
            return {
                name: json.loads(item.value)
                for name, item in zip(loaded.functions, items, strict=True)
                if item is not None
            }

        published = asyncio.run(read())
    rows: list[dict[str, Any]] = []
    for name, config in sorted(loaded.functions.items()):
        metrics = published.get(name, {})
        rows.append(
            {
                "name": name,
                "isolation": config.isolation,
                "timeout": config.timeout,
                "memory_mb": config.memory_mb,
                "provisioned": config.provisioned,
                "reserved": config.reserved,
                "retries": config.retries,
                "metrics": metrics or None,
            }
        )
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"functions of app {loaded.name}", box=box.SIMPLE_HEAD)
    # Narrow terminals fold the settings; the figures are never cut.
    for column in ("function", "mode", "limits", "prov/res"):
        table.add_column(column, overflow="fold")
    # Short headers: the table must fit an 80-column terminal.
    for column in ("calls", "err", "thr", "cold", "init", "p50", "p99"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for row in rows:
        m = row["metrics"] or {}
        table.add_row(
            row["name"],
            row["isolation"],
            f"{row['timeout']:g}s/{row['memory_mb']}M",
            f"{row['provisioned']}/{row['reserved'] if row['reserved'] is not None else '-'}",
            _figure(m.get("invocations")),
            _figure(m.get("errors")),
            _figure(m.get("throttles")),
            _figure(m.get("cold_starts")),
            _ms(m.get("init_duration_ms")),
            _ms(m.get("duration_p50_ms")),
            _ms(m.get("duration_p99_ms")),
        )
    console.print(table)
    if not published:
        console.print("[dim]no metrics published yet: they appear while `reflow run` runs[/]")


def _figure(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}ms"
