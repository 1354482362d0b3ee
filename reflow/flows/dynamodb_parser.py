"""The recursive-descent parser behind :mod:`reflow.flows.dynamodb_expressions`.

It tokenises one expression (names, ``#name`` and ``:value`` placeholders,
list indexes, operators and keywords, case-insensitive) and builds the
closures a condition, an operand or an update action evaluates to, over the
values of :mod:`reflow.flows.dynamodb_values` — or, for a Query's
KeyConditionExpression, plain :class:`KeyTerm` records that the query turns
into a key range. Placeholders resolve against
the request's :class:`~reflow.flows.dynamodb_expressions.Expressions`, which
records the ones used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reflow.flows.dynamodb_values import (
    FUNCTIONS,
    MISSING,
    ExpressionError,
    Operand,
    Path,
    Test,
    Update,
    arithmetic,
    compare,
    existing,
    if_not_exists,
    list_append,
    resolve,
    show,
    size,
)

if TYPE_CHECKING:
    from reflow.flows.dynamodb_expressions import Expressions

__all__ = ["KeyTerm", "Parser"]

_KEYWORDS = frozenset({"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"})
_TOKEN = re.compile(
    r"\s*(?:(?P<name>#[A-Za-z0-9_]+)|(?P<value>:[A-Za-z0-9_]+)|(?P<number>\d+)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><>|<=|>=|[=<>+\-(),.\[\]]))"
)
_COMPARE = ("=", "<>", "<", "<=", ">", ">=")


class Parser:
    """Recursive descent over one expression's tokens."""

    def __init__(self, text: str, exprs: Expressions) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("an expression must be a non-empty string")
        self.text = text
        self.exprs = exprs
        self.tokens: list[tuple[str, str, int]] = []
        self.index = 0
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                rest = text[position:]
                if rest.strip():
                    raise ExpressionError(
                        f"Invalid expression {text!r} at offset "
                        f"{position + len(rest) - len(rest.lstrip())}: "
                        f"unexpected character {rest.strip()[0]!r}"
                    )
                break
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind), match.start(kind)))
            position = match.end()

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
            return lambda item: size(resolve(item, path))
        if self.peek()[0] == "value":
            plain, _ = self.value()
            return lambda item: plain
        path = self.path()
        return lambda item: resolve(item, path)

    # -- conditions -------------------------------------------------------------------

    def condition(self) -> Test:
        left = self.conjunction()
        while self.is_keyword("OR"):
            self.index += 1
            right = self.conjunction()
            left = (lambda a, b: lambda item: a(item) or b(item))(left, right)
        return left

    def conjunction(self) -> Test:
        left = self.negation()
        while self.is_keyword("AND"):
            self.index += 1
            right = self.negation()
            left = (lambda a, b: lambda item: a(item) and b(item))(left, right)
        return left

    def negation(self) -> Test:
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

    def function(self, name: str) -> Test:
        self.index += 2  # the name and "("
        path = self.path()
        found: Operand = lambda item: resolve(item, path)  # noqa: E731
        test: Test
        if name == "attribute_exists":
            test = lambda item: found(item) is not MISSING  # noqa: E731
        elif name == "attribute_not_exists":
            test = lambda item: found(item) is MISSING  # noqa: E731
        elif name in ("begins_with", "contains", "attribute_type"):
            self.expect(",")
            other = self.operand()
            test = FUNCTIONS[name](found, other)
        else:
            raise self.error(f"unsupported function {name!r}")
        self.expect(")")
        return test

    def comparison(self) -> Test:
        left = self.operand()
        kind, text = self.peek()
        if kind == "op" and text in _COMPARE:
            self.index += 1
            right = self.operand()
            return lambda item: compare(text, left(item), right(item))
        if self.is_keyword("BETWEEN"):
            self.index += 1
            low = self.operand()
            if not self.is_keyword("AND"):
                raise self.error("expected AND in BETWEEN")
            self.index += 1
            high = self.operand()
            return lambda item: (
                compare(">=", left(item), low(item)) and compare("<=", left(item), high(item))
            )
        if self.is_keyword("IN"):
            self.index += 1
            self.expect("(")
            options = [self.operand()]
            while self.take(","):
                options.append(self.operand())
            self.expect(")")
            return lambda item: any(compare("=", left(item), o(item)) for o in options)
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
            return arithmetic(left, self.set_operand(update), 1)
        if self.take("-"):
            return arithmetic(left, self.set_operand(update), -1)
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
                return lambda item: if_not_exists(resolve(item, path), fallback, item)
            first = self.set_operand(update)
            self.expect(",")
            second = self.set_operand(update)
            self.expect(")")
            return list_append(first, second)
        if name is not None:
            raise self.error(f"unsupported function in SET: {name!r}")
        if self.peek()[0] == "value":
            plain, _ = self.value()
            return lambda item: plain
        path = self.path()
        update.reads.append(path)
        return lambda item: existing(resolve(item, path), path)

    # -- key conditions ---------------------------------------------------------------

    def key_conditions(self) -> list[KeyTerm]:
        """``term [AND term]``: the terms of a KeyConditionExpression."""
        terms = [self.key_term()]
        while self.is_keyword("AND"):
            self.index += 1
            terms.append(self.key_term())
        kind, text = self.peek()
        if kind == "word" and text.upper() in ("OR", "NOT", "IN"):
            raise _key_operator(text.upper())
        self.end()
        return terms

    def key_term(self) -> KeyTerm:
        if self.take("("):
            term = self.key_term()
            self.expect(")")
            return term
        if self.is_keyword("NOT"):
            raise _key_operator("NOT")
        name = self.function_name()
        if name is not None:
            if name != "begins_with":
                raise _key_operator(name)
            self.index += 2
            attribute = self.key_attribute()
            self.expect(",")
            prefix = self.value()
            self.expect(")")
            return KeyTerm(attribute, "begins_with", (prefix,))
        attribute = self.key_attribute()
        kind, text = self.peek()
        if kind == "op" and text in _COMPARE:
            if text == "<>":
                raise _key_operator(text)
            self.index += 1
            return KeyTerm(attribute, text, (self.value(),))
        if self.is_keyword("BETWEEN"):
            self.index += 1
            low = self.value()
            if not self.is_keyword("AND"):
                raise self.error("expected AND in BETWEEN")
            self.index += 1
            return KeyTerm(attribute, "BETWEEN", (low, self.value()))
        if self.is_keyword("IN"):
            raise _key_operator("IN")
        raise self.error("expected =, <, <=, >, >=, BETWEEN or begins_with")

    def key_attribute(self) -> str:
        path = self.path()
        if len(path) != 1:
            raise ExpressionError(
                f"a key condition names a key attribute, not the document path {show(path)}"
            )
        return str(path[0])


@dataclass(frozen=True)
class KeyTerm:
    """One condition of a KeyConditionExpression: ``attribute op value(s)``.

    ``op`` is ``=``, ``<``, ``<=``, ``>``, ``>=``, ``BETWEEN`` (two values) or
    ``begins_with``; each value is ``(plain value, AttributeValue type)``.
    """

    attribute: str
    op: str
    values: tuple[tuple[Any, str], ...]


def _key_operator(op: str) -> ExpressionError:
    return ExpressionError(f"Invalid operator used in KeyConditionExpression: {op}")
