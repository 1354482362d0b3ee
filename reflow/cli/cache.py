"""``reflow cache purge``: purge the edge caches of a running app.

The purge goes to the running platform's admin API (``POST
/api/cache/purge``), which purges its edge and fans the purge out to every
other edge through the backend's PubSub; ``--dry-run`` only prints the plan.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Annotated

import typer

from reflow.cli.output import console, fail, run_guarded
from reflow.config import Settings

__all__ = ["cache_app"]

cache_app = typer.Typer(help="Purge the edge caches.", no_args_is_help=True)


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
    dry_run: Annotated[bool, typer.Option(help="Print the plan; purge nothing.")] = False,
) -> None:
    """Purge by surrogate key and/or path; prints how many objects were purged."""
    from reflow.edge.purge import PurgePlan  # here: the CLI starts without the edge server

    with run_guarded():
        plan = PurgePlan.of(keys or [], paths or [], soft=soft)
    if not plan.keys and not plan.paths:
        fail("nothing to purge: pass --key and/or --path")
    if dry_run:
        console.print(plan.describe())
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
    console.print(f"{plan.describe()}: [bold]{answer.get('purged', 0)}[/] objects purged")
