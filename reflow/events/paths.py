"""Every condition the rules put on one event path, and which of them an event satisfies.

:class:`PathIndex` gives each distinct condition written on its path (by
any rule) one bit, and answers, for the leaf values an event holds at the
path, the *class* of those values: the integer whose set bits are the
conditions they satisfy. Two events whose values fall in the same class
are indistinguishable to every rule on that path, which is what lets the
rule index (:mod:`reflow.events.ruleset`) remember, per class, which rules
a field lets through: classes recur even when values never do (a fresh
word count falls between the same two range bounds as the last one did).

A class is computed from indexes, one per kind of condition, so that its
cost follows the number of distinct keys probed, not the number of
conditions:

* exact values: one dictionary probe;
* ``anything-but`` over values: every such condition except those whose
  exclusions hold the value (one probe, one mask operation);
* prefixes and suffixes (plain or case-folded): one probe per distinct key
  length in use; ``equals-ignore-case``: one probe of the lower-cased text;
* CIDR blocks: one probe per (IP version, prefix length) in use;
* wildcards: their literal head (or tail) is indexed as a prefix (suffix)
  of its own, so only the wildcards whose literal part fits run their
  regular expression;
* ``anything-but`` with nested matchers: its matchers are indexed as
  conditions of their own, and it holds when none of them matched;
* numeric ranges: every range bound splits the number line into slots (a
  bound itself is a slot); a number is placed by binary search, and each
  slot's conditions are found once (through an interval tree) and kept;
* ``exists``: by whether the path holds any value at all.

Values that recur (states, languages, sections) are remembered with their
class, in a bounded memory that switches itself off on a path whose values
do not recur (ids, timestamps), and that is emptied when the path's
conditions change.
"""

from __future__ import annotations

import re
from bisect import bisect_left
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

__all__ = ["PathIndex", "index_key", "value_key"]


def index_key(key: TypedKey) -> Any:
    """The dictionary key for a typed key: a string stands for itself, other values keep the tag."""
    return key[1] if key[0] == "s" else key


def value_key(value: Any) -> Any:
    """The dictionary key :func:`index_key` gives the value ``value`` (the same equality)."""
    return value if type(value) is str else typed_key(value)


class _Texts:
    """Texts (prefixes or suffixes) mapped to masks, probed through a compressed trie.

    A value is walked from its start (``heads``) or its end (``tails``)
    down a trie of the keys whose single-child chains are merged into one
    edge (``"/news/"`` then ``"2026/"``), collecting the mask of each key it
    passes; the walk stops where no key continues. An edge costs one
    probe of the next character and one ``startswith``, however long. Probing
    a slice of the value per key length would allocate and hash one string
    per length in use, which costs far more once keys have many lengths
    (the section prefixes of paths). The trie is drawn again on the first
    probe after a change.
    """

    __slots__ = ("keys", "reverse", "trie")

    def __init__(self, reverse: bool = False) -> None:
        self.keys: dict[str, int] = {}
        self.reverse = reverse  # suffixes: the trie holds each key backwards
        self.trie: _Node | None = None  # None: draw it again

    def add(self, text: str, bit: int) -> None:
        self.keys[text] = self.keys.get(text, 0) | bit
        self.trie = None

    def discard(self, text: str, bit: int) -> None:
        _clear(self.keys, text, bit)
        self.trie = None

    def _draw(self) -> _Node:
        # First one node per character ([mask, {char: node}]), then merged.
        root: list[Any] = [0, {}]
        for text, mask in self.keys.items():
            node = root
            for char in text[::-1] if self.reverse else text:
                following = node[1].get(char)
                if following is None:
                    following = node[1][char] = [0, {}]
                node = following
            node[0] |= mask
        return _merged(root)

    def heads(self, value: str) -> int:
        """The mask of every key ``value`` starts with."""
        return _walk(self.trie or self._redraw(), value)

    def tails(self, value: str) -> int:
        """The mask of every key ``value`` ends with."""
        return _walk(self.trie or self._redraw(), value[::-1])

    def _redraw(self) -> _Node:
        self.trie = self._draw()
        return self.trie


_Node = tuple[int, dict[str, tuple[str, Any]]]
"""A trie node: the mask of the keys ending here, and per next character (label, node)."""


