"""JSON values as the engine passes them between states."""

from __future__ import annotations

from typing import Any

__all__ = ["json_copy"]


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars): much cheaper than deepcopy."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    if isinstance(value, tuple):
        return [json_copy(item) for item in value]
    return value
