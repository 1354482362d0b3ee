"""The compiled form of an EventBridge pattern: conditions on the leaf values at a path.

A pattern compiles (in :mod:`reflow.events.patterns`) into *alternatives*
(``$or`` expanded), each a tuple of :class:`Field` s that must all hold. A
field is a path into the event plus the conditions listed for it; the field
holds when any condition holds for any leaf value found at the path, except
``exists: false``, which holds when there is no leaf value at all.

Values are compared the way EventBridge compares JSON: a number equals a
number of the same value whatever its spelling (``300`` and ``300.0``), and
never a string, a boolean or null. :func:`typed_key` gives each JSON scalar a
hashable key with that equality, so exact values can live in dictionaries.

Every condition is a frozen dataclass, hashable and comparable, so identical
conditions written in different rules are recognised as the same and the
rule index (:mod:`reflow.events.ruleset`) can share them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AnythingBut",
    "AnythingButMatch",
    "Cidr",
    "Condition",
    "EqualsIgnoreCase",
    "Exact",
    "Exists",
    "Field",
    "Membership",
    "Numeric",
    "Path",
    "Prefix",
    "Suffix",
    "Wildcard",
    "consistent",
    "consistent_choice",
    "leaf_entries",
    "leaf_values",
    "parse_address",
    "typed_key",
]

Path = tuple[str, ...]
"""A field's position in the event: ``("detail", "state")``."""

TypedKey = tuple[Any, ...]


def typed_key(value: Any) -> TypedKey:
    """A hashable key for a JSON scalar under EventBridge's equality.

    Numbers compare by value (``300 == 300.0``) but never equal booleans,
    which Python would otherwise treat as ``1`` and ``0``.
    """
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        try:
            return ("n", float(value))
        except OverflowError:  # an integer beyond float range is still a number
            return ("n", value)
    return ("?", repr(value))