def _merged(node: list[Any]) -> _Node:
    """The character trie under ``node`` with single-child, key-less chains merged into edges."""
    # Iterative, so that a long key cannot exhaust the recursion limit.
    root_children: dict[str, tuple[str, Any]] = {}
    result: _Node = (node[0], root_children)
    stack: list[tuple[list[Any], dict[str, tuple[str, Any]]]] = [(node, root_children)]
    while stack:
        source, into = stack.pop()
        for char, child in source[1].items():
            label = char
            while not child[0] and len(child[1]) == 1:
                ((following, grandchild),) = child[1].items()
                label += following
                child = grandchild
            children: dict[str, tuple[str, Any]] = {}
            into[char] = (label, (child[0], children))
            stack.append((child, children))
    return result


def _walk(node: _Node, text: str) -> int:
    """The masks of the keys along ``text``'s path down the trie from ``node``."""
    mask = node[0]  # an empty key
    position, size = 0, len(text)
    while position < size:
        edge = node[1].get(text[position])
        if edge is None:
            break
        label, node = edge
        if not text.startswith(label, position):
            break
        position += len(label)
        mask |= node[0]
    return mask


class PathIndex:
    """The conditions on one path, each a bit, and the class of the values an event holds there."""

    __slots__ = (
        "absent",
        "bits",
        "but_all",
        "but_excluded",
        "cidr",
        "cidr_lengths",
        "cidr_probes",
        "exact",
        "free",
        "ignore_case",
        "memo",
        "memo_hits",
        "numbers_only",
        "numeric",
        "path",
        "points",
        "prefix",
        "prefix_ci",
        "present",
        "refs",
        "simple",
        "size",
        "slots",
        "suffix",
        "suffix_ci",
        "tested",
        "tree",
        "unless",
        "unless_all",
        "unless_kills",
        "unless_matchers",
        "wild_atoms",
        "wildcards",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bits: dict[Condition, int] = {}  # condition -> its bit (a power of two)
        self.refs: dict[Condition, int] = {}  # condition -> how many uses hold it
        self.free: list[int] = []  # bit positions given back by removed conditions
        self.size = 0  # bit positions ever handed out
        self.exact: dict[Any, int] = {}
        self.but_all = 0  # every anything-but over plain values
        self.but_excluded: dict[Any, int] = {}  # value -> the anything-but that exclude it
        self.prefix, self.prefix_ci = _Texts(), _Texts()
        self.suffix, self.suffix_ci = _Texts(reverse=True), _Texts(reverse=True)
        self.ignore_case: dict[str, int] = {}
        self.cidr: dict[tuple[int, int, int], int] = {}  # (version, length, network) -> mask
        self.cidr_lengths: dict[tuple[int, int], int] = {}  # (version, length) -> blocks
        # The same blocks per IP version: (shift, {address >> shift: mask}) per
        # prefix length, drawn on the first address after a change.
        self.cidr_probes: dict[int, list[tuple[int, dict[int, int]]]] | None = None
        # Wildcards by the literal text before their first * (or, when they
        # start with *, after their last *), indexed as a prefix (suffix) of
        # its own, so the affix probes tell which wildcards may match:
        # that prefix's (suffix's) bit -> the wildcards and their bits.
        self.wildcards: dict[int, dict[Wildcard, int]] = {}
        self.wild_atoms = 0  # every such prefix (suffix) bit
        self.unless: dict[AnythingBut, tuple[int, int]] = {}  # -> (bit, its matchers' mask)
        # The same, turned around: every such anything-but, every matcher they
        # use, and per matcher bit the anything-but conditions it defeats.
        self.unless_all = 0
        self.unless_matchers = 0
        self.unless_kills: dict[int, int] = {}
        self.tested: dict[Condition, int] = {}  # conditions tested one by one
        self.numeric: dict[Numeric, int] = {}
        self.points: list[float] | None = []  # every finite range bound, sorted (None: redraw)
        self.slots: dict[int, int] = {}  # slot -> the ranges containing it
        self.tree: IntervalTree[int] | None = None  # built on the first slot missing
        self.present = 0  # exists: true
        self.absent = 0  # exists: false
        # Only exact values, anything-but values and exists: a class costs a
        # probe or two, and remembering values would cost more than it saves.
        self.simple = True
        # Only numeric ranges (and exists): a class is a slot's, already kept per slot.
        self.numbers_only = False
        self.memo: dict[Any, int] | None = {}
        self.memo_hits = 0

    # --- the conditions ------------------------------------------------------------

    def add(self, condition: Condition) -> int:
        """Count one more use of ``condition`` and return its bit."""
        bit = self.bits.get(condition)
        if bit is not None:
            self.refs[condition] += 1
            return bit
        if self.free:
            bit = 1 << self.free.pop()
        else:
            bit = 1 << self.size
            self.size += 1
        self.bits[condition] = bit
        self.refs[condition] = 1
        self._index(condition, bit)
        self._changed()
        return bit

    def discard(self, condition: Condition) -> None:
        """Count one use of ``condition`` less, forgetting it after its last."""
        left = self.refs[condition] - 1
        if left:
            self.refs[condition] = left
            return
        del self.refs[condition]
        bit = self.bits.pop(condition)
        self._unindex(condition, bit)
        self.free.append(bit.bit_length() - 1)
        self._changed()

    def __bool__(self) -> bool:
        return bool(self.bits)

    def _changed(self) -> None:
        self.memo, self.memo_hits = {}, 0
        texts = (
            self.prefix.keys
            or self.prefix_ci.keys
            or self.suffix.keys
            or self.suffix_ci.keys
            or self.ignore_case
            or self.cidr
            or self.wildcards
            or self.unless
            or self.tested
        )
        self.simple = not (texts or self.numeric)
        self.numbers_only = bool(self.numeric and not (texts or self.exact or self.but_all))

    def _index(self, condition: Condition, bit: int) -> None:
        if isinstance(condition, Exact):
            key = index_key(condition.key)
            self.exact[key] = self.exact.get(key, 0) | bit
        elif isinstance(condition, Exists):
            if condition.present:
                self.present |= bit
            else:
                self.absent |= bit
        elif isinstance(condition, AnythingBut):
            if condition.unless:
                matchers = 0
                for matcher in condition.unless:
                    matchers |= self.add(matcher)
                self.unless[condition] = (bit, matchers)
                self._unless_changed(bit, matchers, True)
            else:
                self.but_all |= bit
                for key in map(index_key, condition.excluded):
                    self.but_excluded[key] = self.but_excluded.get(key, 0) | bit
        elif isinstance(condition, Prefix):
            (self.prefix_ci if condition.ignore_case else self.prefix).add(condition.text, bit)
        elif isinstance(condition, Suffix):
            (self.suffix_ci if condition.ignore_case else self.suffix).add(condition.text, bit)
        elif isinstance(condition, EqualsIgnoreCase):
            self.ignore_case[condition.text] = self.ignore_case.get(condition.text, 0) | bit
        elif isinstance(condition, Cidr):
            key, length = _cidr_keys(condition)
            self.cidr[key] = self.cidr.get(key, 0) | bit
            self.cidr_lengths[length] = self.cidr_lengths.get(length, 0) + 1
            self.cidr_probes = None
        elif isinstance(condition, Numeric):
            self.numeric[condition] = bit
            self._numbers_changed()
        elif isinstance(condition, Wildcard) and (plain := _plain(condition)) is not None:
            table, text = plain
            if table == "exact":
                self.exact[text] = self.exact.get(text, 0) | bit
            else:
                (self.prefix if table == "prefix" else self.suffix).add(text, bit)
        elif isinstance(condition, Wildcard) and (condition.head or condition.tail):
            atom = self.add(_affix_of(condition))
            self.wildcards.setdefault(atom, {})[condition] = bit
            self.wild_atoms |= atom
        else:
            self.tested[condition] = bit

    def _unindex(self, condition: Condition, bit: int) -> None:
        if isinstance(condition, Exact):
            key = index_key(condition.key)
            _clear(self.exact, key, bit)
        elif isinstance(condition, Exists):
            if condition.present:
                self.present &= ~bit
            else:
                self.absent &= ~bit
        elif isinstance(condition, AnythingBut):
            if condition.unless:
                _, matchers = self.unless.pop(condition)
                self._unless_changed(bit, matchers, False)
                for matcher in condition.unless:
                    self.discard(matcher)
            else:
                self.but_all &= ~bit
                for key in map(index_key, condition.excluded):
                    _clear(self.but_excluded, key, bit)
        elif isinstance(condition, Prefix):
            (self.prefix_ci if condition.ignore_case else self.prefix).discard(condition.text, bit)
        elif isinstance(condition, Suffix):
            (self.suffix_ci if condition.ignore_case else self.suffix).discard(condition.text, bit)
        elif isinstance(condition, EqualsIgnoreCase):
            _clear(self.ignore_case, condition.text, bit)
        elif isinstance(condition, Cidr):
            key, length = _cidr_keys(condition)
            _clear(self.cidr, key, bit)
            self.cidr_lengths[length] -= 1
            if not self.cidr_lengths[length]:
                del self.cidr_lengths[length]
            self.cidr_probes = None
        elif isinstance(condition, Numeric):
            del self.numeric[condition]
            self._numbers_changed()
        elif isinstance(condition, Wildcard) and (plain := _plain(condition)) is not None:
            table, text = plain
            if table == "exact":
                _clear(self.exact, text, bit)
            else:
                (self.prefix if table == "prefix" else self.suffix).discard(text, bit)
        elif isinstance(condition, Wildcard) and (condition.head or condition.tail):
            affix = _affix_of(condition)
            atom = self.bits[affix]
            del self.wildcards[atom][condition]
            if not self.wildcards[atom]:
                del self.wildcards[atom]
                self.wild_atoms &= ~atom
            self.discard(affix)
        else:
            del self.tested[condition]

    def _unless_changed(self, bit: int, matchers: int, added: bool) -> None:
        kills = self.unless_kills
        if added:
            self.unless_all |= bit
        else:
            self.unless_all &= ~bit
        while matchers:
            matcher = matchers & -matchers
            matchers ^= matcher
            left = (kills.get(matcher, 0) | bit) if added else kills[matcher] & ~bit
            if left:
                kills[matcher] = left
                self.unless_matchers |= matcher
            else:
                del kills[matcher]
                self.unless_matchers &= ~matcher

    def _numbers_changed(self) -> None:
        # Bounds, slots and tree are drawn again on the next number (a rule
        # set being built changes them many times before any event arrives).
        self.points = None
        self.slots = {}
        self.tree = None

    # --- classes -------------------------------------------------------------------

    def classify(self, values: list[Any]) -> int:
        """The conditions that the leaf ``values`` found at the path satisfy, as a mask.

        A condition holds when it holds for any of the values; ``exists:
        false`` holds when there is none.
        """
        if not values:
            return self.absent
        mask = self.present
        for value in values:
            mask |= self.value_class(value)
        return mask

    def value_class(self, value: Any) -> int:
        """The conditions one leaf value satisfies (``exists`` aside)."""
        if self.simple:
            key = value if type(value) is str else typed_key(value)
            mask = self.exact.get(key, 0)
            if self.but_all:
                mask |= self.but_all & ~self.but_excluded.get(key, 0)
            return mask
        if self.numbers_only:
            if is_number(value) and value == value:  # NaN is in no range
                return self.number_class(value)
            return 0
        memo = self.memo
        if memo is None:
            return self.compute(value)
        kind = type(value)
        if kind is str:
            remembered: Any = value
        elif kind in _SCALARS:
            # The type is part of the key: True and 1, or 1 and 1.0, are
            # equal in Python but not necessarily to every condition.
            remembered = (kind, value)
        else:
            return self.compute(value)
        hit = memo.get(remembered)
        if hit is not None:
            self.memo_hits += 1
            return hit
        mask = self.compute(value)
        if len(memo) >= _MEMO_SIZE:
            if self.memo_hits < _MEMO_SIZE:
                self.memo = None  # values here do not recur: stop remembering them
                return mask
            memo.clear()
            self.memo_hits = 0
        memo[remembered] = mask
        return mask

    def compute(self, value: Any) -> int:
        """The conditions one leaf value satisfies, computed (``value_class`` may remember it)."""
        key = value if type(value) is str else typed_key(value)
        mask = self.exact.get(key, 0)
        if self.but_all:
            mask |= self.but_all & ~self.but_excluded.get(key, 0)
        if type(value) is str:
            mask |= self._text(value)
        elif self.numeric and is_number(value) and value == value:  # NaN is in no range
            mask |= self.number_class(value)
        for condition, bit in self.tested.items():
            if condition.test(value):
                mask |= bit
        # Last, as it reads the bits of its matchers, which the steps above set.
        if self.unless_all:
            holding = self.unless_all
            matched = mask & self.unless_matchers
            while matched:
                matcher = matched & -matched
                matched ^= matcher
                holding &= ~self.unless_kills[matcher]
            mask |= holding
        return mask

    def _text(self, value: str) -> int:
        mask = 0
        if self.prefix.keys:
            mask |= self.prefix.heads(value)
        if self.suffix.keys:
            mask |= self.suffix.tails(value)
        if self.prefix_ci.keys or self.suffix_ci.keys or self.ignore_case:
            lowered = value.lower()
            if self.prefix_ci.keys:
                mask |= self.prefix_ci.heads(lowered)
            if self.suffix_ci.keys:
                mask |= self.suffix_ci.tails(lowered)
            mask |= self.ignore_case.get(lowered, 0)
        if self.cidr:
            mask |= self._address(value)
        fitting = mask & self.wild_atoms
        while fitting:
            atom = fitting & -fitting
            fitting ^= atom
            for wildcard, bit in self.wildcards[atom].items():
                if wildcard.fits(value):
                    mask |= bit
        return mask

    def _address(self, value: str) -> int:
        address = parse_address(value)
        if address is None:
            return 0
        probes = self.cidr_probes
        if probes is None:
            probes = self.cidr_probes = self._draw_cidr()
        number, mask = address[1], 0
        for shift, table in probes[address[0]]:
            mask |= table.get(number >> shift, 0)
        return mask

    def _draw_cidr(self) -> dict[int, list[tuple[int, dict[int, int]]]]:
        tables: dict[tuple[int, int], dict[int, int]] = {}
        for (version, length, network), mask in self.cidr.items():
            shift = (32 if version == 4 else 128) - length
            tables.setdefault((version, shift), {})[network >> shift] = mask
        probes: dict[int, list[tuple[int, dict[int, int]]]] = {4: [], 6: []}
        for (version, shift), table in tables.items():
            probes[version].append((shift, table))
        return probes

    def number_class(self, value: float) -> int:
        """The ranges a number (not NaN) lies in."""
        points = self.points
        if points is None:
            bounds = {b for c in self.numeric for b in (c.low, c.high) if b is not None}
            points = self.points = sorted(bounds)
        position = bisect_left(points, value)
        slot = 2 * position + (position < len(points) and points[position] == value)
        mask = self.slots.get(slot)
        if mask is None:
            # The first number in this slot: every number in it satisfies the
            # same ranges, since no bound lies strictly inside it.
            if self.tree is None:
                self.tree = IntervalTree([(c, bit) for c, bit in self.numeric.items()])
            mask = 0
            for bit in self.tree.containing(value):
                mask |= bit
            self.slots[slot] = mask
        return mask


def _affix_of(wildcard: Wildcard) -> Prefix | Suffix:
    """The prefix (its literal head) or else suffix (its literal tail) every match has."""
    return Prefix(wildcard.head) if wildcard.head else Suffix(wildcard.tail)


def _plain(wildcard: Wildcard) -> tuple[str, str] | None:
    """A wildcard that is really a prefix (``ab*``), a suffix (``*ab``) or a plain text.

    Indexed as such, it costs a probe instead of a regular expression; the
    compiled expression tells, since it joins the literal runs with ``.*``.
    """
    pattern, head, tail = wildcard.regex.pattern, wildcard.head, wildcard.tail
    if pattern == re.escape(head) + ".*":
        return "prefix", head
    if pattern == ".*" + re.escape(tail):
        return "suffix", tail
    if pattern == re.escape(head):
        return "exact", head
    return None


def _clear(table: dict[Any, int], key: Any, bit: int) -> None:
    mask = table[key] & ~bit
    if mask:
        table[key] = mask
    else:
        del table[key]


def _cidr_keys(condition: Cidr) -> tuple[tuple[int, int, int], tuple[int, int]]:
    network = condition.network
    version, length = network.version, network.prefixlen
    return (version, length, int(network.network_address)), (version, length)


# Scalar types whose values are remembered (strings are keyed as themselves).
_SCALARS = frozenset({int, float, bool, type(None)})

# How many values a path remembers before starting afresh: enough for the
# enumerations events are made of (states, types, languages, regions), small
# enough that a path whose values never repeat (ids, timestamps) costs little.
_MEMO_SIZE = 64
