"""Values in DynamoDB expressions: paths into items, comparisons, and what updates do.

The parser (:mod:`reflow.flows.dynamodb_expressions`) builds its conditions
and updates from these pieces. Semantics follow DynamoDB's (and
:mod:`reflow.state.conditions`): a comparison with a missing attribute is
false, ``<>`` included; values of different types never compare (``True`` is
not ``1``); every operand of an update reads the item as it was before the
update; an update may create the item from its key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MISSING",
    "ExpressionError",
    "Operand",
    "Path",
    "Test",
    "Update",
    "arithmetic",
    "compare",
    "resolve",
    "same",
    "show",
    "size",
    "existing",
    "if_not_exists",
    "list_append",
    "FUNCTIONS",
]

Path = tuple[str | int, ...]
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
Operand = Callable[[Mapping[str, Any] | None], Any]
Test = Callable[[Mapping[str, Any] | None], bool]


class ExpressionError(ValueError):
    """An expression outside the supported subset, or malformed (a ValidationException)."""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int | float):
        return "N"
    if isinstance(value, str):
        return "S"
    if value is None:
        return "NULL"
    return "L" if isinstance(value, list) else "M"


def same(a: Any, b: Any) -> bool:
    """Equal values of one type (``True`` is not ``1``, in lists and maps too)."""
    if a is MISSING or b is MISSING:
        return a is b
    if _kind(a) != _kind(b):
        return False
    if isinstance(a, list | dict):
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    return bool(a == b)


def compare(op: str, a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return False
    if op == "=":
        return same(a, b)
    if op == "<>":
        return not same(a, b)
    if _kind(a) != _kind(b) or _kind(a) not in ("N", "S"):
        return False
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def resolve(item: Mapping[str, Any] | None, path: Path) -> Any:
    """The value at ``path`` in ``item``, or :data:`MISSING`."""
    value: Any = item
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return MISSING
        elif not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def show(path: Path) -> str:
    """``("a", 0, "b")`` → ``a[0].b``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@dataclass
class Update:
    """A parsed UpdateExpression: what it assigns, removes, adds and deletes."""

    sets: list[tuple[Path, Operand]] = field(default_factory=list)
    removes: list[Path] = field(default_factory=list)
    adds: list[tuple[Path, Any, str]] = field(default_factory=list)
    deletes: list[tuple[Path, Any, str]] = field(default_factory=list)
    reads: list[Path] = field(default_factory=list)

    @property
    def targets(self) -> list[Path]:
        """Every path the update changes."""
        return [
            *(p for p, _ in self.sets),
            *self.removes,
            *(p for p, _, _ in self.adds),
            *(p for p, _, _ in self.deletes),
        ]

    def apply(self, old: Mapping[str, Any] | None, keys: Mapping[str, Any]) -> dict[str, Any]:
        """The item after the update (``old`` None: a new item from ``keys``)."""
        base: dict[str, Any] = json.loads(json.dumps(old)) if old is not None else dict(keys)
        # Every operand reads the item as it was: evaluate them all before changing it.
        assigned = [(path, operand(old)) for path, operand in self.sets]
        for path, value in assigned:
            _assign(base, path, value)
        # Indexes name elements of the old list: remove the later ones first.
        for path in sorted(self.removes, key=_later_first):
            _remove(base, path)
        for path, value, kind in self.adds:
            _add(base, path, value, kind)
        for path, value, _ in self.deletes:
            current = resolve(base, path)
            if current is MISSING:
                continue
            if not isinstance(current, list):
                raise ExpressionError(
                    f"An operand in the update expression has an incorrect data type: "
                    f"DELETE {show(path)} needs a set"
                )
            remaining = [x for x in current if not any(same(x, v) for v in value)]
            if remaining:
                _assign(base, path, remaining)
            else:  # DynamoDB keeps no empty set
                _remove(base, path)
        return base


def _later_first(path: Path) -> int:
    last = path[-1]
    return -last if isinstance(last, int) else 0


