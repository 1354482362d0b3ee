"""Many named patterns compiled into one matcher whose cost does not grow with the rule count.

A loop over patterns costs every rule on every event. :class:`RuleSet`
instead merges all rules into one tree, in the manner of a trie: every
alternative of every rule (``$or`` already expanded by the compiler) is a
sequence of fields in a canonical order (exact fields first, shallow before
deep, then by path), and alternatives that begin with the same fields share
the same nodes. An exact field listing several values is split into one
copy of the alternative per value (``"source": ["a", "b"]`` joins the node
of every rule naming ``"a"``). A node branches on a path; a branch maps what
the event holds at that path to the child nodes it leads to:

* exact values, through one dictionary keyed by :func:`typed_key`, so 10,000
  rules naming 10,000 sources cost one hash probe;
* prefixes and suffixes, through dictionaries keyed by the prefix (suffix)
  text, probed with each prefix of the value up to the longest one indexed:
  the cost is the value's length, not the number of prefix rules;
* ``equals-ignore-case``, through a dictionary of lower-cased texts;
* CIDR blocks, through a dictionary keyed by network, probed once per
  prefix length in use;
* ``exists``, through the children reached when the path holds nothing
  (``false``) or anything (``true``);
* numeric ranges, through an interval tree once a branch holds more than a
  few (:mod:`reflow.events.intervals`);
* wildcards, by the literal text before their first ``*`` (or after their
  last), probed like prefixes (suffixes): only wildcards whose literal
  part fits run their regular expression;
* ``anything-but``, by testing each condition of that branch (most values
  pass it, so the answer is as large as the work).

Matching walks the tree from the root, reading each event path at most once
(a per-event cache), and collects the rules whose alternatives end at the
nodes reached. Each node is reached at most once, since a child has exactly
one parent branch and the children of a branch are deduplicated.

Values inside arrays of objects are the exception: EventBridge requires the
fields of one alternative to come from the same element of such an array, so
a node reached through one carries the elements chosen so far, and the walk
goes on from it only along values from those same elements.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from reflow.events.conditions import (
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
    TypedKey,
    Wildcard,
    consistent,
    is_number,
    leaf_entries,
    parse_address,
    typed_key,
)
from reflow.events.intervals import IntervalTree
from reflow.events.model import Event
from reflow.events.patterns import Pattern

__all__ = ["RuleSet"]

_Nodes = dict[int, "_Node"]
"""Child nodes keyed by ``id``: a set that keeps insertion order and removes in O(1)."""

_Wilds = dict[tuple["Wildcard", int], tuple["Wildcard", "_Node"]]
"""Wildcard conditions and the child each leads to, keyed by (condition, id(child))."""


class _Node:
    """A point in the tree: the rules that end here and the branches that go on."""

    __slots__ = ("branches", "refs", "rules")

    def __init__(self) -> None:
        self.rules: dict[str, int] = {}  # rule name -> alternatives of it ending here
        self.branches: dict[Path, _Branch] = {}
        self.refs = 0  # alternatives passing through this node


class _Branch:
    """The ways out of a node along one path, indexed by condition kind."""

    __slots__ = (
        "absent",
        "children",
        "cidr",
        "cidr_lengths",
        "exact",
        "ignore_case",
        "inexact",
        "numeric",
        "numeric_tree",
        "others",
        "prefix",
        "present",
        "prefix_ci",
        "prefix_longest",
        "suffix",
        "suffix_ci",
        "suffix_longest",
        "wild_head",
        "wild_head_longest",
        "wild_tail",
        "wild_tail_longest",
    )

    def __init__(self) -> None:
        self.children: dict[frozenset[Condition], _Node] = {}
        self.exact: dict[TypedKey, _Nodes] = {}
        self.prefix: dict[str, _Nodes] = {}
        self.prefix_ci: dict[str, _Nodes] = {}
        self.suffix: dict[str, _Nodes] = {}
        self.suffix_ci: dict[str, _Nodes] = {}
        self.ignore_case: dict[str, _Nodes] = {}
        # CIDR blocks by (IP version, prefix length, network as an integer);
        # an address probes one key per prefix length in use.
        self.cidr: dict[tuple[int, int, int], _Nodes] = {}
        self.cidr_lengths: dict[tuple[int, int], int] = {}
        # Wildcards by the literal text before their first * (or, when they
        # start with *, after their last *): only those whose head (tail)
        # the value starts (ends) with run their regular expression.
        self.wild_head: dict[str, _Wilds] = {}
        self.wild_tail: dict[str, _Wilds] = {}
        self.wild_head_longest = -1
        self.wild_tail_longest = -1
        self.others: dict[tuple[Condition, int], tuple[Condition, _Node]] = {}
        self.numeric: dict[tuple[Numeric, int], tuple[Numeric, _Node]] = {}
        self.numeric_tree: IntervalTree[_Node] | None = None  # built on first need
        self.absent: _Nodes = {}
        self.present: _Nodes = {}  # exists: true
        self.inexact = 0  # index entries other than exact values (0: the fast path applies)
        # High-water marks: a stale (too long) one after a removal only costs
        # a few extra dictionary probes, never a wrong answer.
        self.prefix_longest = -1
        self.suffix_longest = -1

    def child(self, conditions: frozenset[Condition]) -> _Node:
        """The child reached by ``conditions``, created and indexed on first use."""
        node = self.children.get(conditions)
        if node is None:
            node = self.children[conditions] = _Node()
            for condition in conditions:
                self._index(condition, node)
        return node

    def drop(self, conditions: frozenset[Condition]) -> None:
        """Forget the child reached by ``conditions`` (no alternative uses it any more)."""
        node = self.children.pop(conditions)
        for condition in conditions:
            self._unindex(condition, node)

    def _table(self, condition: Condition) -> tuple[dict[Any, _Nodes], Any] | None:
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

    def _index(self, condition: Condition, node: _Node) -> None:
        if not isinstance(condition, Exact):
            self.inexact += 1
        if isinstance(condition, Exists):
            (self.present if condition.present else self.absent)[id(node)] = node
            return
        if isinstance(condition, Numeric):
            self.numeric[condition, id(node)] = (condition, node)
            self.numeric_tree = None
            return
        if isinstance(condition, Wildcard) and (condition.head or condition.tail):
            if condition.head:
                bucket = self.wild_head.setdefault(condition.head, {})
                self.wild_head_longest = max(self.wild_head_longest, len(condition.head))
            else:
                bucket = self.wild_tail.setdefault(condition.tail, {})
                self.wild_tail_longest = max(self.wild_tail_longest, len(condition.tail))
            bucket[condition, id(node)] = (condition, node)
            return
        table = self._table(condition)
        if table is None:
            self.others[condition, id(node)] = (condition, node)
            return
        mapping, key = table
        mapping.setdefault(key, {})[id(node)] = node
        if isinstance(condition, Cidr):
            length = (condition.network.version, condition.network.prefixlen)
            self.cidr_lengths[length] = self.cidr_lengths.get(length, 0) + 1
        if isinstance(condition, Prefix):
            self.prefix_longest = max(self.prefix_longest, len(condition.text))
        elif isinstance(condition, Suffix):
            self.suffix_longest = max(self.suffix_longest, len(condition.text))

    def _unindex(self, condition: Condition, node: _Node) -> None:
        if not isinstance(condition, Exact):
            self.inexact -= 1
        if isinstance(condition, Exists):
            del (self.present if condition.present else self.absent)[id(node)]
            return
        if isinstance(condition, Numeric):
            del self.numeric[condition, id(node)]
            self.numeric_tree = None
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
        if isinstance(condition, Cidr):
            length = (condition.network.version, condition.network.prefixlen)
            self.cidr_lengths[length] -= 1
            if not self.cidr_lengths[length]:
                del self.cidr_lengths[length]

    def step(self, values: list[Any]) -> Iterator[_Node]:
        """The children that the leaf ``values`` at this branch's path lead to."""
        if not values:
            return iter(self.absent.values())
        reached: dict[int, _Node] = dict(self.present) if self.present else {}
        exact, others = self.exact, self.others.values()
        for value in values:
            if exact:
                hit = exact.get(("s", value) if type(value) is str else typed_key(value))
                if hit:
                    reached.update(hit)
            if type(value) is str:
                self._step_text(value, reached)
            elif self.numeric and is_number(value):
                self._step_number(value, reached)
            for condition, node in others:
                if id(node) not in reached and condition.test(value):
                    reached[id(node)] = node
        return iter(reached.values())

    def _step_number(self, value: float, reached: dict[int, _Node]) -> None:
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

    def _step_text(self, value: str, reached: dict[int, _Node]) -> None:
        if self.prefix:
            _probe_prefixes(self.prefix, value, self.prefix_longest, reached)
        if self.suffix:
            _probe_suffixes(self.suffix, value, self.suffix_longest, reached)
        if self.prefix_ci or self.suffix_ci or self.ignore_case:
            lowered = value.lower()
            if self.prefix_ci:
                _probe_prefixes(self.prefix_ci, lowered, self.prefix_longest, reached)
            if self.suffix_ci:
                _probe_suffixes(self.suffix_ci, lowered, self.suffix_longest, reached)
            hit = self.ignore_case.get(lowered)
            if hit:
                reached.update(hit)
        if self.cidr:
            self._step_address(value, reached)
        if self.wild_head:
            for end in range(min(len(value), self.wild_head_longest) + 1):
                bucket = self.wild_head.get(value[:end])
                if bucket:
                    _test_wilds(bucket, value, reached)
        if self.wild_tail:
            size = len(value)
            for length in range(min(size, self.wild_tail_longest) + 1):
                bucket = self.wild_tail.get(value[size - length :])
                if bucket:
                    _test_wilds(bucket, value, reached)

    def _step_address(self, value: str, reached: dict[int, _Node]) -> None:
        address = parse_address(value)
        if address is None:
            return
        number, bits = int(address), address.max_prefixlen
        for version, length in self.cidr_lengths:
            if version == address.version:
                network = number >> (bits - length) << (bits - length)
                hit = self.cidr.get((version, length, network))
                if hit:
                    reached.update(hit)

    def __bool__(self) -> bool:
        return bool(self.children)


