"""Many named patterns compiled into one matcher whose cost does not grow with the rule count.

A loop over patterns costs every rule on every event. :class:`RuleSet`
instead works in two steps, the way publish/subscribe matchers do
(predicate indexing, then clustering by an access predicate):

1. **Each path is examined once per event, for all rules together.** Every
   distinct condition any rule writes on a path is one bit of that path's
   :class:`~reflow.events.paths.PathIndex`, which turns the values an event
   holds there into a *class*: the mask of conditions they satisfy,
   computed from indexes (a dictionary probe for exact values, probes per
   key length for prefixes, suffixes and wildcard heads, per prefix length
   for CIDR blocks, a binary search among range bounds for numbers ...),
   so its cost follows the event, not the number of rules.

2. **Rules are filed by an access value.** Every alternative of every rule
   (``$or`` already expanded by the compiler) that has an exact-valued
   field is filed under one of them, its *access field*: the exact field
   whose path has the most distinct values among all rules (``source``, in
   a bus of many producers). An event then reaches only the
   :class:`~reflow.events.buckets.Bucket` s of the values it holds there,
   by one dictionary probe per value; alternatives with no exact field
   share one bucket that every event reaches. Inside a bucket each
   alternative is a bit, and each of the paths its other fields name
   answers, per class, which bits it lets through (remembered, since
   classes recur even where values never do), so the bucket's verdict is
   one ``&`` per path: the cost no longer depends on how many rules share
   the bucket. Slots that concern no surviving alternative are skipped,
   and a bucket stops as soon as none survives.

A bucket that events keep reaching is compiled into straight-line code
(:mod:`reflow.events.compiled`) that takes the same steps with less
bookkeeping, and remembers per slot what recurring values let through.

A field lists several conditions and holds when any of them holds for any
value at its path, so a class (the OR over the values) is all a field
needs, with one exception: EventBridge requires the fields of one
alternative to come from the same element of an array of objects. Reading
a path tells whether its values sit in such arrays; the (rare) alternatives
that pass on such paths are then checked element by element, as
:class:`~reflow.events.patterns.Pattern` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from reflow.events import compiled
from reflow.events.buckets import Bucket, Owner
from reflow.events.compiled import leaf_class, one_element_each
from reflow.events.conditions import (
    Exact,
    Field,
    Path,
    leaf_entries,
    typed_key,
)
from reflow.events.model import Event
from reflow.events.paths import PathIndex, index_key
from reflow.events.patterns import Pattern

__all__ = ["RuleSet"]

_MISSING = compiled.MISSING  # the path leads nowhere
_SLOW = compiled.SLOW  # something other than an object on the way: read it with leaf_entries
_SCALARS = frozenset({str, int, float, bool, type(None)})
_ORDER = itemgetter(0)  # an owner's position in adding order

_Entry = compiled.Entry
_Fields = list[tuple[Field, list[int]]]
_Placement = tuple[Path | None, Any, Bucket, int, _Fields]


class RuleSet:
    """Named EventBridge patterns, matched together.

    ``add(name, pattern)`` registers (or replaces) a rule, ``remove(name)``
    drops it, and ``match(event)`` returns the names of the rules whose
    pattern matches, in the order they were added. The answer is always the
    same as testing each rule's :class:`Pattern` alone.
    """

    def __init__(self) -> None:
        self._patterns: dict[str, Pattern] = {}
        self._order: dict[str, int] = {}
        self._added = 0
        self._placements: dict[str, list[_Placement]] = {}
        self._paths: dict[Path, PathIndex] = {}
        # access path -> access value -> bucket; alternatives with no exact
        # field wait in ``_everywhere``, which every event reaches.
        self._access: dict[Path, dict[Any, Bucket]] = {}
        self._everywhere = Bucket()
        # path -> exact value -> how many fields of the rules name it: the
        # paths with the most distinct values make the most selective access.
        self._values: dict[Path, dict[Any, int]] = {}

    # --- registration ----------------------------------------------------------------

    def add(self, name: str, pattern: Pattern | Mapping[str, Any] | str) -> Pattern:
        """Register ``pattern`` under ``name``, replacing any rule of that name.

        Returns the compiled pattern; an invalid one raises
        :class:`~reflow.errors.InvalidPatternError` and changes nothing.
        """
        compiled = pattern if isinstance(pattern, Pattern) else Pattern(pattern)
        if name in self._patterns:
            self.remove(name)
        order = self._added
        self._added += 1
        self._patterns[name] = compiled
        self._order[name] = order
        self._count_values(compiled, 1)
        placements: list[_Placement] = []
        for alternative in compiled.alternatives:
            owner: Owner = (order, name, alternative)
            access = self._access_field(alternative)
            if access is None:
                placements.append(self._place(None, None, alternative, owner))
                continue
            rest = alternative[:access] + alternative[access + 1 :]
            for condition in alternative[access].conditions:
                assert isinstance(condition, Exact)
                key = index_key(condition.key)
                placements.append(self._place(alternative[access].path, key, rest, owner))
        self._placements[name] = placements
        return compiled

    def _access_field(self, alternative: tuple[Field, ...]) -> int | None:
        best, most = None, -1
        for position, item in enumerate(alternative):
            if all(type(c) is Exact for c in item.conditions):
                distinct = len(self._values.get(item.path, ()))
                if distinct > most:
                    best, most = position, distinct
        return best

    def _place(
        self, path: Path | None, key: Any, rest: tuple[Field, ...], owner: Owner
    ) -> _Placement:
        if path is None:
            bucket = self._everywhere
        else:
            bucket = self._access.setdefault(path, {}).setdefault(key, Bucket())
        fields: _Fields = []
        for item in rest:
            index = self._paths.get(item.path)
            if index is None:
                index = self._paths[item.path] = PathIndex(item.path)
            fields.append((item, [index.add(condition) for condition in item.conditions]))
        bit = bucket.add(owner, fields, self._paths)
        return path, key, bucket, bit, fields

    def _count_values(self, pattern: Pattern, change: int) -> None:
        for alternative in pattern.alternatives:
            for item in alternative:
                for condition in item.conditions:
                    if type(condition) is Exact:
                        counts = self._values.setdefault(item.path, {})
                        key = index_key(condition.key)
                        left = counts.get(key, 0) + change
                        if left:
                            counts[key] = left
                        else:
                            del counts[key]
                            if not counts:
                                del self._values[item.path]

    def remove(self, name: str) -> None:
        """Drop the rule ``name``; a name that is not registered raises ``KeyError``."""
        if name not in self._patterns:
            raise KeyError(f"no rule named {name!r}")
        self._count_values(self._patterns.pop(name), -1)
        del self._order[name]
        for path, key, bucket, bit, fields in self._placements.pop(name):
            bucket.discard(bit, fields)
            for item, _ in fields:
                index = self._paths[item.path]
                for condition in item.conditions:
                    index.discard(condition)
                if not index:
                    del self._paths[item.path]
            if path is not None and not bucket:
                table = self._access[path]
                del table[key]
                if not table:
                    del self._access[path]

    # --- matching --------------------------------------------------------------------

    def match(self, event: Mapping[str, Any] | Event) -> list[str]:
        """The names of the rules that ``event`` matches, in the order they were added.

        ``event`` is an EventBridge event (a dict) or an :class:`Event`,
        matched through its EventBridge view.
        """
        if isinstance(event, Event):
            event = event.to_eventbridge()
        found: list[Owner] = []
        classes: dict[PathIndex, int] = {}
        tied: dict[Path, _Entry] = {}
        for path, table in self._access.items():
            if len(path) == 1 and type(event) is dict:
                # A top-level field holding one scalar (source, detail-type):
                # one probe, without building the list of values.
                value = event.get(path[0], _MISSING)
                if value is _MISSING:
                    continue
                if type(value) in _SCALARS:
                    bucket = table.get(value if type(value) is str else typed_key(value))
                    if bucket is not None:
                        self._run(bucket, event, classes, tied, found)
                    continue
            values, members = leaf_entries(event, path)
            if members is not None:
                tied[path] = (values, members)
            for value in values:
                bucket = table.get(value if type(value) is str else typed_key(value))
                if bucket is not None:
                    self._run(bucket, event, classes, tied, found)
        if self._everywhere.everyone:
            self._run(self._everywhere, event, classes, tied, found)
        if len(found) < 2:
            return [owner[1] for owner in found]
        # In adding order, each rule once (several of its alternatives may match).
        found.sort(key=_ORDER)
        names = [found[0][1]]
        for _, name, _ in found:
            if name != names[-1]:
                names.append(name)
        return names

    @staticmethod
    def _run(
        bucket: Bucket,
        event: Mapping[str, Any],
        classes: dict[PathIndex, int],
        tied: dict[Path, _Entry],
        found: list[Owner],
    ) -> None:
        runner = bucket.runner
        if runner is not None:
            runner(event, classes, tied, found)
            return
        bucket.runs += 1
        if bucket.runs > compiled.COMPILE_AFTER:
            bucket.compile()(event, classes, tied, found)
            return
        # The plan walked slot by slot: what the generated code does, written once.
        alive = everyone = bucket.everyone
        for users, path, relevant, memo, slot in bucket.plan:
            if not alive & users:
                continue
            index = slot.index
            found_class = classes.get(index)
            if found_class is None:
                # Objects all the way down: read inline; anything else through leaf_entries.
                node: Any = event
                for step in path:
                    if type(node) is not dict:
                        node = _SLOW if node is not _MISSING else _MISSING
                        break
                    node = node.get(step, _MISSING)
                if type(node) is str and index.simple:
                    found_class = index.exact.get(node, 0) | index.present
                    if index.but_all:
                        found_class |= index.but_all & ~index.but_excluded.get(node, 0)
                else:
                    found_class = leaf_class(index, node, event, path, tied)
                classes[index] = found_class
            seen = found_class & relevant
            kept = memo.get(seen)
            if kept is None:
                kept = slot.keep(seen, everyone)
            alive &= kept
            if not alive:
                return
        owners, append = bucket.owners, found.append
        while alive:
            bit = alive & -alive
            alive ^= bit
            owner = owners[bit.bit_length()]
            if tied and not one_element_each(owner[2], tied):
                continue
            append(owner)

    # --- accessors -------------------------------------------------------------------

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
