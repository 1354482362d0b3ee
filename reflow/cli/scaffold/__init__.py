"""The files ``reflow new`` writes: templates with ``{name}`` filled in."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from reflow.errors import ReflowError

__all__ = ["ScaffoldError", "write"]

_RENAMES = {"gitignore": ".gitignore"}


class ScaffoldError(ReflowError):
    """The target folder cannot take a new app."""


def _templates() -> list[tuple[str, Traversable]]:
    root = resources.files(__name__)
    found: list[tuple[str, Traversable]] = []

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".tmpl"):
                found.append((prefix + entry.name.removesuffix(".tmpl"), entry))

    walk(root, "")
    return found


def write(directory: Path, name: str, *, force: bool = False) -> list[Path]:
    """Write the app skeleton into ``directory``; return the files written."""
    if directory.exists() and not directory.is_dir():
        raise ScaffoldError(f"{directory} exists and is not a folder")
    if directory.exists() and any(directory.iterdir()) and not force:
        raise ScaffoldError(f"{directory} is not empty; pass --force to write into it anyway")
    written = []
    for relative, template in _templates():
        parts = relative.split("/")
        parts[-1] = _RENAMES.get(parts[-1], parts[-1])
        target = directory.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.read_text(encoding="utf-8").format(name=name), encoding="utf-8")
        written.append(target)
    return written
