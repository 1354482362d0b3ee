"""EventBridge event patterns: validated once, compiled, then matched fast.

``Pattern(p)`` accepts a pattern as a dict or JSON text, checks it against
every rule of EventBridge's pattern language, and compiles it into
alternatives of :class:`~reflow.events.conditions.Field` s (``$or`` is
expanded at compile time, at any depth). Matching then only reads the leaf
values at each field's path and tests plain conditions; nothing is parsed
twice.

What a pattern is, in brief (docs/events.md has every operator with
examples): an object whose keys follow the event's structure; a key's value
is either an object (a nested level) or a non-empty array whose members are
alternatives: JSON scalars for exact matches, or one-key objects naming an
operator (``prefix``, ``suffix``, ``equals-ignore-case``, ``wildcard``,
``anything-but``, ``numeric``, ``exists``, ``cidr``). ``$or`` holds a list of
sub-patterns, any of which may match.

A malformed pattern raises :class:`~reflow.errors.InvalidPatternError` whose
``path`` is the dotted position in the pattern (``detail.size[0].numeric``)
and whose ``rule`` says what is broken.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any

from reflow.errors import InvalidPatternError
from reflow.events.conditions import (
    AnythingBut,
    AnythingButMatch,
    Cidr,
    Condition,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Field,
    Membership,
    Numeric,
    Path,
    Prefix,
    Suffix,
    Wildcard,
    consistent_choice,
    is_number,
    leaf_entries,
    typed_key,
)
from reflow.events.model import Event

__all__ = ["MAX_ALTERNATIVES", "Alternative", "Pattern", "compile_pattern"]

MAX_ALTERNATIVES = 1024
"""How many alternatives ``$or`` may expand into before a pattern is "too complex"."""

MAX_WILDCARDS = 5
"""How many ``*`` one wildcard may hold (more makes matching costly, as in EventBridge)."""

Alternative = tuple[Field, ...]
"""Fields that must all hold; a pattern matches when any of its alternatives does."""

_OPERATORS = (
    "anything-but",
    "cidr",
    "equals-ignore-case",
    "exists",
    "numeric",
    "prefix",
    "suffix",
    "wildcard",
)
_LOWER = ("<", "<=")
_UPPER = (">", ">=")


class Pattern:
    """A compiled EventBridge event pattern.

    ``Pattern(p).matches(event)`` tells whether the event (its EventBridge
    view, a dict) matches. Construction validates and compiles; an invalid
    pattern raises :class:`~reflow.errors.InvalidPatternError`.
    """

    __slots__ = ("alternatives", "source")

    def __init__(self, pattern: Mapping[str, Any] | str) -> None:
        self.source: dict[str, Any] = _load(pattern)
        self.alternatives: tuple[Alternative, ...] = compile_pattern(self.source)

    def matches(self, event: Mapping[str, Any] | Event) -> bool:
        """Whether ``event`` (an EventBridge event dict, or an :class:`Event`) matches."""
        if isinstance(event, Event):
            event = event.to_eventbridge()
        cache: dict[Path, tuple[list[Any], list[Membership] | None]] = {}
        for alternative in self.alternatives:
            inside_arrays = False
            for item in alternative:
                entry = cache.get(item.path)
                if entry is None:
                    entry = cache[item.path] = leaf_entries(event, item.path)
                if not item.test(entry[0]):
                    break
                inside_arrays = inside_arrays or entry[1] is not None
            else:
                if not inside_arrays or _array_consistent(alternative, cache):
                    return True
        return False

    def __repr__(self) -> str:
        return f"Pattern({json.dumps(self.source, sort_keys=True)})"


def _array_consistent(
    alternative: Alternative, cache: Mapping[Path, tuple[list[Any], list[Membership] | None]]
) -> bool:
    # Only reached when some field's values sit in arrays of objects: the
    # fields must then be satisfiable from one element of each such array.
    options = []
    for item in alternative:
        values, members = cache[item.path]
        if members is None:
            continue  # not inside an array of objects: no constraint
        options.append(item.witnesses(values, members))
    return consistent_choice(options)


def _load(pattern: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(pattern, str):
        try:
            pattern = json.loads(pattern)
        except json.JSONDecodeError as exc:
            raise InvalidPatternError(
                "", f"not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from None
    if not isinstance(pattern, Mapping):
        raise InvalidPatternError("", f"a pattern must be a JSON object, not {_kind(pattern)}")
    return dict(pattern)


def compile_pattern(pattern: Mapping[str, Any]) -> tuple[Alternative, ...]:
    """Validate ``pattern`` and expand it into alternatives of fields."""
    partials = _compile_object(pattern, (), "")
    return tuple(tuple(sorted(fields, key=_field_order)) for fields in partials)


def _field_order(item: Field) -> tuple[int, int, Path]:
    # Exact fields first, as they are the cheapest to test and the most
    # selective, so a failing alternative is usually abandoned after one
    # dictionary probe; among them the shallow ones first, because the
    # envelope's source and detail-type tell events apart better than most
    # fields inside detail. RuleSet shares tree nodes in this same order.
    rank = max((_RANK[type(c)] for c in item.conditions), default=0)
    return rank, len(item.path), item.path


_RANK: dict[type, int] = {
    Exact: 0,
    EqualsIgnoreCase: 1,
    Prefix: 1,
    Suffix: 1,
    Cidr: 2,
    Numeric: 2,
    Wildcard: 2,
    AnythingBut: 3,
    Exists: 4,
}


def _compile_object(pattern: Mapping[str, Any], prefix: Path, where: str) -> list[list[Field]]:
    """The alternatives of one object level, each a list of fields."""
    alternatives: list[list[Field]] = [[]]
    for key, value in pattern.items():
        if not isinstance(key, str):
            raise InvalidPatternError(where, f"key {key!r} is not a string")
        here = f"{where}.{key}" if where else key
        if key == "$or":
            branches = _compile_or(value, prefix, here)
            alternatives = [a + b for a in alternatives for b in branches]
        elif isinstance(value, Mapping):
            nested = _compile_object(value, (*prefix, key), here)
            alternatives = [a + b for a in alternatives for b in nested]
        elif isinstance(value, list):
            item = Field((*prefix, key), _compile_values(value, here))
            alternatives = [[*a, item] for a in alternatives]
        else:
            raise InvalidPatternError(
                here, f"must be an object or an array of values, not {_kind(value)}"
            )
        if len(alternatives) > MAX_ALTERNATIVES:
            raise InvalidPatternError(
                here,
                f"too complex: $or expands into more than {MAX_ALTERNATIVES} alternatives",
            )
    return alternatives


def _compile_or(value: Any, prefix: Path, where: str) -> list[list[Field]]:
    if not isinstance(value, list) or len(value) < 2:
        raise InvalidPatternError(where, "$or must be an array of at least two objects")
    branches: list[list[Field]] = []
    for index, branch in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(branch, Mapping):
            raise InvalidPatternError(at, f"each $or member must be an object, not {_kind(branch)}")
        if not branch:
            raise InvalidPatternError(at, "an $or member must not be empty")
        branches.extend(_compile_object(branch, prefix, at))
    return branches


def _compile_values(values: list[Any], where: str) -> frozenset[Condition]:
    if not values:
        raise InvalidPatternError(where, "empty arrays are not allowed")
    conditions: set[Condition] = set()
    for index, value in enumerate(values):
        at = f"{where}[{index}]"
        if isinstance(value, Mapping):
            conditions.add(_compile_operator(value, at))
        elif value is None or isinstance(value, str | bool | int | float):
            conditions.add(Exact(typed_key(value)))
        else:
            raise InvalidPatternError(
                at,
                f"a match value must be a string, number, true, false or null, not {_kind(value)}",
            )
    return frozenset(conditions)


def _compile_operator(expression: Mapping[str, Any], where: str) -> Condition:
    if len(expression) != 1:
        raise InvalidPatternError(
            where, f"a match expression has exactly one operator, found {len(expression)}"
        )
    ((operator, operand),) = expression.items()
    at = f"{where}.{operator}"
    if operator == "prefix":
        return _affix(Prefix, operand, at)
    if operator == "suffix":
        return _affix(Suffix, operand, at)
    if operator == "equals-ignore-case":
        return EqualsIgnoreCase(_string(operand, at).lower())
    if operator == "wildcard":
        return _wildcard(operand, at)
    if operator == "anything-but":
        return _anything_but(operand, at)
    if operator == "numeric":
        return _numeric(operand, at)
    if operator == "exists":
        if not isinstance(operand, bool):
            raise InvalidPatternError(at, f"exists must be true or false, not {_kind(operand)}")
        return Exists(operand)
    if operator == "cidr":
        return _cidr(operand, at)
    raise InvalidPatternError(
        at, f"unknown operator {operator!r}; expected one of {', '.join(_OPERATORS)}"
    )


def _affix(kind: type[Prefix] | type[Suffix], operand: Any, at: str) -> Prefix | Suffix:
    if isinstance(operand, Mapping):
        if set(operand) != {"equals-ignore-case"}:
            raise InvalidPatternError(
                at,
                "the only operator allowed inside it is equals-ignore-case, "
                f"found {sorted(operand)}",
            )
        text = _string(operand["equals-ignore-case"], f"{at}.equals-ignore-case")
        return kind(text.lower(), ignore_case=True)
    return kind(_string(operand, at))


def _string(operand: Any, at: str) -> str:
    if not isinstance(operand, str):
        raise InvalidPatternError(at, f"must be a string, not {_kind(operand)}")
    return operand


def _wildcard(operand: Any, at: str) -> Wildcard:
    source = _string(operand, at)
    parts: list[str] = []  # literal runs; a wildcard sits between consecutive runs
    current: list[str] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char == "\\":
            following = source[index + 1 : index + 2]
            if following not in ("*", "\\"):
                raise InvalidPatternError(
                    at, f"invalid escape at position {index}: only \\* and \\\\ are allowed"
                )
            current.append(following)
            index += 2
            continue
        if char == "*":
            if source[index + 1 : index + 2] == "*":
                raise InvalidPatternError(
                    at, f"consecutive wildcard characters at position {index}"
                )
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    if len(parts) - 1 > MAX_WILDCARDS:
        raise InvalidPatternError(at, f"too complex: more than {MAX_WILDCARDS} wildcard characters")
    regex = re.compile(".*".join(re.escape(part) for part in parts), re.DOTALL)
    return Wildcard(source, regex, head=parts[0], tail=parts[-1], parts=tuple(parts))


def _anything_but(operand: Any, at: str) -> AnythingBut:
    if isinstance(operand, Mapping):
        if len(operand) != 1:
            raise InvalidPatternError(
                at,
                f"a nested anything-but expression has exactly one operator, found {len(operand)}",
            )
        ((inner, value),) = operand.items()
        inner_at = f"{at}.{inner}"
        texts = value if isinstance(value, list) else [value]
        if not texts:
            raise InvalidPatternError(inner_at, "empty arrays are not allowed")
        unless: list[AnythingButMatch] = []
        for index, text in enumerate(texts):
            item_at = f"{inner_at}[{index}]" if isinstance(value, list) else inner_at
            if inner in ("prefix", "suffix"):
                if isinstance(text, str) and not text:
                    raise InvalidPatternError(item_at, f"an empty {inner} is not allowed here")
                kind = Prefix if inner == "prefix" else Suffix
                unless.append(kind(_string(text, item_at)))
            elif inner == "equals-ignore-case":
                unless.append(EqualsIgnoreCase(_string(text, item_at).lower()))
            elif inner == "wildcard":
                unless.append(_wildcard(text, item_at))
            else:
                raise InvalidPatternError(
                    inner_at,
                    f"unknown operator {inner!r} inside anything-but; expected prefix, "
                    "suffix, equals-ignore-case or wildcard",
                )
        return AnythingBut(unless=tuple(unless))
    values = operand if isinstance(operand, list) else [operand]
    if not values:
        raise InvalidPatternError(at, "empty arrays are not allowed")
    for index, value in enumerate(values):
        if not (isinstance(value, str) or is_number(value)):
            item_at = f"{at}[{index}]" if isinstance(operand, list) else at
            raise InvalidPatternError(
                item_at, f"anything-but takes strings or numbers, not {_kind(value)}"
            )
    return AnythingBut(excluded=frozenset(typed_key(v) for v in values))


def _numeric(operand: Any, at: str) -> Numeric:
    if not isinstance(operand, list) or not operand:
        raise InvalidPatternError(at, 'numeric must be a non-empty array like [">", 0, "<=", 5]')
    if len(operand) % 2:
        raise InvalidPatternError(at, "numeric needs an operator and a number in pairs")
    if len(operand) > 4:
        raise InvalidPatternError(at, "numeric takes at most two comparisons (a range)")
    pairs = [(operand[i], operand[i + 1]) for i in range(0, len(operand), 2)]
    for index, (op, number) in enumerate(pairs):
        if op not in ("=", *_LOWER, *_UPPER):
            raise InvalidPatternError(
                f"{at}[{2 * index}]", f"unknown numeric operator {op!r}; expected =, <, <=, > or >="
            )
        if not is_number(number):
            raise InvalidPatternError(
                f"{at}[{2 * index + 1}]",
                f"the value for {op!r} must be a number, not {_kind(number)}",
            )
    if len(pairs) == 1:
        op, number = pairs[0]
        value = float(number)
        if op == "=":
            return Numeric(value, True, value, True)
        if op in _UPPER:
            return Numeric(low=value, low_inclusive=op == ">=")
        return Numeric(high=value, high_inclusive=op == "<=")
    (op1, low), (op2, high) = pairs
    if op1 not in _UPPER or op2 not in _LOWER:
        raise InvalidPatternError(
            at, "a numeric range is a lower bound (> or >=) followed by an upper bound (< or <=)"
        )
    if float(high) <= float(low):
        raise InvalidPatternError(
            at, f"the range is empty: bottom {low} must be less than top {high}"
        )
    return Numeric(float(low), op1 == ">=", float(high), op2 == "<=")


def _cidr(operand: Any, at: str) -> Cidr:
    text = _string(operand, at)
    if text.count("/") != 1:
        raise InvalidPatternError(at, f"malformed CIDR {text!r}: exactly one '/' is required")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidPatternError(at, f"malformed CIDR {text!r}: {exc}") from None
    return Cidr(network)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