# Up to this many prefixes (suffixes) in a branch, testing each is cheaper
# than probing every prefix of the value; past it, probing wins and its cost
# stays the value's length however many rules there are.
_FEW = 4

# Up to this many numeric ranges in a branch, testing each beats the
# interval tree's bookkeeping.
_FEW_RANGES = 8


def _probe_prefixes(
    table: dict[str, _Nodes], value: str, longest: int, reached: dict[int, _Node]
) -> None:
    if len(table) <= _FEW:
        for text, nodes in table.items():
            if value.startswith(text):
                reached.update(nodes)
        return
    for end in range(min(len(value), longest) + 1):
        hit = table.get(value[:end])
        if hit:
            reached.update(hit)


def _probe_suffixes(
    table: dict[str, _Nodes], value: str, longest: int, reached: dict[int, _Node]
) -> None:
    if len(table) <= _FEW:
        for text, nodes in table.items():
            if value.endswith(text):
                reached.update(nodes)
        return
    size = len(value)
    for length in range(min(size, longest) + 1):
        hit = table.get(value[size - length :])
        if hit:
            reached.update(hit)


def _test_wilds(bucket: _Wilds, value: str, reached: dict[int, _Node]) -> None:
    for condition, node in bucket.values():
        if id(node) not in reached and condition.test(value):
            reached[id(node)] = node


