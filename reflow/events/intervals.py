"""An interval tree for ``numeric`` conditions: which ranges contain a number.

A branch of the rule tree with many numeric conditions on one path (prices,
sizes, scores) would otherwise test every one of them for every event. A
centred interval tree answers "which ranges contain v" in O(log n + k) for k
answers: each tree node holds the ranges that contain its centre, sorted by
lower bound and by upper bound, so a query reads only the ranges that match
and then descends to one side.

The tree is static; :class:`~reflow.events.ruleset.RuleSet` rebuilds it
lazily after rules change (building is O(n log n)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from reflow.events.conditions import Numeric

__all__ = ["IntervalTree"]

T = TypeVar("T")

_Entry = tuple[float, bool, float, bool, T]  # low, low_inclusive, high, high_inclusive, item


def _bounds(condition: Numeric) -> tuple[float, bool, float, bool]:
    # A missing bound is an infinite, inclusive one: no number is beyond it.
    if condition.low is None:
        low, low_inclusive = -math.inf, True
    else:
        low, low_inclusive = condition.low, condition.low_inclusive
    if condition.high is None:
        high, high_inclusive = math.inf, True
    else:
        high, high_inclusive = condition.high, condition.high_inclusive
    return low, low_inclusive, high, high_inclusive


def _above_low(value: float, low: float, inclusive: bool) -> bool:
    return value > low or (inclusive and value == low)


def _below_high(value: float, high: float, inclusive: bool) -> bool:
    return value < high or (inclusive and value == high)


@dataclass
class _TreeNode(Generic[T]):
    centre: float
    by_low: list[_Entry[T]]  # ranges containing the centre, lowest bound first
    by_high: list[_Entry[T]]  # the same ranges, highest bound first
    left: _TreeNode[T] | None
    right: _TreeNode[T] | None
    linear: list[_Entry[T]] | None = None  # a degenerate set, tested range by range


class IntervalTree(Generic[T]):
    """The items whose numeric range contains a value."""

    def __init__(self, entries: Sequence[tuple[Numeric, T]]) -> None:
        self._root = _build([(*_bounds(condition), item) for condition, item in entries])

    def containing(self, value: float) -> list[T]:
        """Every item whose range contains ``value``."""
        found: list[T] = []
        node = self._root
        while node is not None:
            if node.linear is not None:
                found.extend(
                    entry[4]
                    for entry in node.linear
                    if _above_low(value, entry[0], entry[1])
                    and _below_high(value, entry[2], entry[3])
                )
                break
            if value < node.centre:
                # Every range here reaches up to the centre, so only its low
                # bound can fail; they are sorted, so stop at the first failure.
                for low, low_inclusive, _, _, item in node.by_low:
                    if not _above_low(value, low, low_inclusive):
                        break
                    found.append(item)
                node = node.left
            elif value > node.centre:
                for _, _, high, high_inclusive, item in node.by_high:
                    if not _below_high(value, high, high_inclusive):
                        break
                    found.append(item)
                node = node.right
            else:
                found.extend(entry[4] for entry in node.by_low)
                break
        return found


def _build(entries: list[_Entry[T]]) -> _TreeNode[T] | None:
    if not entries:
        return None
    points = sorted({p for low, _, high, _, _ in entries for p in (low, high) if math.isfinite(p)})
    centre = points[len(points) // 2] if points else 0.0
    here: list[_Entry[T]] = []
    left: list[_Entry[T]] = []
    right: list[_Entry[T]] = []
    for entry in entries:
        low, low_inclusive, high, high_inclusive, _ = entry
        if not _below_high(centre, high, high_inclusive):
            left.append(entry)  # wholly below the centre
        elif not _above_low(centre, low, low_inclusive):
            right.append(entry)  # wholly above the centre
        else:
            here.append(entry)
    if not here and (not left or not right):
        # Every range lies on one side of the only boundary point (all "> c",
        # say): splitting again would not make progress, so test them all.
        return _TreeNode(centre, [], [], None, None, linear=entries)
    return _TreeNode(centre, _sorted_low(here), _sorted_high(here), _build(left), _build(right))


def _sorted_low(entries: list[_Entry[T]]) -> list[_Entry[T]]:
    # Inclusive first among equal bounds: a value equal to the bound passes
    # those and fails the exclusive ones that follow.
    return sorted(entries, key=lambda e: (e[0], not e[1]))


def _sorted_high(entries: list[_Entry[T]]) -> list[_Entry[T]]:
    return sorted(entries, key=lambda e: (-e[2], not e[3]))
