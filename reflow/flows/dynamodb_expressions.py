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
* projections: ``p, p, …``;
* key conditions (a Query's): ``k = :v``, optionally ``AND`` one of
  ``s = | < | <= | > | >= :v``, ``s BETWEEN :a AND :b``,
  ``begins_with(s, :v)``; parsed into :class:`KeyTerm` records, which the
  query checks against the table's keys.

Semantics follow DynamoDB's (and :mod:`reflow.state.conditions`): a
comparison with a missing attribute is false, ``<>`` included; values of
different types never compare; every operand of an update reads the item as
it was before the update. Sets are stored as JSON lists in reflow tables, so
``attribute_type(p, :t)`` sees them as ``L``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reflow.flows.dynamodb_parser import KeyTerm, Parser
from reflow.flows.dynamodb_values import (
    MISSING,
    ExpressionError,
    Path,
    Test,
    Update,
    resolve,
    same,
    show,
)
from reflow.state.conditions import Condition

__all__ = [
    "MISSING",
    "Expressions",
    "ExpressionError",
    "KeyTerm",
    "ParsedCondition",
    "Path",
    "Update",
    "resolve",
    "same",
    "show",
]


@dataclass(frozen=True, eq=False)
class ParsedCondition(Condition):
    """A parsed ConditionExpression: a :class:`~reflow.state.conditions.Condition`."""

    test: Test
    text: str

    def evaluate(self, item: Mapping[str, Any] | None) -> bool:
        """Whether ``item`` (None: absent) satisfies the expression."""
        return self.test(item)

    def __str__(self) -> str:
        return self.text


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
        parser = Parser(text, self)
        test = parser.condition()
        parser.end()
        return ParsedCondition(test, text)

    def projection(self, text: str) -> list[Path]:
        """Parse a ProjectionExpression."""
        parser = Parser(text, self)
        paths = [parser.path()]
        while parser.take(","):
            paths.append(parser.path())
        parser.end()
        return paths

    def key_condition(self, text: str) -> list[KeyTerm]:
        """Parse a KeyConditionExpression into its terms (one or two)."""
        return Parser(text, self).key_conditions()

    def update(self, text: str) -> Update:
        """Parse an UpdateExpression."""
        parser = Parser(text, self)
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
