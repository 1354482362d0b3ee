"""JSONPath-mode payload templates (``Parameters``, ``ResultSelector``, ``Assign`` …).

A template is JSON whose keys ending in ``.$`` take their value from a path
(``$.x``, ``$$.Execution.Id``, ``$myVariable``) or an intrinsic call
(``States.Format(…)``); the ``.$`` is dropped from the key. Everything
else is copied as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reflow.flows import intrinsics, paths

__all__ = ["render", "resolve"]


def resolve(expression: str, data: Any, context: Any, variables: Mapping[str, Any] | None) -> Any:
    """The value of one ``.$`` expression: a path or an intrinsic call."""
    if intrinsics.is_intrinsic(expression):
        return intrinsics.evaluate(expression, data, context, variables)
    return paths.evaluate(expression, data, context, variables)


def render(template: Any, data: Any, context: Any, variables: Mapping[str, Any] | None) -> Any:
    """``template`` with every ``.$`` key resolved against ``data``."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$") and isinstance(value, str):
                out[key[:-2]] = resolve(value, data, context, variables)
            else:
                out[key] = render(value, data, context, variables)
        return out
    if isinstance(template, list):
        return [render(item, data, context, variables) for item in template]
    return template