def _step_tied(
    branch: _Branch,
    values: list[Any],
    members: list[Membership],
    held: Membership,
    into: list[tuple[_Node, Membership]],
) -> None:
    """Step value by value, keeping only children whose value fits the elements held."""
    for value, membership in zip(values, members, strict=True):
        if not consistent(held, membership):
            continue
        merged = tuple(sorted({**dict(held), **dict(membership)}.items()))
        into.extend((child, merged) for child in branch.step([value]))


_MAX_SPLIT = 64


def _split_exact(alternative: tuple[Field, ...]) -> list[tuple[Field, ...]]:
    """The alternative with each multi-value exact field split into one value per copy.

    ``"source": ["a", "b"]`` then shares the node of every rule naming ``"a"``
    alone instead of growing a subtree of its own; matching stays the same,
    since a field holds when any of its values does. Splits that would make
    more than ``_MAX_SPLIT`` copies are not made.
    """
    options: list[list[Field]] = []
    copies = 1
    for item in alternative:
        if len(item.conditions) > 1 and all(isinstance(c, Exact) for c in item.conditions):
            options.append([Field(item.path, frozenset({c})) for c in item.conditions])
            copies *= len(item.conditions)
        else:
            options.append([item])
    if copies == 1 or copies > _MAX_SPLIT:
        return [alternative]
    return [tuple(choice) for choice in itertools.product(*options)]


_Trail = list[tuple[_Node, Path, frozenset[Condition], _Node]]


