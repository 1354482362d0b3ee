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

__all__ = ["COMPARISONS", "TYPE_TESTS", "matches", "parse_timestamp", "string_matches"]

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


def matches(
    rule: ChoiceRule,
    data: Any,
    context: Any = None,
    variables: Mapping[str, Any] | None = None,
) -> bool:
    """Whether a JSONPath-mode ``rule`` holds for ``data``."""
    operator_name = rule.operator
    if operator_name == "And":
        return all(matches(child, data, context, variables) for child in rule.children)
    if operator_name == "Or":
        return any(matches(child, data, context, variables) for child in rule.children)
    if operator_name == "Not":
        return not matches(rule.children[0], data, context, variables)
    assert rule.variable is not None
    if operator_name == "IsPresent":
        try:
            found = _present(rule.variable, data, context, variables)
        except StatesRuntimeError:
            found = False
        return found == bool(rule.operand)
    value = paths.evaluate(rule.variable, data, context, variables)
    if operator_name in TYPE_TESTS:
        return TYPE_TESTS[operator_name](value) == bool(rule.operand)
    operand = rule.operand
    if operator_name.endswith("Path"):
        operator_name = operator_name[: -len("Path")]
        operand = paths.evaluate(operand, data, context, variables)
    return COMPARISONS[operator_name](value, operand)


def _present(variable: str, data: Any, context: Any, variables: Mapping[str, Any] | None) -> bool:
    compiled = paths.compile_path(variable)
    value = paths.evaluate(compiled, data, context, variables)
    return compiled.definite or bool(value)
