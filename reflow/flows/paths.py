"""JSONPath for the Amazon States Language, written for it (no library).

ASL uses two kinds of path. A *reference path* (``ResultPath``, the
``Variable`` of a Choice rule, ``…Path`` fields) names one node by fields and
indices only, so it can also be written to. A *path* (``InputPath``,
``OutputPath``, ``.$`` keys) may also use ``*``, ``..``, slices, unions and
``?()`` filters; such an indefinite path yields a list of every match.

A path starts at ``$`` (the data), ``$$`` (the context object) or
``$name`` (a workflow variable). Parsing is memoised, so the hot loop only
walks a compiled tuple of steps.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from reflow.flows.errors import (
    RESULT_PATH_MATCH_FAILURE,
    PathSyntaxError,
    StatesError,
    StatesRuntimeError,
)

__all__ = [
    "CompiledPath",
    "compile_path",
    "evaluate",
    "set_reference",
]

_NAME = re.compile(r"[A-Za-z_][\w-]*|[^\W\d][\w-]*", re.UNICODE)
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Field:
    """``.name`` or ``['name']``."""

    name: str


@dataclass(frozen=True)
class Index:
    """``[3]`` (negative counts from the end)."""

    index: int


@dataclass(frozen=True)
class Wildcard:
    """``.*`` or ``[*]``: every member or element."""


@dataclass(frozen=True)
class Slice:
    """``[start:end:step]``."""

    start: int | None
    end: int | None
    step: int | None


@dataclass(frozen=True)
class Union:
    """``[0,2]`` or ``['a','b']``."""

    keys: tuple[str | int, ...]


@dataclass(frozen=True)
class Descend:
    """``..name`` or ``..*``: the named members at any depth."""

    name: str | None


@dataclass(frozen=True)
class Filter:
    """``[?(@.field)]`` or ``[?(@.field OP literal)]`` over the elements."""

    path: tuple[Field | Index, ...]
    op: str | None
    literal: Any


Step = Field | Index | Wildcard | Slice | Union | Descend | Filter


@dataclass(frozen=True)
class CompiledPath:
    """A parsed path: where it starts and the steps from there."""

    text: str
    root: str  # "$", "$$" or a variable name
    steps: tuple[Step, ...]
    definite: bool = True
    """Whether the path names at most one node (fields and indices only)."""
    keys: tuple[str | int, ...] = ()
    """For a definite path, its field names (str) and indices (int) in order."""


@lru_cache(maxsize=4096)
def compile_path(text: str) -> CompiledPath:
    """Parse ``text``; raises :class:`PathSyntaxError` saying where it breaks."""
    if not text.startswith("$"):
        raise PathSyntaxError(text, "a path must start with '$'")
    if text.startswith("$$"):
        root, position = "$$", 2
    else:
        match = _VAR_NAME.match(text, 1)
        if match is not None:
            root, position = match.group(), match.end()
        else:
            root, position = "$", 1
    steps: list[Step] = []
    while position < len(text):
        char = text[position]
        if text.startswith("..", position):
            position += 2
            if text.startswith("*", position):
                steps.append(Descend(None))
                position += 1
                continue
            match = _NAME.match(text, position)
            if match is None:
                raise PathSyntaxError(text, f"a name must follow '..' at offset {position}")
            steps.append(Descend(match.group()))
            position = match.end()
        elif char == ".":
            position += 1
            if text.startswith("*", position):
                steps.append(Wildcard())
                position += 1
                continue
            match = _NAME.match(text, position)
            if match is None:
                raise PathSyntaxError(text, f"a name must follow '.' at offset {position}")
            steps.append(Field(match.group()))
            position = match.end()
        elif char == "[":
            end = _bracket_end(text, position)
            steps.append(_bracket(text, text[position + 1 : end].strip()))
            position = end + 1
        else:
            raise PathSyntaxError(text, f"unexpected {char!r} at offset {position}")
    definite = all(isinstance(step, Field | Index) for step in steps)
    keys = tuple(
        step.name if isinstance(step, Field) else step.index
        for step in steps
        if isinstance(step, Field | Index)
    )
    return CompiledPath(text, root, tuple(steps), definite, keys if definite else ())


def _bracket_end(text: str, start: int) -> int:
    quote: str | None = None
    depth = 0
    for position in range(start, len(text)):
        char = text[position]
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in ")]":
            depth -= 1
            if depth == 0 and char == "]":
                return position
    raise PathSyntaxError(text, f"'[' at offset {start} is never closed")


def _bracket(text: str, inner: str) -> Step:
    if inner == "*":
        return Wildcard()
    if inner.startswith("?(") and inner.endswith(")"):
        return _filter(text, inner[2:-1].strip())
    if ":" in inner and not inner.startswith(("'", '"')):
        parts = inner.split(":")
        if len(parts) > 3:
            raise PathSyntaxError(text, f"slice [{inner}] has too many parts")
        try:
            numbers = [int(part) if part.strip() else None for part in parts]
        except ValueError:
            raise PathSyntaxError(text, f"slice [{inner}] must hold integers") from None
        numbers += [None] * (3 - len(numbers))
        if numbers[2] == 0:
            raise PathSyntaxError(text, "a slice step must not be 0")
        return Slice(numbers[0], numbers[1], numbers[2])
    keys = [_key(text, part.strip()) for part in _split_commas(inner)]
    if len(keys) == 1:
        key = keys[0]
        return Field(key) if isinstance(key, str) else Index(key)
    return Union(tuple(keys))


def _split_commas(inner: str) -> list[str]:
    parts: list[str] = []
    quote: str | None = None
    current = ""
    for char in inner:
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts


def _key(text: str, part: str) -> str | int:
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "'\"":
        return part[1:-1]
    try:
        return int(part)
    except ValueError:
        raise PathSyntaxError(text, f"[{part}] is neither an index nor a quoted name") from None


def _filter(text: str, expression: str) -> Filter:
    match = re.fullmatch(
        r"@((?:\.[^\s.\[=!<>]+|\[\d+\])*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+))?", expression
    )
    if match is None:
        raise PathSyntaxError(text, f"unsupported filter ?({expression})")
    inner = compile_path("$" + match.group(1)) if match.group(1) else compile_path("$")
    path = tuple(step for step in inner.steps if isinstance(step, Field | Index))
    if len(path) != len(inner.steps):
        raise PathSyntaxError(text, f"a filter may only name fields and indices: {expression}")
    literal: Any = None
    if match.group(2) is not None:
        raw = match.group(3).strip()
        if raw[:1] == "'" and raw[-1:] == "'":
            literal = raw[1:-1]
        else:
            try:
                literal = json.loads(raw)
            except ValueError:
                raise PathSyntaxError(text, f"filter literal {raw} is not JSON") from None
    return Filter(path, match.group(2), literal)


_MISSING = object()


def evaluate(
    path: str | CompiledPath,
    data: Any,
    context: Any = None,
    variables: Mapping[str, Any] | None = None,
) -> Any:
    """The value ``path`` selects; a list of matches if it is indefinite.

    A definite path that selects nothing raises :class:`StatesRuntimeError`
    (``States.Runtime``), as Step Functions fails such a state.
    """
    compiled = compile_path(path) if isinstance(path, str) else path
    if compiled.root == "$":
        base = data
    elif compiled.root == "$$":
        base = context
    else:
        if variables is None or compiled.root not in variables:
            raise StatesRuntimeError(
                f"The variable '${compiled.root}' is not defined (path {compiled.text})"
            )
        base = variables[compiled.root]
    if compiled.definite:
        # The hot path of every state: plain loops over precomputed keys.
        value = base
        for key in compiled.keys:
            if type(key) is str:
                value = value.get(key, _MISSING) if type(value) is dict else _MISSING
            elif type(value) is list and -len(value) <= key < len(value):  # type: ignore[operator]
                value = value[key]  # type: ignore[index]
            else:
                value = _MISSING
            if value is _MISSING:
                raise StatesRuntimeError(
                    f"The JSONPath '{compiled.text}' could not be found in the input"
                )
        return value
    matches = [base]
    for step in compiled.steps:
        matches = _apply(matches, step)
    return matches


def _child(value: Any, step: Field | Index) -> Any:
    if isinstance(step, Field):
        if isinstance(value, dict):
            return value.get(step.name, _MISSING)
        return _MISSING
    if isinstance(value, list):
        index = step.index
        if -len(value) <= index < len(value):
            return value[index]
    return _MISSING


def _apply(matches: list[Any], step: Step) -> list[Any]:
    out: list[Any] = []
    for value in matches:
        if isinstance(step, Field | Index):
            child = _child(value, step)
            if child is not _MISSING:
                out.append(child)
        elif isinstance(step, Wildcard):
            if isinstance(value, dict):
                out.extend(value.values())
            elif isinstance(value, list):
                out.extend(value)
        elif isinstance(step, Slice):
            if isinstance(value, list):
                out.extend(value[step.start : step.end : step.step])
        elif isinstance(step, Union):
            for key in step.keys:
                child = _child(value, Field(key) if isinstance(key, str) else Index(key))
                if child is not _MISSING:
                    out.append(child)
        elif isinstance(step, Descend):
            _descend(value, step.name, out)
        elif isinstance(value, list | dict):
            elements = value if isinstance(value, list) else list(value.values())
            out.extend(element for element in elements if _keep(element, step))
    return out


def _descend(value: Any, name: str | None, out: list[Any]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            if name is None or key == name:
                out.append(child)
            _descend(child, name, out)
    elif isinstance(value, list):
        for child in value:
            if name is None:
                out.append(child)
            _descend(child, name, out)


def _keep(element: Any, step: Filter) -> bool:
    value = element
    for part in step.path:
        value = _child(value, part)
        if value is _MISSING:
            return False
    if step.op is None:
        return True
    if isinstance(value, bool) != isinstance(step.literal, bool):
        return step.op == "!="
    try:
        return _COMPARE[step.op](value, step.literal)
    except TypeError:
        return False


def set_reference(data: Any, path: str, value: Any) -> Any:
    """A copy of ``data`` with ``value`` placed at reference path ``path`` (ResultPath).

    ``$`` replaces the whole document; missing objects on the way are
    created. Writing through a non-object raises ``States.Runtime``.
    """
    compiled = compile_path(path)
    if compiled.root != "$" or not compiled.definite:
        raise StatesRuntimeError(f"ResultPath '{path}' must be a reference path under '$'")
    if not compiled.steps:
        return value
    # Copy only the containers along the path: the rest is shared, never mutated.
    if not isinstance(data, dict | list):
        raise StatesError(
            RESULT_PATH_MATCH_FAILURE, f"ResultPath '{path}' cannot be applied to {data!r}"
        )
    result = _shallow(data)
    target: Any = result
    steps = compiled.steps
    for position, step in enumerate(steps):
        last = position == len(steps) - 1
        if isinstance(step, Field):
            if not isinstance(target, dict):
                raise StatesError(
                    RESULT_PATH_MATCH_FAILURE,
                    f"ResultPath '{path}' cannot be applied: {step.name!r} is not in an object",
                )
            if last:
                target[step.name] = value
                break
            child = target.get(step.name)
            target[step.name] = _shallow(child) if isinstance(child, dict | list) else {}
            target = target[step.name]
        else:
            assert isinstance(step, Index)
            if not isinstance(target, list) or not -len(target) <= step.index < len(target):
                raise StatesError(
                    RESULT_PATH_MATCH_FAILURE,
                    f"ResultPath '{path}' cannot be applied: index {step.index} is out of range",
                )
            if last:
                target[step.index] = value
                break
            child = target[step.index]
            target[step.index] = _shallow(child) if isinstance(child, dict | list) else {}
            target = target[step.index]
    return result


def _shallow(value: dict[str, Any] | list[Any]) -> Any:
    return dict(value) if isinstance(value, dict) else list(value)