def is_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number (``True`` is not, despite Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def leaf_values(event: Mapping[str, Any], path: Path) -> list[Any]:
    """Every leaf value at ``path``; arrays on the way are searched element by element.

    A leaf is anything but an object: an object at the end of the path is
    not a value (``exists`` and every other operator apply to leaves only).
    An empty array holds no value.
    """
    node: Any = event
    for key in path:
        # The common case, objects all the way down, without building lists.
        if type(node) is not dict:
            break
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return []
    else:
        return _leaves(node)
    nodes: list[Any] = [event]
    for key in path:
        reached: list[Any] = []
        for item in nodes:
            if isinstance(item, dict) and key in item:
                _spread(item[key], reached)
        if not reached:
            return reached
        nodes = reached
    return [item for item in nodes if not isinstance(item, dict)]


Membership = tuple[tuple[int, int], ...]
"""Which element of which array of objects a value sits in: ``((id(array), index), ...)``."""


def leaf_entries(event: Mapping[str, Any], path: Path) -> tuple[list[Any], list[Membership] | None]:
    """The leaf values at ``path`` and, when arrays of objects were crossed, where each sits.

    EventBridge refuses a match in which two fields come from objects in
    different elements of the same array (event-ruler's "array-consistent
    matching"), so the matchers need each value's array membership. It is
    ``None`` in the common case, when no array of objects lies on the path.
    An array at the end of the path is not a membership: its elements are
    several values of one field.
    """
    node: Any = event
    for key in path:
        # The common case, objects all the way down: no membership to track.
        if type(node) is not dict:
            break
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return [], None
    else:
        return _leaves(node), None
    if not isinstance(node, list | dict):
        return [], None  # a plain value where the path goes on
    last = len(path) - 1
    nodes: list[tuple[Any, Membership]] = [(event, ())]
    for depth, key in enumerate(path):
        reached: list[tuple[Any, Membership]] = []
        for item, membership in nodes:
            if isinstance(item, dict) and key in item:
                _spread_members(item[key], membership, reached, depth < last)
        nodes = reached
    kept = [(item, membership) for item, membership in nodes if not isinstance(item, dict)]
    members = [membership for _, membership in kept]
    return [item for item, _ in kept], (members if any(members) else None)


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return []
    if not isinstance(node, list):
        return [node]
    found: list[Any] = []
    _spread(node, found)
    return [item for item in found if not isinstance(item, dict)]


def _spread_members(
    value: Any, membership: Membership, into: list[tuple[Any, Membership]], record: bool
) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            inner = (*membership, (id(value), index)) if record else membership
            _spread_members(item, inner, into, record)
    else:
        into.append((value, membership))


def consistent(first: Membership, second: Membership) -> bool:
    """Whether two memberships never put one array in two different elements."""
    if not first or not second:
        return True
    chosen = dict(first)
    return all(chosen.get(array, index) == index for array, index in second)


_MISSING = object()


def _spread(value: Any, into: list[Any]) -> None:
    if isinstance(value, list):
        for item in value:
            _spread(item, into)
    else:
        into.append(value)


# --- the conditions ------------------------------------------------------------


@dataclass(frozen=True)
class Exact:
    """The value equals this one (by :func:`typed_key`)."""

    key: TypedKey

    def test(self, value: Any) -> bool:
        """Whether ``value`` satisfies the condition."""
        return typed_key(value) == self.key


@dataclass(frozen=True)
class Prefix:
    """A string value starts with ``text`` (case-folded when ``ignore_case``)."""

    text: str
    ignore_case: bool = False

    def test(self, value: Any) -> bool:
        """Whether ``value`` satisfies the condition."""
        if not isinstance(value, str):
            return False
        return (value.lower() if self.ignore_case else value).startswith(self.text)


@dataclass(frozen=True)
class Suffix:
    """A string value ends with ``text`` (case-folded when ``ignore_case``)."""

    text: str
    ignore_case: bool = False

    def test(self, value: Any) -> bool:
        """Whether ``value`` satisfies the condition."""
        if not isinstance(value, str):
            return False
        return (value.lower() if self.ignore_case else value).endswith(self.text)


@dataclass(frozen=True)
class EqualsIgnoreCase:
    """A string value equals ``text`` regardless of case (``text`` is lower-cased)."""

    text: str

    def test(self, value: Any) -> bool:
        """Whether ``value`` satisfies the condition."""
        return isinstance(value, str) and value.lower() == self.text


@dataclass(frozen=True)
class Wildcard:
    """A string value matches a glob where ``*`` stands for any run of characters.

    ``source`` is the pattern as written (``\\*`` is a literal star);
    ``regex`` its compiled form; ``head`` and ``tail`` the literal text
    before the first and after the last ``*`` (which the rule index keys
    on). Only ``source`` takes part in equality and hashing.
    """

    source: str
    regex: re.Pattern[str] = field(compare=False, hash=False, repr=False)
    head: str = field(default="", compare=False, hash=False, repr=False)
    tail: str = field(default="", compare=False, hash=False, repr=False)
    # The literal runs between the stars (head first, tail last); empty: use ``regex``.
    parts: tuple[str, ...] = field(default=(), compare=False, hash=False, repr=False)

    def test(self, value: Any) -> bool:
        """Whether ``value`` satisfies the condition."""
        return isinstance(value, str) and self.fits(value)

    def fits(self, value: str) -> bool:
        """Whether the string ``value`` matches the glob.

        Head and tail must open and close the value, and each run between
        two stars must follow the previous one: taking each run's first
        occurrence leaves the most room to the runs after it, so a search
        per run decides (no backtracking, unlike the regular expression).
        """
        parts = self.parts
        if not parts:
            return self.regex.fullmatch(value) is not None
        head, tail = parts[0], parts[-1]
        if len(parts) == 1:
            return value == head
        end = len(value) - len(tail)
        if end < len(head) or not value.startswith(head) or not value.endswith(tail):
            return False
        position = len(head)
        for part in parts[1:-1]:
            found = value.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True


@dataclass(frozen=True)
class Numeric:
    """A number value lies in a range; ``None`` bounds are open ends."""

    low: float | None = None
    low_inclusive: bool = False
    high: float | None = None
    high_inclusive: bool = False

    def test(self, value: Any) -> bool:
        """Whether ``value`` satisfies the condition."""
        if not is_number(value) or value != value:  # NaN is in no range
            return False
        if self.low is not None and (
            value < self.low or (value == self.low and not self.low_inclusive)
        ):
            return False
        return self.high is None or not (
            value > self.high or (value == self.high and not self.high_inclusive)
        )


@dataclass(frozen=True)
class Cidr:
    """A string value is an IPv4 or IPv6 address inside ``network``."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def test(self, value: Any) -> bool:
        """Whether ``value`` satisfies the condition."""
        if not isinstance(value, str):
            return False
        address = parse_address(value)
        network = self.network
        if address is None or address[0] != network.version:
            return False
        shift = network.max_prefixlen - network.prefixlen
        return address[1] >> shift == int(network.network_address) >> shift


def parse_address(text: str) -> tuple[int, int] | None:
    """The IP version and the address as an integer that ``text`` spells, or ``None``.

    Events carry addresses that seldom repeat, so this is on the matchers'
    hot path: dotted quads and IPv6 text are read by the C library's
    ``inet_pton``, whose rules are :mod:`ipaddress`'s (four decimal octets up
    to 255 with no leading zeros; RFC 4291's text forms), and anything else
    (a zone index, an IPv4 tail) by :func:`ipaddress.ip_address`.
    """
    if ":" not in text:
        try:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        except (OSError, ValueError):  # ValueError: not ASCII, or a NUL inside
            return None
    if "." not in text and "%" not in text:
        try:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        except (OSError, ValueError):
            pass
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version, int(address)


AnythingButMatch = Prefix | Suffix | EqualsIgnoreCase | Wildcard


@dataclass(frozen=True)
class AnythingBut:
    """The value is none of ``excluded`` and satisfies none of ``unless``.

    ``anything-but`` with values fills ``excluded`` (typed keys); with a
    nested ``prefix``, ``suffix``, ``equals-ignore-case`` or ``wildcard`` it
    fills ``unless``. Any leaf that is not excluded passes, null included:
    only a missing field fails it.
    """

    excluded: frozenset[TypedKey] = frozenset()
    unless: tuple[AnythingButMatch, ...] = ()

    def test(self, value: Any) -> bool:
        """Whether ``value`` satisfies the condition."""
        if typed_key(value) in self.excluded:
            return False
        return not any(match.test(value) for match in self.unless)


@dataclass(frozen=True)
class Exists:
    """The field has (``True``) or has not (``False``) a leaf value."""

    present: bool

    def test(self, value: Any) -> bool:
        """Whether ``value`` (a leaf that is there) satisfies the condition."""
        return self.present


Condition = (
    Exact | Prefix | Suffix | EqualsIgnoreCase | Wildcard | Numeric | Cidr | AnythingBut | Exists
)


@dataclass(frozen=True)
class Field:
    """One field of an alternative: the path and the conditions, any of which may hold."""

    path: Path
    conditions: frozenset[Condition]

    @property
    def accepts_absence(self) -> bool:
        """Whether a missing field satisfies it (it lists ``exists: false``)."""
        return Exists(False) in self.conditions

    def test(self, values: Sequence[Any]) -> bool:
        """Whether the leaf ``values`` found at the path satisfy the field."""
        if not values:
            return self.accepts_absence
        return any(c.test(v) for c in self.conditions for v in values)

    def witnesses(self, values: Sequence[Any], members: Sequence[Membership]) -> set[Membership]:
        """The array memberships of the values that satisfy the field."""
        if not values:
            return {()} if self.accepts_absence else set()
        return {
            members[index]
            for index, value in enumerate(values)
            if any(c.test(value) for c in self.conditions)
        }


def consistent_choice(options: Sequence[set[Membership]]) -> bool:
    """Whether one membership can be picked from each set with no array split.

    A small backtracking search: patterns have few fields, and only fields
    inside arrays of objects have more than one option.
    """

    def pick(index: int, chosen: dict[int, int]) -> bool:
        if index == len(options):
            return True
        for membership in options[index]:
            fits = all(chosen.get(array, element) == element for array, element in membership)
            if fits and pick(index + 1, {**chosen, **dict(membership)}):
                return True
        return False

    return pick(0, {})
