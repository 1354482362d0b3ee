"""DynamoDB's condition, update and projection expressions: a small hand-written parser.

The subset (anything else is an :class:`ExpressionError`, never ignored):

* document paths: ``name``, ``#placeholder``, nested ``a.b``, list elements ``a[0]``;
* values: ``:placeholder`` (from ``ExpressionAttributeValues``);
* conditions: ``=  <>  <  <=  >  >=``, ``a BETWEEN x AND y``, ``a IN (x, y, …)``,
  ``AND``, ``OR``, ``NOT``, parentheses, ``attribute_exists(p)``,
  ``attribute_not_exists(p)``, ``attribute_type(p, :t)``, ``begins_with(p, x)``,
  ``contains(p, x)`` and ``size(p)`` as an operand;
* updates: ``SET p = v`` where ``v`` is an operand, ``x + y``, ``x - y``,
  ``if_not_exists(p, v)`` or ``list_append(x, y)``; ``REMOVE p, …``;
  ``ADD p :v`` (a number, or a set: union); ``DELETE p :v`` (set difference);
  each clause once, in any order;
* projections: ``p, p, …``.

Semantics follow DynamoDB's (and :mod:`reflow.state.conditions`): a
comparison with a missing attribute is false, ``<>`` included; values of
different types never compare; every operand of an update reads the item as
it was before the update. Sets are stored as JSON lists in reflow tables, so
``attribute_type(p, :t)`` sees them as ``L``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reflow.state.conditions import Condition

__all__ = [
    "MISSING",
    "Expressions",
    "ExpressionError",
    "ParsedCondition",
    "Path",
    "Update",
    "resolve",
    "same",
    "show",
]

Path = tuple[str | int, ...]
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
_KEYWORDS = frozenset({"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"})
_TOKEN = re.compile(
    r"\s*(?:(?P<name>#[A-Za-z0-9_]+)|(?P<value>:[A-Za-z0-9_]+)|(?P<number>\d+)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><>|<=|>=|[=<>+\-(),.\[\]]))"
)
_COMPARE = ("=", "<>", "<", "<=", ">", ">=")


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


def _compare(op: str, a: Any, b: Any) -> bool:
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


@dataclass(frozen=True, eq=False)
class ParsedCondition(Condition):
    """A parsed ConditionExpression: a :class:`~reflow.state.conditions.Condition`."""

    test: Callable[[Mapping[str, Any] | None], bool]
    text: str

    def evaluate(self, item: Mapping[str, Any] | None) -> bool:
        """Whether ``item`` (None: absent) satisfies the expression."""
        return self.test(item)

    def __str__(self) -> str:
        return self.text


Operand = Callable[[Mapping[str, Any] | None], Any]


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


class Expressions:
    """Parses one request's expressions against its placeholders, tracking which are used.

    ``names`` is ExpressionAttributeNames; ``values`` maps each value
    placeholder to ``(plain value, its AttributeValue type)``.
    """

    def __init__(self, names: Mapping[str, str], values: Mapping[str, tuple[Any, str]]) -> None:
        self.names = names
        self.values = values
        self.used_names: set[str] = set()
        self.used_values: set[str] = set()

    def unused(self) -> str | None:
        """A ValidationException message for placeholders no expression used."""
        names = sorted(set(self.names) - self.used_names)
        if names:
            return _unused("ExpressionAttributeNames", names)
        values = sorted(set(self.values) - self.used_values)
        if values:
            return _unused("ExpressionAttributeValues", values)
        return None

    def condition(self, text: str) -> ParsedCondition:
        """Parse a ConditionExpression."""
        parser = _Parser(text, self)
        test = parser.condition()
        parser.end()
        return ParsedCondition(test, text)

    def projection(self, text: str) -> list[Path]:
        """Parse a ProjectionExpression."""
        parser = _Parser(text, self)
        paths = [parser.path()]
        while parser.take(","):
            paths.append(parser.path())
        parser.end()
        return paths

    def update(self, text: str) -> Update:
        """Parse an UpdateExpression."""
        parser = _Parser(text, self)
        update = Update()
        seen: set[str] = set()
        while not parser.at_end():
            word = parser.keyword()
            if word not in ("SET", "REMOVE", "ADD", "DELETE"):
                raise parser.error(f"expected SET, REMOVE, ADD or DELETE, found {word!r}")
            if word in seen:
                raise parser.error(f'The "{word}" section can only be used once')
            seen.add(word)
            while True:
                parser.update_action(word, update)
                if not parser.take(","):
                    break
        if not seen:
            raise parser.error("an UpdateExpression needs SET, REMOVE, ADD or DELETE")
        targets = update.targets
        for index, one in enumerate(targets):
            for other in targets[index + 1 :]:
                shorter = min(len(one), len(other))
                if one[:shorter] == other[:shorter]:
                    raise ExpressionError(
                        f"Two document paths overlap with each other; must remove or rewrite "
                        f"one of these paths; path one: [{show(one)}], path two: [{show(other)}]"
                    )
        return update


def _unused(field: str, keys: list[str]) -> str:
    return f"Value provided in {field} unused in expressions: keys: {{{', '.join(keys)}}}"


class _Parser:
    """Recursive descent over one expression's tokens."""

    def __init__(self, text: str, exprs: Expressions) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("an expression must be a non-empty string")
        self.text = text
        self.exprs = exprs
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                if text[position:].strip():
                    raise self.error(f"unexpected character {text[position:].strip()[0]!r}")
                break
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind), match.start(kind)))
            position = match.end()
        self.index = 0

    def error(self, problem: str) -> ExpressionError:
        at = self.tokens[self.index][2] if self.index < len(self.tokens) else len(self.text)
        return ExpressionError(f"Invalid expression {self.text!r} at offset {at}: {problem}")

    def at_end(self) -> bool:
        return self.index >= len(self.tokens)

    def end(self) -> None:
        if not self.at_end():
            raise self.error(f"unexpected {self.tokens[self.index][1]!r}")

    def peek(self, offset: int = 0) -> tuple[str, str]:
        at = self.index + offset
        return self.tokens[at][:2] if at < len(self.tokens) else ("end", "")

    def take(self, op: str) -> bool:
        if self.peek() == ("op", op):
            self.index += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.take(op):
            raise self.error(f"expected {op!r}")

    def keyword(self) -> str:
        kind, text = self.peek()
        if kind != "word":
            raise self.error("expected a keyword")
        self.index += 1
        return text.upper()

    def is_keyword(self, word: str) -> bool:
        kind, text = self.peek()
        return kind == "word" and text.upper() == word

    # -- paths and operands ----------------------------------------------------------

    def element(self) -> str:
        kind, text = self.peek()
        if kind == "name":
            if text not in self.exprs.names:
                raise self.error(
                    f"An expression attribute name used in the document path is not defined; "
                    f"attribute name: {text}"
                )
            self.exprs.used_names.add(text)
            self.index += 1
            return self.exprs.names[text]
        if kind == "word" and text.upper() not in _KEYWORDS:
            self.index += 1
            return text
        raise self.error("expected an attribute name or #placeholder")

    def path(self) -> Path:
        parts: list[str | int] = [self.element()]
        while True:
            if self.take("."):
                parts.append(self.element())
            elif self.take("["):
                kind, text = self.peek()
                if kind != "number":
                    raise self.error("expected a list index")
                self.index += 1
                self.expect("]")
                parts.append(int(text))
            else:
                return tuple(parts)

    def value(self) -> tuple[Any, str]:
        kind, text = self.peek()
        if kind != "value":
            raise self.error("expected a :placeholder")
        if text not in self.exprs.values:
            raise self.error(
                f"An expression attribute value used in expression is not defined; "
                f"attribute value: {text}"
            )
        self.exprs.used_values.add(text)
        self.index += 1
        return self.exprs.values[text]

    def function_name(self) -> str | None:
        kind, text = self.peek()
        if kind == "word" and self.peek(1) == ("op", "("):
            return text
        return None

    def operand(self) -> Operand:
        name = self.function_name()
        if name is not None:
            if name != "size":
                raise self.error(f"function {name!r} is not an operand here")
            self.index += 2
            path = self.path()
            self.expect(")")
            return lambda item: _size(resolve(item, path))
        if self.peek()[0] == "value":
            plain, _ = self.value()
            return lambda item: plain
        path = self.path()
        return lambda item: resolve(item, path)

    # -- conditions -------------------------------------------------------------------

    def condition(self) -> Callable[[Mapping[str, Any] | None], bool]:
        left = self.conjunction()
        while self.is_keyword("OR"):
            self.index += 1
            right = self.conjunction()
            left = (lambda a, b: lambda item: a(item) or b(item))(left, right)
        return left

    def conjunction(self) -> Callable[[Mapping[str, Any] | None], bool]:
        left = self.negation()
        while self.is_keyword("AND"):
            self.index += 1
            right = self.negation()
            left = (lambda a, b: lambda item: a(item) and b(item))(left, right)
        return left

    def negation(self) -> Callable[[Mapping[str, Any] | None], bool]:
        if self.is_keyword("NOT"):
            self.index += 1
            inner = self.negation()
            return lambda item: not inner(item)
        if self.take("("):
            inner = self.condition()
            self.expect(")")
            return inner
        name = self.function_name()
        if name is not None and name != "size":
            return self.function(name)
        return self.comparison()

    def function(self, name: str) -> Callable[[Mapping[str, Any] | None], bool]:
        self.index += 2  # the name and "("
        path = self.path()
        found: Callable[[Mapping[str, Any] | None], Any] = lambda item: resolve(item, path)  # noqa: E731
        test: Callable[[Mapping[str, Any] | None], bool]
        if name == "attribute_exists":
            test = lambda item: found(item) is not MISSING  # noqa: E731
        elif name == "attribute_not_exists":
            test = lambda item: found(item) is MISSING  # noqa: E731
        elif name in ("begins_with", "contains", "attribute_type"):
            self.expect(",")
            other = self.operand()
            test = _FUNCTIONS[name](found, other)
        else:
            raise self.error(f"unsupported function {name!r}")
        self.expect(")")
        return test

    def comparison(self) -> Callable[[Mapping[str, Any] | None], bool]:
        left = self.operand()
        kind, text = self.peek()
        if kind == "op" and text in _COMPARE:
            self.index += 1
            right = self.operand()
            return lambda item: _compare(text, left(item), right(item))
        if self.is_keyword("BETWEEN"):
            self.index += 1
            low = self.operand()
            if not self.is_keyword("AND"):
                raise self.error("expected AND in BETWEEN")
            self.index += 1
            high = self.operand()
            return lambda item: (
                _compare(">=", left(item), low(item)) and _compare("<=", left(item), high(item))
            )
        if self.is_keyword("IN"):
            self.index += 1
            self.expect("(")
            options = [self.operand()]
            while self.take(","):
                options.append(self.operand())
            self.expect(")")
            return lambda item: any(_compare("=", left(item), o(item)) for o in options)
        raise self.error("expected a comparison, BETWEEN, IN or a function")

    # -- updates ----------------------------------------------------------------------

    def update_action(self, clause: str, update: Update) -> None:
        path = self.path()
        if clause == "SET":
            self.expect("=")
            update.sets.append((path, self.set_value(update)))
        elif clause == "REMOVE":
            update.removes.append(path)
        else:
            plain, kind = self.value()
            allowed = ("N", "SS", "NS") if clause == "ADD" else ("SS", "NS")
            if kind not in allowed:
                raise self.error(
                    f"Incorrect operand type for operator or function; operator: {clause}, "
                    f"operand type: {kind}"
                )
            (update.adds if clause == "ADD" else update.deletes).append((path, plain, kind))

    def set_value(self, update: Update) -> Operand:
        left = self.set_operand(update)
        if self.take("+"):
            return _arithmetic(left, self.set_operand(update), 1)
        if self.take("-"):
            return _arithmetic(left, self.set_operand(update), -1)
        return left

    def set_operand(self, update: Update) -> Operand:
        name = self.function_name()
        if name in ("if_not_exists", "list_append"):
            self.index += 2
            if name == "if_not_exists":
                path = self.path()
                update.reads.append(path)
                self.expect(",")
                fallback = self.set_operand(update)
                self.expect(")")
                return lambda item: _if_not_exists(resolve(item, path), fallback, item)
            first = self.set_operand(update)
            self.expect(",")
            second = self.set_operand(update)
            self.expect(")")
            return _list_append(first, second)
        if name is not None:
            raise self.error(f"unsupported function in SET: {name!r}")
        if self.peek()[0] == "value":
            plain, _ = self.value()
            return lambda item: plain
        path = self.path()
        update.reads.append(path)
        return lambda item: _existing(resolve(item, path), path)


