"""Conditions on table items: a small, typed expression builder, evaluated in Python.

A condition is built from :func:`attr` with Python operators and the methods
of :class:`Attr`, and combined with ``&``, ``|`` and ``~``::

    (attr("stock") >= 1) & attr("status").is_in(["live", "draft"])
    attr("id").not_exists() | (attr("version") == 3)

The semantics follow DynamoDB's condition expressions, so code ported from
there keeps its meaning:

* a comparison with a missing attribute is false (``attr("x") != 1`` too:
  ``!=`` is false, not true, when ``x`` is absent — use ``not_exists()``);
* values of different types never compare: ``attr("n") < "5"`` is false for a
  number ``n``, and ``True`` is not equal to ``1``;
* ``contains`` works on strings (substring) and lists (membership);
* ``begins_with`` only on strings; ``between(lo, hi)`` is inclusive.

Evaluation is pure: :meth:`Condition.evaluate` takes the item (``None`` for
an absent one) and returns a bool, touching no clock and no storage. Paths
reach into nested maps and lists: ``attr("author.name")``, ``attr("tags[0]")``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Attr", "Condition", "attr", "condition_text"]

_MISSING = object()
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


def _parse_path(path: str) -> tuple[str | int, ...]:
    """``"a.b[2].c"`` → ``("a", "b", 2, "c")``; a malformed path is a ValueError."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"attribute path must be a non-empty string, got {path!r}")
    parts: list[str | int] = []
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise ValueError(f"attribute path {path!r} is malformed at {segment!r}")
        parts.append(match.group(1))
        parts.extend(int(index) for index in _INDEX.findall(match.group(2)))
    return tuple(parts)


def _resolve(item: Mapping[str, Any] | None, parts: tuple[str | int, ...]) -> Any:
    value: Any = item
    for part in parts:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return _MISSING
            value = value[part]
        else:
            if not isinstance(value, Mapping) or part not in value:
                return _MISSING
            value = value[part]
    return value


