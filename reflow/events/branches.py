"""The index at one node of the rule tree: the ways out along one event path.

:class:`Branch` maps what an event holds at its path to the child nodes it
leads to, one structure per kind of condition, so that the cost of a step
does not depend on how many rules share the branch (docs in
:mod:`reflow.events.ruleset`). :class:`Node` is a point of the tree: the
rules whose alternatives end there and the branches that go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from reflow.events.conditions import (
    AnythingBut,
    Cidr,
    Condition,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Numeric,
    Path,
    Prefix,
    Suffix,
    TypedKey,
    Wildcard,
    is_number,
    parse_address,
    typed_key,
)
from reflow.events.intervals import IntervalTree

__all__ = ["Branch", "Node", "Nodes"]

Nodes = dict[int, "Node"]
"""Child nodes keyed by ``id``: a set that keeps insertion order and removes in O(1)."""

_Wilds = dict[tuple["Wildcard", int], tuple["Wildcard", "Node"]]
"""Wildcard conditions and the child each leads to, keyed by (condition, id(child))."""


class Node:
    """A point in the tree: the rules that end here and the branches that go on."""

    __slots__ = ("branches", "refs", "rules")

    def __init__(self) -> None:
        self.rules: dict[str, int] = {}  # rule name -> alternatives of it ending here
        self.branches: dict[Path, Branch] = {}
        self.refs = 0  # alternatives passing through this node


class Branch:
    """The ways out of a node along one path, indexed by condition kind."""

    __slots__ = (
        "absent",
        "but",
        "but_excluded",
        "children",
        "cidr",
        "cidr_lengths",
        "exact",
        "ignore_case",
        "inexact",
        "key_lengths",
        "memo",
        "memo_hits",
        "numeric",
        "numeric_tree",
        "others",
        "prefix",
        "present",
        "prefix_ci",
        "suffix",
        "suffix_ci",
        "wild_head",
        "wild_tail",
    )

    def __init__(self) -> None:
        self.children: dict[frozenset[Condition], Node] = {}
        self.exact: dict[TypedKey, Nodes] = {}
        self.prefix: dict[str, Nodes] = {}
        self.prefix_ci: dict[str, Nodes] = {}
        self.suffix: dict[str, Nodes] = {}
        self.suffix_ci: dict[str, Nodes] = {}
        self.ignore_case: dict[str, Nodes] = {}
        # CIDR blocks by (IP version, prefix length, network as an integer);
        # an address probes one key per prefix length in use.
        self.cidr: dict[tuple[int, int, int], Nodes] = {}
        self.cidr_lengths: dict[tuple[int, int], int] = {}
        # Wildcards by the literal text before their first * (or, when they
        # start with *, after their last *): only those whose head (tail)
        # the value starts (ends) with run their regular expression.
        self.wild_head: dict[str, _Wilds] = {}
        self.wild_tail: dict[str, _Wilds] = {}
        self.others: dict[tuple[Condition, int], tuple[Condition, Node]] = {}
        # anything-but over plain values, indexed as "every entry except the
        # ones that exclude this value": a step reads one dictionary of
        # exclusions instead of testing each condition.
        self.but: dict[tuple[AnythingBut, int], Node] = {}
        self.but_excluded: dict[TypedKey, set[tuple[AnythingBut, int]]] = {}
        # The children one scalar value leads to, remembered per value (see
        # step_one); emptied whenever the branch's index changes, None while
        # switched off for a path whose values do not recur.
        self.memo: dict[Any, tuple[Node, ...]] | None = {}
        self.memo_hits = 0
        self.numeric: dict[tuple[Numeric, int], tuple[Numeric, Node]] = {}
        self.numeric_tree: IntervalTree[Node] | None = None  # built on first need
        self.absent: Nodes = {}
        self.present: Nodes = {}  # exists: true
        self.inexact = 0  # index entries other than exact values (0: the fast path applies)
        # For each text-keyed table (by id), how many of its keys have each
        # length: a value is probed only at the lengths some key has (a
        # prefix table of "/news/2026/", "/sport/2026/" ... costs a probe per
        # distinct length, not one per character of the value).
        self.key_lengths: dict[int, dict[int, int]] = {}

    def child(self, conditions: frozenset[Condition]) -> Node:
        """The child reached by ``conditions``, created and indexed on first use."""
        node = self.children.get(conditions)
        if node is None:
            node = self.children[conditions] = Node()
            for condition in conditions:
                self._index(condition, node)
        return node

    def drop(self, conditions: frozenset[Condition]) -> None:
        """Forget the child reached by ``conditions`` (no alternative uses it any more)."""
        node = self.children.pop(conditions)
        for condition in conditions:
            self._unindex(condition, node)

    def _table(self, condition: Condition) -> tuple[dict[Any, Nodes], Any] | None:
        if isinstance(condition, Exact):
            return self.exact, condition.key
        if isinstance(condition, Prefix):
            return (self.prefix_ci if condition.ignore_case else self.prefix), condition.text
        if isinstance(condition, Suffix):
            return (self.suffix_ci if condition.ignore_case else self.suffix), condition.text
        if isinstance(condition, EqualsIgnoreCase):
            return self.ignore_case, condition.text
        if isinstance(condition, Cidr):
            network = condition.network
            return self.cidr, (network.version, network.prefixlen, int(network.network_address))
        return None

    def _index(self, condition: Condition, node: Node) -> None:
        self.memo, self.memo_hits = {}, 0
        if not isinstance(condition, Exact):
            self.inexact += 1
        if isinstance(condition, Exists):
            (self.present if condition.present else self.absent)[id(node)] = node
            return
        if isinstance(condition, Numeric):
            self.numeric[condition, id(node)] = (condition, node)
            self.numeric_tree = None
            return
        if isinstance(condition, AnythingBut) and not condition.unless:
            entry = (condition, id(node))
            self.but[entry] = node
            for key in condition.excluded:
                self.but_excluded.setdefault(key, set()).add(entry)
            return
        if isinstance(condition, Wildcard) and (condition.head or condition.tail):
            wilds, text = (
                (self.wild_head, condition.head)
                if condition.head
                else (self.wild_tail, condition.tail)
            )
            bucket = wilds.get(text)
            if bucket is None:
                bucket = wilds[text] = {}
                self._count_key(wilds, text, 1)
            bucket[condition, id(node)] = (condition, node)
            return
        table = self._table(condition)
        if table is None:
            self.others[condition, id(node)] = (condition, node)
            return
        mapping, key = table
        nodes = mapping.get(key)
        if nodes is None:
            nodes = mapping[key] = {}
            if type(key) is str:
                self._count_key(mapping, key, 1)
        nodes[id(node)] = node
        if isinstance(condition, Cidr):
            length = (condition.network.version, condition.network.prefixlen)
            self.cidr_lengths[length] = self.cidr_lengths.get(length, 0) + 1

    def _count_key(self, table: dict[str, Any], key: str, change: int) -> None:
        counts = self.key_lengths.setdefault(id(table), {})
        total = counts.get(len(key), 0) + change
        if total:
            counts[len(key)] = total
        else:
            del counts[len(key)]

    def _lengths(self, table: dict[str, Any]) -> dict[int, int]:
        return self.key_lengths[id(table)]

    def _unindex(self, condition: Condition, node: Node) -> None:
        self.memo, self.memo_hits = {}, 0
        if not isinstance(condition, Exact):
            self.inexact -= 1
        if isinstance(condition, Exists):
            del (self.present if condition.present else self.absent)[id(node)]
            return
        if isinstance(condition, Numeric):
            del self.numeric[condition, id(node)]
            self.numeric_tree = None
            return
        if isinstance(condition, AnythingBut) and not condition.unless:
            entry = (condition, id(node))
            del self.but[entry]
            for key in condition.excluded:
                excluded = self.but_excluded[key]
                excluded.discard(entry)
                if not excluded:
                    del self.but_excluded[key]
            return
        if isinstance(condition, Wildcard) and (condition.head or condition.tail):
            wilds, text = (
                (self.wild_head, condition.head)
                if condition.head
                else (self.wild_tail, condition.tail)
            )
            del wilds[text][condition, id(node)]
            if not wilds[text]:
                del wilds[text]
                self._count_key(wilds, text, -1)
            return
        table = self._table(condition)
        if table is None:
            del self.others[condition, id(node)]
            return
        mapping, key = table
        nodes = mapping[key]
        del nodes[id(node)]
        if not nodes:
            del mapping[key]
            if type(key) is str:
                self._count_key(mapping, key, -1)
        if isinstance(condition, Cidr):
            length = (condition.network.version, condition.network.prefixlen)
            self.cidr_lengths[length] -= 1
            if not self.cidr_lengths[length]:
                del self.cidr_lengths[length]

    def step_one(self, value: Any) -> Iterable[Node]:
        """The children that a single leaf ``value`` leads to, remembered per value.

        Like a lazily built automaton, a branch computes the way out for a
        value the first time it meets it and then reads it back with one
        dictionary probe: values such as states, languages or sections
        recur from event to event, and then the cost of a step no longer
        depends on how many conditions the branch holds. The memory is
        bounded, and switched off when it fills with fewer hits than values
        (ids, timestamps, paths: values that never recur would only cost the
        insertions); any change to the branch empties it and switches it
        back on, so it never answers for rules that have gone.
        """
        memo = self.memo
        if memo is None:
            return self.step([value])
        kind = type(value)
        if kind is str:
            key: Any = value
        elif kind in _SCALARS:
            # The type is part of the key: True and 1, or 1 and 1.0, are
            # equal in Python but not necessarily to every condition.
            key = (kind, value)
        else:
            return self.step([value])
        hit = memo.get(key)
        if hit is not None:
            self.memo_hits += 1
            return hit
        hit = tuple(self.step([value]))
        if len(memo) >= _MEMO_SIZE:
            if self.memo_hits < _MEMO_SIZE:
                self.memo = None
                return hit
            memo.clear()
            self.memo_hits = 0
        memo[key] = hit
        return hit

    def step(self, values: list[Any]) -> Iterator[Node]:
        """The children that the leaf ``values`` at this branch's path lead to."""
        if not values:
            return iter(self.absent.values())
        if len(self.children) <= _FEW_CHILDREN:
            # Most branches deep in the tree hold one or two conditions: testing
            # them beats consulting every index (the same test a Pattern makes).
            return iter(
                [child for conditions, child in self.children.items() if _holds(conditions, values)]
            )
        reached: dict[int, Node] = dict(self.present) if self.present else {}
        exact, others, but = self.exact, self.others.values(), self.but
        for value in values:
            key = ("s", value) if type(value) is str else typed_key(value)
            if exact:
                hit = exact.get(key)
                if hit:
                    reached.update(hit)
            if but:
                excluded = self.but_excluded.get(key)
                for entry, node in but.items():
                    if excluded is None or entry not in excluded:
                        reached[entry[1]] = node
            if type(value) is str:
                self._step_text(value, reached)
            elif self.numeric and is_number(value):
                self._step_number(value, reached)
            for condition, node in others:
                if id(node) not in reached and condition.test(value):
                    reached[id(node)] = node
        return iter(reached.values())

    def _step_number(self, value: float, reached: dict[int, Node]) -> None:
        if len(self.numeric) <= _FEW_RANGES:
            for condition, node in self.numeric.values():
                if condition.test(value):
                    reached[id(node)] = node
            return
        if value != value:
            return  # NaN is in no range
        if self.numeric_tree is None:
            self.numeric_tree = IntervalTree(list(self.numeric.values()))
        for node in self.numeric_tree.containing(value):
            reached[id(node)] = node

    def _step_text(self, value: str, reached: dict[int, Node]) -> None:
        if self.prefix:
            _probe_prefixes(self.prefix, value, self._lengths(self.prefix), reached)
        if self.suffix:
            _probe_suffixes(self.suffix, value, self._lengths(self.suffix), reached)
        if self.prefix_ci or self.suffix_ci or self.ignore_case:
            lowered = value.lower()
            if self.prefix_ci:
                _probe_prefixes(self.prefix_ci, lowered, self._lengths(self.prefix_ci), reached)
            if self.suffix_ci:
                _probe_suffixes(self.suffix_ci, lowered, self._lengths(self.suffix_ci), reached)
            hit = self.ignore_case.get(lowered)
            if hit:
                reached.update(hit)
        if self.cidr:
            self._step_address(value, reached)
        size = len(value)
        if self.wild_head:
            for length in self._lengths(self.wild_head):
                if length <= size:
                    bucket = self.wild_head.get(value[:length])
                    if bucket:
                        _test_wilds(bucket, value, reached)
        if self.wild_tail:
            for length in self._lengths(self.wild_tail):
                if length <= size:
                    bucket = self.wild_tail.get(value[size - length :])
                    if bucket:
                        _test_wilds(bucket, value, reached)

    def _step_address(self, value: str, reached: dict[int, Node]) -> None:
        address = parse_address(value)
        if address is None:
            return
        family, number = address
        bits = 32 if family == 4 else 128
        for version, length in self.cidr_lengths:
            if version == family:
                network = number >> (bits - length) << (bits - length)
                hit = self.cidr.get((version, length, network))
                if hit:
                    reached.update(hit)

    def __bool__(self) -> bool:
        return bool(self.children)


