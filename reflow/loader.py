"""Finding a user's App: from a file path, a module name, or ``module:attribute``.

``reflow run app.py``, ``reflow run newsroom.site`` and
``reflow run newsroom.site:app`` all end here. A module holding no App, or
several without an attribute to pick one, is an error that says which.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from reflow.app import App
from reflow.errors import AppError

__all__ = ["AppLoadError", "load_app"]


class AppLoadError(AppError):
    """The app named on the command line cannot be found or imported."""

    def __init__(self, target: str, problem: str) -> None:
        self.target = target
        self.problem = problem
        super().__init__(f"cannot load app {target!r}: {problem}")


def load_app(target: str) -> App:
    """Import ``target`` and return the :class:`App` it defines."""
    module_part, _, attribute = target.partition(":")
    if module_part.endswith(".py") or "/" in module_part or Path(module_part).is_file():
        module = _import_file(target, Path(module_part))
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            raise AppLoadError(target, f"no module named {exc.name!r}") from exc
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, App):
            raise AppLoadError(target, f"{attribute!r} is not a reflow.App in {module.__name__}")
        return found
    apps = {name: value for name, value in vars(module).items() if isinstance(value, App)}
    if not apps:
        raise AppLoadError(target, f"module {module.__name__} defines no reflow.App")
    if len(apps) > 1:
        names = ", ".join(sorted(apps))
        raise AppLoadError(target, f"module defines several apps ({names}); name one as MODULE:APP")
    return next(iter(apps.values()))


def _import_file(target: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise AppLoadError(target, f"file {str(path)!r} does not exist")
    resolved = path.resolve()
    # The app's own folder goes on sys.path so that it can import its siblings.
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = resolved.stem
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise AppLoadError(target, f"{str(path)!r} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except AppError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise AppLoadError(target, f"importing it raised {type(exc).__name__}: {exc}") from exc
    return module
