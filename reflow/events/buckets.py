"""The alternatives that share an access value, matched together as bits of one integer.

A :class:`Bucket` holds the alternatives (of any rules) that the rule index
(:mod:`reflow.events.ruleset`) filed under one access value, such as
``source = "com.example.cms"``. Each alternative is one bit. Its remaining
fields are grouped by path into :class:`Slot` s; a slot knows which
alternatives have a field there (``users``) and, per condition bit of the
path's :class:`~reflow.events.paths.PathIndex`, which of those fields list
that condition. Given the class of the event's values at the path (the
conditions they satisfy), a slot answers the alternatives it lets through:
the ones with no field there, and the ones whose field lists a satisfied
condition. That answer is remembered per class, so a bucket's whole verdict
on an event is one ``&`` per slot, whatever the number of alternatives.

An alternative naming the same path twice (``$or`` can do that) has one
field in each of two slots for the path: the n-th field on a path goes to
the slot numbered n.
"""

from __future__ import annotations

from typing import Any

from reflow.events.compiled import Runner, compile_bucket
from reflow.events.conditions import Exists, Field, Numeric, Path
from reflow.events.paths import PathIndex

__all__ = ["Bucket", "Owner", "Slot"]

Owner = tuple[int, str, tuple[Field, ...]]
"""Who a bit stands for: the rule's position in adding order, its name, its full alternative."""


class Slot:
    """One path of a bucket: which alternatives a class of values there lets through."""

    __slots__ = (
        "conditions",
        "index",
        "memo",
        "path",
        "rank",
        "relevant",
        "users",
        "values",
        "values_on",
        "values_since",
    )

    def __init__(self, path: Path, index: PathIndex) -> None:
        self.path = path
        self.index = index
        self.users = 0  # the alternatives with a field in this slot
        self.conditions: dict[int, int] = {}  # condition bit -> alternatives listing it
        self.memo: dict[int, int] = {}  # class (relevant bits only) -> alternatives let through
        self.relevant = 0  # the condition bits this slot's fields list
        self.rank = 0  # cheap slots are evaluated first (see Bucket.plan)
        # For the generated code (reflow.events.compiled): a value seen at the
        # path (a scalar, keyed as PathIndex keys its memory, or "missing")
        # -> the alternatives it let through, so a recurring value (a state,
        # a language) costs one probe; off on a path whose values do not recur.
        self.values: dict[Any, int] = {}
        self.values_on = True
        self.values_since = 0  # the bucket's compiled runs when ``values`` was last emptied

    def remember(self, key: Any, kept: int, runs: int) -> None:
        """Remember that the value keyed ``key`` lets ``kept`` through (``runs``: bucket runs)."""
        if not self.values_on:
            return
        values = self.values
        if len(values) >= _VALUES_SIZE:
            # Filled in fewer than four runs per value: the values here seldom
            # recur (ids, addresses, fresh numbers); stop until the bucket changes.
            if runs - self.values_since < 4 * _VALUES_SIZE:
                self.values_on = False
                values.clear()
                return
            values.clear()
            self.values_since = runs
        values[key] = kept

    def number_table(self, everyone: int) -> tuple[list[float], list[int]] | None:
        """What a number lets through, per place among this slot's own range bounds.

        ``None`` unless every condition the slot lists is a numeric range
        or ``exists`` (and one is a range). Otherwise the bounds, sorted,
        and the alternatives let through by a number strictly below the
        first bound (place 0), equal to bound ``i`` (place ``2 i + 1``),
        strictly between bounds ``i`` and ``i + 1`` (place ``2 i + 2``), and
        above the last. A range holds for a whole gap between two bounds
        when it reaches both ends, so the answer is exact for any number in
        the gap, however close its ends lie.
        """
        ranges: list[tuple[int, Numeric]] = []
        present = 0
        for condition, bit in self.index.bits.items():
            if not bit & self.relevant:
                continue
            if type(condition) is Numeric:
                ranges.append((bit, condition))
            elif type(condition) is Exists:
                present |= bit if condition.present else 0
            else:
                return None
        if not ranges:
            return None
        points = sorted({b for _, c in ranges for b in (c.low, c.high) if b is not None})
        kept: list[int] = []
        for place in range(len(points) + 1):
            below = points[place - 1] if place else None
            above = points[place] if place < len(points) else None
            seen = present
            for bit, condition in ranges:
                low, high = condition.low, condition.high
                reaches_down = low is None or (below is not None and low <= below)
                if reaches_down and (high is None or (above is not None and high >= above)):
                    seen |= bit
            kept.append(self.keep(seen, everyone))
            if above is not None:
                seen = present
                for bit, condition in ranges:
                    if condition.test(above):
                        seen |= bit
                kept.append(self.keep(seen, everyone))
        return points, kept

    def keep(self, found: int, everyone: int) -> int:
        """The alternatives let through when the values at the path are of class ``found``.

        ``found`` holds only the slot's relevant bits: the conditions of other
        rules on the path do not change the answer, and leaving them out
        keeps the memory to the few classes this slot can tell apart.
        """
        kept = everyone & ~self.users
        conditions = self.conditions
        if found.bit_count() < len(conditions):
            # Fewer conditions hold than the slot lists (a number inside a few
            # of many ranges): visit those.
            holding = found
            while holding:
                bit = holding & -holding
                holding ^= bit
                kept |= conditions.get(bit, 0)
        else:
            for bit, alternatives in conditions.items():
                if found & bit:
                    kept |= alternatives
        memo = self.memo
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[found] = kept
        return kept


