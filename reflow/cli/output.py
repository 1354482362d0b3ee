"""Where the CLI prints, and how it turns reflow's errors into one clear line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from reflow.errors import ReflowError

__all__ = ["console", "errors", "fail", "run_guarded"]

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    # soft_wrap: an error stays one line, whatever the terminal width, so it greps.
    errors.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def run_guarded() -> Iterator[None]:
    """Turn a :class:`ReflowError` into one error line and exit status 2."""
    try:
        yield
    except ReflowError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        errors.print("interrupted")
        raise typer.Exit(130) from None
