"""The ``reflow`` command line: one Typer app, sub-commands by area."""

from __future__ import annotations

import typer
from rich.console import Console

import reflow

app = typer.Typer(
    name="reflow",
    help="reflow: reactive content delivery — events, functions, flows and an edge cache.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


@app.command()
def version() -> None:
    """Print reflow's version."""
    console.print(f"reflow {reflow.__version__}")


def main() -> None:
    """Entry point of the ``reflow`` script."""
    app()
