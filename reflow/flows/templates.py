"""JSONPath-mode payload templates (``Parameters``, ``ResultSelector``, ``Assign`` …).

A template is JSON whose keys ending in ``.$`` take their value from a path
(``$.x``, ``$$.Execution.Id``, ``$myVariable``) or an intrinsic call
(``States.Format(…)``); the ``.$`` is dropped from the key. Everything
else is copied as it is.

A template is compiled once into a small tree of closures (paths and calls
parsed, static parts kept as they are) and the compiled form is reused every
time the state runs: this is on the path of every transition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reflow.flows import intrinsics, paths

__all__ = ["compile_template", "render", "resolve"]

Renderer = Callable[[Any, Any, "Mapping[str, Any] | None"], Any]

_CACHE_LIMIT = 4096
# id(template) -> (template, renderer). The template is kept so its id stays unique.
_compiled: dict[int, tuple[Any, Renderer]] = {}


def resolve(expression: str, data: Any, context: Any, variables: Mapping[str, Any] | None) -> Any:
    """The value of one ``.$`` expression: a path or an intrinsic call."""
    if intrinsics.is_intrinsic(expression):
        return intrinsics.evaluate(expression, data, context, variables)
    return paths.evaluate(expression, data, context, variables)


def render(template: Any, data: Any, context: Any, variables: Mapping[str, Any] | None) -> Any:
    """``template`` with every ``.$`` key resolved against ``data``."""
    entry = _compiled.get(id(template))
    if entry is None or entry[0] is not template:
        if len(_compiled) >= _CACHE_LIMIT:
            _compiled.clear()
        entry = (template, compile_template(template))
        _compiled[id(template)] = entry
    return entry[1](data, context, variables)


def compile_template(template: Any) -> Renderer:
    """A function ``(data, context, variables) -> value`` that renders ``template``."""
    if isinstance(template, dict):
        parts = [
            (key[:-2], _expression(value))
            if key.endswith(".$") and isinstance(value, str)
            else (key, compile_template(value))
            for key, value in template.items()
        ]
        return lambda data, context, variables: {
            key: part(data, context, variables) for key, part in parts
        }
    if isinstance(template, list):
        items = [compile_template(item) for item in template]
        return lambda data, context, variables: [item(data, context, variables) for item in items]
    return lambda data, context, variables: template


def _expression(text: str) -> Renderer:
    if intrinsics.is_intrinsic(text):
        call = intrinsics.parse(text)
        return lambda data, context, variables: intrinsics.evaluate(call, data, context, variables)
    path = paths.compile_path(text)
    return lambda data, context, variables: paths.evaluate(path, data, context, variables)