def _assign(doc: dict[str, Any], path: Path, value: Any) -> None:
    parent = resolve(doc, path[:-1]) if len(path) > 1 else doc
    last = path[-1]
    if isinstance(last, int) and isinstance(parent, list):
        if last < len(parent):
            parent[last] = value
        else:  # past the end: appended, as DynamoDB does
            parent.append(value)
    elif isinstance(last, str) and isinstance(parent, dict):
        parent[last] = value
    else:
        raise ExpressionError(
            f"The document path provided in the update expression is invalid for update: "
            f"{show(path)}"
        )


def _remove(doc: dict[str, Any], path: Path) -> None:
    parent = resolve(doc, path[:-1]) if len(path) > 1 else doc
    last = path[-1]
    if isinstance(last, int) and isinstance(parent, list) and last < len(parent):
        del parent[last]
    elif isinstance(last, str) and isinstance(parent, dict):
        parent.pop(last, None)


def _add(doc: dict[str, Any], path: Path, value: Any, kind: str) -> None:
    current = resolve(doc, path)
    if kind == "N":
        if current is MISSING:
            current = 0
        if _kind(current) != "N":
            raise ExpressionError(
                f"An operand in the update expression has an incorrect data type: "
                f"ADD {show(path)} holds {_kind(current)}, not a number"
            )
        _assign(doc, path, current + value)
        return
    if current is MISSING:
        current = []
    if not isinstance(current, list):
        raise ExpressionError(
            f"An operand in the update expression has an incorrect data type: "
            f"ADD {show(path)} holds {_kind(current)}, not a set"
        )
    _assign(doc, path, current + [v for v in value if not any(same(v, x) for x in current)])


def size(value: Any) -> Any:
    if isinstance(value, str | list | dict):
        return len(value)
    return MISSING  # size() of a number, boolean or null is not defined


def _begins_with(found: Operand, other: Operand) -> Test:
    def test(item: Mapping[str, Any] | None) -> bool:
        value, prefix = found(item), other(item)
        return isinstance(value, str) and isinstance(prefix, str) and value.startswith(prefix)

    return test


def _contains(found: Operand, other: Operand) -> Test:
    def test(item: Mapping[str, Any] | None) -> bool:
        value, needle = found(item), other(item)
        if isinstance(value, str):
            return isinstance(needle, str) and needle in value
        if isinstance(value, list):
            return any(same(element, needle) for element in value)
        return False

    return test


def _attribute_type(found: Operand, other: Operand) -> Test:
    def test(item: Mapping[str, Any] | None) -> bool:
        value = found(item)
        return value is not MISSING and _kind(value) == other(item)

    return test


FUNCTIONS = {
    "begins_with": _begins_with,
    "contains": _contains,
    "attribute_type": _attribute_type,
}


def existing(value: Any, path: Path) -> Any:
    if value is MISSING:
        raise ExpressionError(
            f"The provided expression refers to an attribute that does not exist in the item: "
            f"{show(path)}"
        )
    return value


def if_not_exists(value: Any, fallback: Operand, item: Mapping[str, Any] | None) -> Any:
    return fallback(item) if value is MISSING else value


def arithmetic(left: Operand, right: Operand, sign: int) -> Operand:
    def compute(item: Mapping[str, Any] | None) -> Any:
        a, b = left(item), right(item)
        if _kind(a) != "N" or _kind(b) != "N":
            raise ExpressionError(
                "An operand in the update expression has an incorrect data type: "
                "+ and - take numbers"
            )
        return a + b if sign > 0 else a - b

    return compute


def list_append(first: Operand, second: Operand) -> Operand:
    def compute(item: Mapping[str, Any] | None) -> Any:
        a, b = first(item), second(item)
        if not isinstance(a, list) or not isinstance(b, list):
            raise ExpressionError(
                "An operand in the update expression has an incorrect data type: "
                "list_append takes two lists"
            )
        return a + b

    return compute