class RuleSet:
    """Named EventBridge patterns, matched together.

    ``add(name, pattern)`` registers (or replaces) a rule, ``remove(name)``
    drops it, and ``match(event)`` returns the names of the rules whose
    pattern matches, in the order they were added. The answer is always the
    same as testing each rule's :class:`Pattern` alone.
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._patterns: dict[str, Pattern] = {}
        self._trails: dict[str, list[_Trail]] = {}
        self._order: dict[str, int] = {}
        self._added = 0

    def add(self, name: str, pattern: Pattern | Mapping[str, Any] | str) -> Pattern:
        """Register ``pattern`` under ``name``, replacing any rule of that name.

        Returns the compiled pattern; an invalid one raises
        :class:`~reflow.errors.InvalidPatternError` and changes nothing.
        """
        compiled = pattern if isinstance(pattern, Pattern) else Pattern(pattern)
        if name in self._patterns:
            self.remove(name)
        self._patterns[name] = compiled
        self._order[name] = self._added
        self._added += 1
        self._trails[name] = [
            self._insert(name, split)
            for alternative in compiled.alternatives
            for split in _split_exact(alternative)
        ]
        return compiled

    def _insert(self, name: str, alternative: tuple[Field, ...]) -> _Trail:
        trail: _Trail = []
        node = self._root
        node.refs += 1
        for item in alternative:
            branch = node.branches.get(item.path)
            if branch is None:
                branch = node.branches[item.path] = _Branch()
            child = branch.child(item.conditions)
            child.refs += 1
            trail.append((node, item.path, item.conditions, child))
            node = child
        node.rules[name] = node.rules.get(name, 0) + 1
        return trail

    def remove(self, name: str) -> None:
        """Drop the rule ``name``; a name that is not registered raises ``KeyError``."""
        if name not in self._patterns:
            raise KeyError(f"no rule named {name!r}")
        del self._patterns[name], self._order[name]
        for trail in self._trails.pop(name):
            end = trail[-1][3] if trail else self._root
            end.rules[name] -= 1
            if not end.rules[name]:
                del end.rules[name]
            self._root.refs -= 1
            for parent, path, conditions, child in reversed(trail):
                child.refs -= 1
                if child.refs == 0:
                    branch = parent.branches[path]
                    branch.drop(conditions)
                    if not branch:
                        del parent.branches[path]

    def match(self, event: Mapping[str, Any] | Event) -> list[str]:
        """The names of the rules that ``event`` matches, in the order they were added.

        ``event`` is an EventBridge event (a dict) or an :class:`Event`,
        matched through its EventBridge view.
        """
        if isinstance(event, Event):
            event = event.to_eventbridge()
        found: set[str] = set()
        entries: dict[Path, tuple[list[Any], list[Membership] | None]] = {}
        # Nodes reached with no array constraint; nodes reached through values
        # inside arrays of objects wait, with the array elements they are tied
        # to, in ``tied`` (rare: most events have no arrays of objects).
        pending = [self._root]
        tied: list[tuple[_Node, Membership]] = []
        pop, push = pending.pop, pending.extend
        while pending:
            node = pop()
            if node.rules:
                found.update(node.rules)
            for path, branch in node.branches.items():
                entry = entries.get(path)
                if entry is None:
                    entry = entries[path] = leaf_entries(event, path)
                values, members = entry
                if members is not None:
                    _step_tied(branch, values, members, (), tied)
                    continue
                if branch.inexact == 0:
                    # Only exact values here: one probe per value, and with a
                    # single value the hit list cannot repeat a node.
                    if not values:
                        continue
                    if len(values) == 1:
                        value = values[0]
                        hit = branch.exact.get(
                            ("s", value) if type(value) is str else typed_key(value)
                        )
                        if hit:
                            push(hit.values())
                        continue
                push(branch.step(values))
        if tied:
            self._match_tied(event, tied, entries, found)
        if len(found) < 2:
            return list(found)
        order = self._order
        return sorted(found, key=order.__getitem__)

    @staticmethod
    def _match_tied(
        event: Mapping[str, Any],
        tied: list[tuple[_Node, Membership]],
        entries: dict[Path, tuple[list[Any], list[Membership] | None]],
        found: set[str],
    ) -> None:
        # The same walk, carrying the array elements already chosen, so that
        # no two fields come from different elements of one array.
        seen: set[tuple[int, Membership]] = set()
        while tied:
            node, held = tied.pop()
            if (id(node), held) in seen:
                continue
            seen.add((id(node), held))
            if node.rules:
                found.update(node.rules)
            for path, branch in node.branches.items():
                entry = entries.get(path)
                if entry is None:
                    entry = entries[path] = leaf_entries(event, path)
                values, members = entry
                if members is None:
                    tied.extend((child, held) for child in branch.step(values))
                else:
                    _step_tied(branch, values, members, held, tied)

    def pattern(self, name: str) -> Pattern:
        """The compiled pattern of rule ``name`` (``KeyError`` if there is none)."""
        return self._patterns[name]

    def names(self) -> list[str]:
        """Every rule's name, in the order they were added."""
        return list(self._patterns)

    def __contains__(self, name: object) -> bool:
        return name in self._patterns

    def __len__(self) -> int:
        return len(self._patterns)

    def __repr__(self) -> str:
        return f"RuleSet({len(self)} rules)"
