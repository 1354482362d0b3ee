"""Choice rules: every comparison operator, the Is* tests, And/Or/Not.

Comparisons are typed as ASL defines them: a ``String…`` operator is false
when the variable is not a string, ``Numeric…`` when it is not a number (a
boolean is not a number), ``Timestamp…`` when it is not an RFC 3339
timestamp. The ``…Path`` variants take the right-hand side from a path.
``StringMatches`` treats ``*`` as "any run of characters"; ``\\*`` and
``\\\\`` stand for a literal asterisk and backslash.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from reflow.flows import paths
from reflow.flows.errors import StatesRuntimeError
from reflow.flows.model import ChoiceRule

__all__ = [
    "COMPARISONS",
    "TYPE_TESTS",
    "compile_rule",
    "matches",
    "parse_timestamp",
    "string_matches",
]

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "GreaterThan": operator.gt,
    "LessThanEquals": operator.le,
    "GreaterThanEquals": operator.ge,
}
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})", re.IGNORECASE
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_timestamp(value: Any) -> datetime | None:
    """The aware datetime an RFC 3339 string stands for, or None if it is not one."""
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        return None
    text = value.upper().replace("Z", "+00:00")
    # Python before 3.11 refuses some fractional widths; normalise to microseconds.
    match = re.match(r"(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(.*)", text)
    assert match is not None
    fraction = (match.group(2) or "")[:6].ljust(6, "0")
    try:
        return datetime.fromisoformat(f"{match.group(1)}.{fraction}{match.group(3)}")
    except ValueError:
        return None


def _compare(kind: str, relation: str) -> Callable[[Any, Any], bool]:
    order = _ORDER[relation]

    def compare(left: Any, right: Any) -> bool:
        if kind == "String":
            return isinstance(left, str) and isinstance(right, str) and order(left, right)
        if kind == "Numeric":
            return _is_number(left) and _is_number(right) and order(left, right)
        if kind == "Boolean":
            return isinstance(left, bool) and isinstance(right, bool) and left == right
        left_time, right_time = parse_timestamp(left), parse_timestamp(right)
        return left_time is not None and right_time is not None and order(left_time, right_time)

    return compare


COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {}
"""Every two-sided operator (``StringEquals`` …, without ``Path``) to its test."""
for _kind in ("String", "Numeric", "Timestamp"):
    for _relation in _ORDER:
        COMPARISONS[_kind + _relation] = _compare(_kind, _relation)
COMPARISONS["BooleanEquals"] = _compare("Boolean", "Equals")


@lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\" and position + 1 < len(pattern):
            out.append(re.escape(pattern[position + 1]))
            position += 2
            continue
        out.append(".*" if char == "*" else re.escape(char))
        position += 1
    return re.compile("".join(out), re.DOTALL)


def string_matches(value: Any, pattern: str) -> bool:
    """``StringMatches``: ``*`` matches any run; ``\\*`` and ``\\\\`` are literal."""
    return isinstance(value, str) and _wildcard(pattern).fullmatch(value) is not None


COMPARISONS["StringMatches"] = lambda left, right: string_matches(left, right)

TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda value: value is None,
    "IsNumeric": _is_number,
    "IsString": lambda value: isinstance(value, str),
    "IsBoolean": lambda value: isinstance(value, bool),
    "IsTimestamp": lambda value: parse_timestamp(value) is not None,
}
"""The Is* tests other than IsPresent (which needs to know about absence)."""


Test = Callable[[Any, Any, "Mapping[str, Any] | None"], bool]

# id(rule) -> (rule, test): each rule is compiled once; the rule is kept so its id stays unique.
_compiled: dict[int, tuple[ChoiceRule, Test]] = {}
_NUMBERS = (int, float)


def matches(
    rule: ChoiceRule,
    data: Any,
    context: Any = None,
    variables: Mapping[str, Any] | None = None,
) -> bool:
    """Whether a JSONPath-mode ``rule`` holds for ``data``."""
    entry = _compiled.get(id(rule))
    if entry is None or entry[0] is not rule:
        if len(_compiled) >= 4096:
            _compiled.clear()
        entry = (rule, compile_rule(rule))
        _compiled[id(rule)] = entry
    return entry[1](data, context, variables)


def compile_rule(rule: ChoiceRule) -> Test:
    """A function ``(data, context, variables) -> bool`` for a JSONPath-mode rule."""
    operator_name = rule.operator
    if operator_name in ("And", "Or", "Not"):
        children = [compile_rule(child) for child in rule.children]
        if operator_name == "And":
            return lambda d, c, v: all(child(d, c, v) for child in children)
        if operator_name == "Or":
            return lambda d, c, v: any(child(d, c, v) for child in children)
        only = children[0]
        return lambda d, c, v: not only(d, c, v)
    assert rule.variable is not None
    variable = paths.compile_path(rule.variable)
    expected = bool(rule.operand)
    if operator_name == "IsPresent":
        return lambda d, c, v: _present(variable, d, c, v) == expected
    if operator_name in TYPE_TESTS:
        type_test = TYPE_TESTS[operator_name]
        return lambda d, c, v: type_test(paths.evaluate(variable, d, c, v)) == expected
    if operator_name.endswith("Path"):
        compare = COMPARISONS[operator_name[: -len("Path")]]
        other = paths.compile_path(rule.operand)
        return lambda d, c, v: compare(
            paths.evaluate(variable, d, c, v), paths.evaluate(other, d, c, v)
        )
    operand = rule.operand
    if operator_name.startswith("Numeric"):
        # The common case, made cheap: a number (never a boolean) against a constant.
        order = _ORDER[operator_name[len("Numeric") :]]
        return lambda d, c, v: _numeric(paths.evaluate(variable, d, c, v), operand, order)
    compare = COMPARISONS[operator_name]
    return lambda d, c, v: compare(paths.evaluate(variable, d, c, v), operand)


def _numeric(value: Any, operand: Any, order: Callable[[Any, Any], bool]) -> bool:
    return type(value) in _NUMBERS and order(value, operand)


def _present(
    variable: paths.CompiledPath, data: Any, context: Any, variables: Mapping[str, Any] | None
) -> bool:
    try:
        value = paths.evaluate(variable, data, context, variables)
    except StatesRuntimeError:
        return False
    return variable.definite or bool(value)
