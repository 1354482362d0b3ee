"""``reflow cache purge`` and ``reflow cache edges``: the edge caches of a running app.

The purge goes to the running platform's admin API (``POST
/api/cache/purge``), which purges its edge (if it runs one) and fans the purge
out to every other edge through the backend's PubSub, waiting for their
answers; with ``--backend URL`` the CLI publishes it on that backend itself,
as a process with no edge; ``--dry-run`` only prints the plan. It prints the total, each edge's
count, and the live edges that did not answer in time — and then exits with
status 1, since those may still serve the old body.

``reflow cache edges`` lists the live edges registered in the backend's KV,
with whether each is listening for purges (its purge subscription open); one
that is not still serves but cannot hear a purge until it reconnects.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from reflow.cli.output import console, errors, fail, run_guarded
from reflow.config import Settings

if TYPE_CHECKING:
    from reflow.edge.fleet import EdgeMember
    from reflow.edge.purge import PurgePlan

__all__ = ["cache_app"]

cache_app = typer.Typer(help="Purge the edge caches; list the live edges.", no_args_is_help=True)


@cache_app.command("purge")
def purge(
    keys: Annotated[
        list[str] | None, typer.Option("--key", "-k", help="Surrogate key (repeatable).")
    ] = None,
    paths: Annotated[
        list[str] | None,
        typer.Option("--path", "-p", help="Exact path, or a prefix ending in '*' (repeatable)."),
    ] = None,
    soft: Annotated[bool, typer.Option(help="Mark stale instead of removing.")] = False,
    admin: Annotated[
        str | None, typer.Option(help="Admin API URL (default http://HOST:ADMIN_PORT).")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="Purge through this backend's PubSub directly, without an admin API.",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="With --backend: seconds to wait for the edges' answers.")
    ] = 1.0,
    dry_run: Annotated[bool, typer.Option(help="Print the plan; purge nothing.")] = False,
) -> None:
    """Purge by surrogate key and/or path; prints how many objects each edge purged."""
    from reflow.edge.purge import PurgePlan  # here: the CLI starts without the edge server

    with run_guarded():
        plan = PurgePlan.of(keys or [], paths or [], soft=soft)
    if not plan.keys and not plan.paths:
        fail("nothing to purge: pass --key and/or --path")
    if dry_run:
        console.print(plan.describe())
        return
    if backend is not None:
        if admin is not None:
            fail("pass --admin or --backend, not both")
        if timeout < 0:
            fail("--timeout cannot be negative")
        with run_guarded():
            answer = asyncio.run(_purge_through(Settings.load(backend=backend), plan, timeout))
        _report(plan.describe(), answer)
        return
    with run_guarded():
        settings = Settings.load()
    url = (admin or f"http://{settings.host}:{settings.admin_port}").rstrip("/")
    request = urllib.request.Request(
        f"{url}/api/cache/purge",
        data=plan.to_json(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        fail(f"admin API at {url} refused the purge: {exc.code} {exc.read().decode()[:200]}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach the admin API at {url}: {exc}")
    _report(plan.describe(), answer)


async def _purge_through(settings: Settings, plan: PurgePlan, timeout: float) -> dict[str, Any]:
    """Publish ``plan`` to the fleet over the backend, as a process with no edge."""
    from reflow.backends import open_backend
    from reflow.edge.fleet import PurgePublisher

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    opened = await open_backend(settings.backend, data_dir=settings.data_dir)
    publisher = PurgePublisher(opened.pubsub, opened.kv, timeout=timeout)
    try:
        result = await publisher.purge(plan.keys, plan.paths, soft=plan.soft)
    finally:
        await publisher.stop()
        await opened.close()
    return result.to_json()


def _report(described: str, answer: dict[str, Any]) -> None:
    edges = answer.get("edges") or {}
    missing = answer.get("missing") or []
    where = f" on {len(edges)} edge{'s' if len(edges) != 1 else ''}" if edges else ""
    console.print(f"{described}: [bold]{answer.get('purged', 0)}[/] objects purged{where}")
    for edge, count in sorted(edges.items()):
        console.print(f"  {edge}: {count}")
    if missing:
        errors.print(
            f"[bold yellow]{len(missing)} live edge(s) did not answer in time "
            f"and may still serve the old body:[/] {', '.join(missing)}",
            soft_wrap=True,
        )
        raise typer.Exit(1)


@cache_app.command("edges")
def edges(
    backend: Annotated[
        str | None, typer.Option("--backend", help="Backend URL (overrides REFLOW_BACKEND).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the live edges (those whose membership in the backend has not expired)."""
    from reflow.backends import open_backend
    from reflow.edge.fleet import live_edges, members_json

    with run_guarded():
        settings = Settings.load(backend=backend)

        async def read() -> list[EdgeMember]:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            opened = await open_backend(settings.backend, data_dir=settings.data_dir)
            try:
                return await live_edges(opened.kv)
            finally:
                await opened.close()

        members = asyncio.run(read())
    if as_json:
        console.print_json(json.dumps(members_json(members)))
        return
    if not members:
        console.print("no live edges")
        return
    table = Table(box=box.SIMPLE)
    table.add_column("edge", overflow="fold")  # whole, so it can be matched to `missing`
    for column in ("app", "host", "pid", "port", "admin", "up", "renewed", "listening"):
        table.add_column(column)
    now = time.time()
    for member in members:
        table.add_row(
            member.id,
            member.app,
            f"{member.hostname} ({member.host})",
            str(member.pid),
            str(member.port),
            "" if member.admin_port is None else str(member.admin_port),
            f"{max(0.0, now - member.started_at):.0f}s",
            _renewed(member, now),
            # A deaf edge may serve a purged body: make it stand out.
            "yes" if member.listening else "[bold yellow]no[/]",
        )
    console.print(table)


def _renewed(member: EdgeMember, now: float) -> str:
    """How long ago the member renewed its key; stale ones (presumed dead) stand out."""
    if not member.refresh:
        return ""  # written by an edge from before the stamps
    ago = f"{max(0.0, now - member.renewed_at):.0f}s ago"
    return f"[bold yellow]{ago}, stale[/]" if member.stale(now) else ago