class Bucket:
    """Alternatives filed under one access value, one bit each."""

    __slots__ = (
        "count",
        "everyone",
        "free",
        "owners",
        "plan",
        "runner",
        "runs",
        "size",
        "slots",
        "tally",
    )

    def __init__(self) -> None:
        self.everyone = 0  # every bit in use
        # Who each bit stands for, at the bit's length (bit n at n + 1).
        self.owners: list[Owner] = [_FREE]
        self.count = 0  # bits in use
        self.free: list[int] = []
        self.size = 0
        self.slots: dict[tuple[Path, int], Slot] = {}
        # The slots in evaluation order, each with what matching reads of it
        # (users, path, relevant bits, memory) laid out in a tuple.
        self.plan: tuple[tuple[int, Path, int, dict[int, int], Slot], ...] = ()
        # The plan as generated code (reflow.events.compiled), once the bucket
        # has been run often enough since its last change; ``runs`` counts.
        self.runner: Runner | None = None
        self.runs = 0
        self.tally = [0]  # runs of the generated code (it counts them itself)

    def add(self, owner: Owner, fields: list[tuple[Field, list[int]]], paths: PathIndexes) -> int:
        """File an alternative's ``fields`` (each with its condition bits); returns its bit."""
        if self.free:
            bit = 1 << self.free.pop()
        else:
            bit = 1 << self.size
            self.size += 1
            self.owners.append(_FREE)
        self.owners[bit.bit_length()] = owner
        self.count += 1
        self.everyone |= bit
        seen: dict[Path, int] = {}
        for item, bits in fields:
            number = seen[item.path] = seen.get(item.path, -1) + 1
            slot = self.slots.get((item.path, number))
            if slot is None:
                slot = self.slots[item.path, number] = Slot(item.path, paths[item.path])
            slot.users |= bit
            for condition_bit in bits:
                slot.conditions[condition_bit] = slot.conditions.get(condition_bit, 0) | bit
                slot.relevant |= condition_bit
        self._changed()
        return bit

    def discard(self, bit: int, fields: list[tuple[Field, list[int]]]) -> None:
        """Take the alternative at ``bit`` (filed with ``fields``) out again."""
        self.owners[bit.bit_length()] = _FREE
        self.count -= 1
        self.everyone &= ~bit
        self.free.append(bit.bit_length() - 1)
        seen: dict[Path, int] = {}
        for item, bits in fields:
            number = seen[item.path] = seen.get(item.path, -1) + 1
            slot = self.slots[item.path, number]
            slot.users &= ~bit
            for condition_bit in bits:
                left = slot.conditions[condition_bit] & ~bit
                if left:
                    slot.conditions[condition_bit] = left
                else:
                    del slot.conditions[condition_bit]
                    slot.relevant &= ~condition_bit
            if not slot.users:
                del self.slots[item.path, number]
        self._changed()

    def _changed(self) -> None:
        # Every remembered answer mentions ``everyone``: forget them all.
        for slot in self.slots.values():
            slot.memo = {}
            slot.values, slot.values_on, slot.values_since = {}, True, 0
            slot.rank = 0 if slot.index.simple else 1
        # Cheap slots first (a probe or two), and among them the ones that
        # concern the most alternatives: they are the likeliest to leave
        # none standing, which ends the bucket's evaluation early.
        ordered = sorted(self.slots.values(), key=lambda slot: (slot.rank, -slot.users.bit_count()))
        self.plan = tuple((s.users, s.path, s.relevant, s.memo, s) for s in ordered)
        self.runner, self.runs, self.tally = None, 0, [0]

    def compile(self) -> Runner:
        """The bucket's plan as generated code (kept until the bucket changes)."""
        self.runner = compile_bucket(self.everyone, self.plan, self.owners, self.tally)
        return self.runner

    def __bool__(self) -> bool:
        return self.count > 0


PathIndexes = dict[Path, PathIndex]


_FREE: Owner = (-1, "", ())  # the owner of a bit no alternative uses

# How many classes a slot remembers before starting afresh.
_MEMO_SIZE = 4096

# How many values a slot remembers (as PathIndex: the enumerations events are made of).
_VALUES_SIZE = 64