# Scalar types whose values step_one remembers (strings are keyed as themselves).
_SCALARS = frozenset({int, float, bool, type(None)})

# How many values a branch remembers before starting afresh: enough for the
# enumerations events are made of (states, types, languages, regions), small
# enough that a field whose values never repeat (ids, timestamps) costs little.
_MEMO_SIZE = 64

# Up to this many prefixes (suffixes) in a branch, testing each is cheaper
# than probing the value's prefixes; past it, probing wins, and its cost is
# one probe per distinct prefix length, however many rules there are.
_FEW = 4

# Up to this many children in a branch, its conditions are tested one by one
# rather than looked up in its indexes.
_FEW_CHILDREN = 2

# Up to this many numeric ranges in a branch, testing each beats the
# interval tree's bookkeeping.
_FEW_RANGES = 8


def _probe_prefixes(
    table: dict[str, Nodes], value: str, lengths: dict[int, int], reached: dict[int, Node]
) -> None:
    if len(table) <= _FEW:
        for text, nodes in table.items():
            if value.startswith(text):
                reached.update(nodes)
        return
    size = len(value)
    for length in lengths:
        if length <= size:
            hit = table.get(value[:length])
            if hit:
                reached.update(hit)


def _probe_suffixes(
    table: dict[str, Nodes], value: str, lengths: dict[int, int], reached: dict[int, Node]
) -> None:
    if len(table) <= _FEW:
        for text, nodes in table.items():
            if value.endswith(text):
                reached.update(nodes)
        return
    size = len(value)
    for length in lengths:
        if length <= size:
            hit = table.get(value[size - length :])
            if hit:
                reached.update(hit)


def _holds(conditions: frozenset[Condition], values: list[Any]) -> bool:
    """Whether any condition holds for any of the (present) leaf values."""
    for condition in conditions:
        for value in values:
            if condition.test(value):
                return True
    return False


def _test_wilds(bucket: _Wilds, value: str, reached: dict[int, Node]) -> None:
    for condition, node in bucket.values():
        if id(node) not in reached and condition.test(value):
            reached[id(node)] = node