def _kind(value: Any) -> str:
    """The DynamoDB-ish type of a JSON value: values of different kinds never compare."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "map"
    return type(value).__name__


def _equal(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and a == b


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        kind = _kind(a)
        return kind in ("number", "string") and kind == _kind(b) and op(a, b)

    return compare


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": _equal,
    "<>": lambda a, b: not _equal(a, b),
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
}


class Condition:
    """A boolean test on an item; combine with ``&``, ``|`` and ``~``."""

    def evaluate(self, item: Mapping[str, Any] | None) -> bool:
        """Whether ``item`` (``None``: the item does not exist) satisfies the condition."""
        raise NotImplementedError

    def __and__(self, other: Condition) -> Condition:
        return _And(self, _check(other))

    def __or__(self, other: Condition) -> Condition:
        return _Or(self, _check(other))

    def __invert__(self) -> Condition:
        return _Not(self)

    def __bool__(self) -> bool:
        # `attr("a") == 1 and attr("b") == 2` would silently drop the first test.
        raise TypeError("a Condition has no truth value; combine conditions with &, | and ~")


def _check(other: object) -> Condition:
    if not isinstance(other, Condition):
        raise TypeError(f"cannot combine a Condition with {type(other).__name__}")
    return other


@dataclass(frozen=True, eq=False)
class _Compare(Condition):
    path: str
    parts: tuple[str | int, ...]
    op: str
    value: Any

    def evaluate(self, item: Mapping[str, Any] | None) -> bool:
        found = _resolve(item, self.parts)
        return found is not _MISSING and _COMPARISONS[self.op](found, self.value)

    def __str__(self) -> str:
        return f"{self.path} {self.op} {self.value!r}"


@dataclass(frozen=True, eq=False)
class _Function(Condition):
    path: str
    parts: tuple[str | int, ...]
    name: str
    args: tuple[Any, ...]

    def evaluate(self, item: Mapping[str, Any] | None) -> bool:
        found = _resolve(item, self.parts)
        if self.name == "attribute_exists":
            return found is not _MISSING
        if self.name == "attribute_not_exists":
            return found is _MISSING
        if found is _MISSING:
            return False
        if self.name == "begins_with":
            prefix = self.args[0]
            return isinstance(found, str) and isinstance(prefix, str) and found.startswith(prefix)
        if self.name == "contains":
            needle = self.args[0]
            if isinstance(found, str):
                return isinstance(needle, str) and needle in found
            if isinstance(found, list):
                return any(_equal(element, needle) for element in found)
            return False
        if self.name == "between":
            low, high = self.args
            ge, le = _COMPARISONS[">="], _COMPARISONS["<="]
            return ge(found, low) and le(found, high)
        if self.name == "in":
            return any(_equal(found, candidate) for candidate in self.args)
        raise AssertionError(f"unknown condition function {self.name}")

    def __str__(self) -> str:
        if self.name == "in":
            return f"{self.path} IN ({', '.join(repr(a) for a in self.args)})"
        if self.name == "between":
            return f"{self.path} BETWEEN {self.args[0]!r} AND {self.args[1]!r}"
        args = "".join(f", {a!r}" for a in self.args)
        return f"{self.name}({self.path}{args})"


@dataclass(frozen=True, eq=False)
class _And(Condition):
    left: Condition
    right: Condition

    def evaluate(self, item: Mapping[str, Any] | None) -> bool:
        return self.left.evaluate(item) and self.right.evaluate(item)

    def __str__(self) -> str:
        return f"({self.left} AND {self.right})"


@dataclass(frozen=True, eq=False)
class _Or(Condition):
    left: Condition
    right: Condition

    def evaluate(self, item: Mapping[str, Any] | None) -> bool:
        return self.left.evaluate(item) or self.right.evaluate(item)

    def __str__(self) -> str:
        return f"({self.left} OR {self.right})"


@dataclass(frozen=True, eq=False)
class _Not(Condition):
    inner: Condition

    def evaluate(self, item: Mapping[str, Any] | None) -> bool:
        return not self.inner.evaluate(item)

    def __str__(self) -> str:
        return f"(NOT {self.inner})"


class Attr:
    """An attribute path of an item; its operators and methods build conditions."""

    __hash__ = None  # type: ignore[assignment]  # == builds a Condition, so no hashing

    def __init__(self, path: str) -> None:
        self.path = path
        self.parts = _parse_path(path)

    def _compare(self, op: str, value: Any) -> Condition:
        return _Compare(self.path, self.parts, op, value)

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        return self._compare("=", value)

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        return self._compare("<>", value)

    def __lt__(self, value: Any) -> Condition:
        return self._compare("<", value)

    def __le__(self, value: Any) -> Condition:
        return self._compare("<=", value)

    def __gt__(self, value: Any) -> Condition:
        return self._compare(">", value)

    def __ge__(self, value: Any) -> Condition:
        return self._compare(">=", value)

    def exists(self) -> Condition:
        """The attribute is present (whatever its value, even null)."""
        return _Function(self.path, self.parts, "attribute_exists", ())

    def not_exists(self) -> Condition:
        """The attribute is absent — on a key attribute: the item does not exist."""
        return _Function(self.path, self.parts, "attribute_not_exists", ())

    def begins_with(self, prefix: str) -> Condition:
        """The attribute is a string starting with ``prefix``."""
        return _Function(self.path, self.parts, "begins_with", (prefix,))

    def contains(self, value: Any) -> Condition:
        """A string attribute containing the substring, or a list containing the value."""
        return _Function(self.path, self.parts, "contains", (value,))

    def between(self, low: Any, high: Any) -> Condition:
        """``low <= attribute <= high``, all three of one type (number or string)."""
        return _Function(self.path, self.parts, "between", (low, high))

    def is_in(self, values: Iterable[Any]) -> Condition:
        """The attribute equals one of ``values``."""
        return _Function(self.path, self.parts, "in", tuple(values))

    def __repr__(self) -> str:
        return f"attr({self.path!r})"


def attr(path: str) -> Attr:
    """The attribute at ``path`` (``"stock"``, ``"author.name"``, ``"tags[0]"``)."""
    return Attr(path)


def condition_text(condition: Condition | None) -> str:
    """A readable rendering of ``condition`` for error messages."""
    return "<none>" if condition is None else str(condition)
