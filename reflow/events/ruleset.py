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
  text, probed with the value's prefix of each length some key has: the
  cost is the number of distinct lengths, not the number of prefix rules;
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
* ``anything-but`` over values, as "every such condition except those
  that exclude this value": one dictionary of exclusions per branch, so no
  condition is tested (the answer, most of them, is the work); with a
  nested ``prefix``, ``suffix``, ``equals-ignore-case`` or ``wildcard`` it
  is tested condition by condition.

A branch also remembers, per scalar value, the children it led to
(``Branch.step_one``), as a lazily built automaton remembers its
transitions: enumerated fields (states, languages, sections, flags) then
cost one dictionary probe per branch however many conditions the branch
holds. The memory is bounded and emptied whenever the branch changes.

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
from collections.abc import Mapping
from typing import Any

from reflow.events.branches import Branch, Node
from reflow.events.conditions import (
    Condition,
    Exact,
    Field,
    Membership,
    Path,
    consistent,
    leaf_entries,
    typed_key,
)
from reflow.events.model import Event
from reflow.events.patterns import Pattern

__all__ = ["RuleSet"]


def _step_tied(
    branch: Branch,
    values: list[Any],
    members: list[Membership],
    held: Membership,
    into: list[tuple[Node, Membership]],
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


_Trail = list[tuple[Node, Path, frozenset[Condition], Node]]

_Entry = tuple[list[Any], list[Membership] | None]


class RuleSet:
    """Named EventBridge patterns, matched together.

    ``add(name, pattern)`` registers (or replaces) a rule, ``remove(name)``
    drops it, and ``match(event)`` returns the names of the rules whose
    pattern matches, in the order they were added. The answer is always the
    same as testing each rule's :class:`Pattern` alone.
    """

    def __init__(self) -> None:
        self._root = Node()
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
                branch = node.branches[item.path] = Branch()
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
        entries: dict[Path, _Entry] = {}
        # Nodes reached with no array constraint; nodes reached through values
        # inside arrays of objects wait, with the array elements they are tied
        # to, in ``tied`` (rare: most events have no arrays of objects).
        pending = [self._root]
        tied: list[tuple[Node, Membership]] = []
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
                elif len(values) == 1:
                    # One scalar and conditions other than exact values: the
                    # branch remembers where each value it met leads.
                    push(branch.step_one(values[0]))
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
        tied: list[tuple[Node, Membership]],
        entries: dict[Path, _Entry],
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