def _size(value: Any) -> Any:
    if isinstance(value, str | list | dict):
        return len(value)
    return MISSING  # size() of a number, boolean or null is not defined


def _begins_with(found: Operand, other: Operand) -> Callable[[Mapping[str, Any] | None], bool]:
    def test(item: Mapping[str, Any] | None) -> bool:
        value, prefix = found(item), other(item)
        return isinstance(value, str) and isinstance(prefix, str) and value.startswith(prefix)

    return test


def _contains(found: Operand, other: Operand) -> Callable[[Mapping[str, Any] | None], bool]:
    def test(item: Mapping[str, Any] | None) -> bool:
        value, needle = found(item), other(item)
        if isinstance(value, str):
            return isinstance(needle, str) and needle in value
        if isinstance(value, list):
            return any(same(element, needle) for element in value)
        return False

    return test


def _attribute_type(found: Operand, other: Operand) -> Callable[[Mapping[str, Any] | None], bool]:
    def test(item: Mapping[str, Any] | None) -> bool:
        value = found(item)
        return value is not MISSING and _kind(value) == other(item)

    return test


_FUNCTIONS = {
    "begins_with": _begins_with,
    "contains": _contains,
    "attribute_type": _attribute_type,
}


def _existing(value: Any, path: Path) -> Any:
    if value is MISSING:
        raise ExpressionError(
            f"The provided expression refers to an attribute that does not exist in the item: "
            f"{show(path)}"
        )
    return value


def _if_not_exists(value: Any, fallback: Operand, item: Mapping[str, Any] | None) -> Any:
    return fallback(item) if value is MISSING else value


def _arithmetic(left: Operand, right: Operand, sign: int) -> Operand:
    def compute(item: Mapping[str, Any] | None) -> Any:
        a, b = left(item), right(item)
        if _kind(a) != "N" or _kind(b) != "N":
            raise ExpressionError(
                "An operand in the update expression has an incorrect data type: "
                "+ and - take numbers"
            )
        return a + b if sign > 0 else a - b

    return compute


def _list_append(first: Operand, second: Operand) -> Operand:
    def compute(item: Mapping[str, Any] | None) -> Any:
        a, b = first(item), second(item)
        if not isinstance(a, list) or not isinstance(b, list):
            raise ExpressionError(
                "An operand in the update expression has an incorrect data type: "
                "list_append takes two lists"
            )
        return a + b

    return compute
