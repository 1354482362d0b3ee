"""RuleSet's generated bucket code, slot value memories, and the probes behind them.

A hot bucket runs as generated code (reflow.events.compiled) that must
answer exactly as the slot-by-slot loop does; each slot of it remembers
which alternatives a recurring value lets through. The properties here run
every bucket compiled from its first event, match each event twice (the
second answer may come from the value memories) and change the rules in
between. The probes the classes rest on (a trie of prefixes and suffixes,
a glob matched without backtracking, CIDR tables per prefix length) are
checked against their plain definitions.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflow.events import Pattern, RuleSet, compiled
from reflow.events.conditions import Cidr
from reflow.events.paths import PathIndex, _Texts
from tests.unit.events.test_ruleset import events, pattern_objects


@contextmanager
def compiling_at_once() -> Iterator[None]:
    """Every bucket compiled on its first run (the default waits for a few runs)."""
    saved = compiled.COMPILE_AFTER
    compiled.COMPILE_AFTER = 0
    try:
        yield
    finally:
        compiled.COMPILE_AFTER = saved


def _expected(rules: RuleSet, event: dict[str, Any]) -> list[str]:
    return [n for n in rules.names() if Pattern(rules.pattern(n).source).matches(event)]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patterns=st.lists(pattern_objects(2), min_size=1, max_size=8),
    removed=st.sets(st.integers(min_value=0, max_value=7)),
    samples=st.lists(events, min_size=1, max_size=6),
)
def test_compiled_buckets_agree_with_each_pattern_through_changes(
    patterns: list[dict[str, Any]], removed: set[int], samples: list[dict[str, Any]]
) -> None:
    with compiling_at_once():
        rules = RuleSet()
        for index, pattern in enumerate(patterns):
            rules.add(f"r{index}", pattern)
        for event in samples * 2:  # twice: the second answers may come from value memories
            assert rules.match(event) == _expected(rules, event)
        for index in removed:
            if index < len(patterns):
                rules.remove(f"r{index}")
        rules.add("late", patterns[0])
        for event in samples * 2:
            assert rules.match(event) == _expected(rules, event)


def _runner(bucket: Any) -> object:
    """The bucket's generated code, read afresh (not narrowed by earlier asserts)."""
    return bucket.runner


def test_a_bucket_is_compiled_after_a_few_runs_and_again_after_a_change() -> None:
    rules = RuleSet()
    rules.add("a", {"source": ["s"], "detail": {"state": ["on"]}})
    bucket = rules._access[("source",)]["s"]
    event = {"source": "s", "detail": {"state": "on"}}
    for _ in range(compiled.COMPILE_AFTER):
        assert rules.match(event) == ["a"]
    assert _runner(bucket) is None
    assert rules.match(event) == ["a"]
    assert _runner(bucket) is not None
    rules.add("b", {"source": ["s"], "detail": {"state": [{"prefix": "of"}]}})
    assert _runner(bucket) is None  # the change forgot the generated code
    with compiling_at_once():
        assert rules.match({"source": "s", "detail": {"state": "off"}}) == ["b"]
        assert _runner(bucket) is not None
        assert rules.match(event) == ["a"]


def test_slot_value_memory_keeps_recurring_values_and_stops_on_fresh_ones() -> None:
    with compiling_at_once():
        rules = RuleSet()
        rules.add("ranged", {"source": ["s"], "detail": {"n": [{"numeric": [">", 500]}]}})
        rules.add("stated", {"source": ["s"], "detail": {"state": ["on"], "n": [{"exists": True}]}})
        rules.add("named", {"source": ["s"], "detail": {"id": [{"prefix": "x1"}]}})
        bucket = rules._access[("source",)]["s"]
        slots = {slot.path: slot for slot in bucket.slots.values()}
        for index in range(2000):
            state = ["on", "off"][index % 2]
            event = {"source": "s", "detail": {"n": index, "state": state, "id": f"x{index}"}}
            expected = (["ranged"] if index > 500 else []) + (["stated"] if index % 2 == 0 else [])
            expected += ["named"] if str(index).startswith("1") else []
            assert rules.match(event) == expected
        ids, states = slots[("detail", "id")], slots[("detail", "state")]
        assert not ids.values_on and not ids.values  # every id was new
        assert states.values_on and set(states.values) == {"on", "off"}
        assert not slots[("detail", "n")].values  # numbers are placed among the bounds instead
        # The memory is forgotten with the bucket's change, and answers follow the new rules.
        rules.add("off", {"source": ["s"], "detail": {"state": [{"prefix": "of"}]}})
        assert rules.match({"source": "s", "detail": {"n": 1, "state": "off"}}) == ["off"]
        assert rules.match({"source": "s", "detail": {"n": 1, "state": "off"}}) == ["off"]


def test_value_memory_keeps_booleans_numbers_null_and_absence_apart() -> None:
    with compiling_at_once():
        rules = RuleSet()
        rules.add("one", {"source": ["s"], "v": [1]})
        rules.add("true", {"source": ["s"], "v": [True]})
        rules.add("null", {"source": ["s"], "v": [None]})
        rules.add("gone", {"source": ["s"], "v": [{"exists": False}]})
        rules.add("text", {"source": ["s"], "v": ["1"]})
        for _ in range(3):
            assert rules.match({"source": "s", "v": 1}) == ["one"]
            assert rules.match({"source": "s", "v": 1.0}) == ["one"]
            assert rules.match({"source": "s", "v": True}) == ["true"]
            assert rules.match({"source": "s", "v": None}) == ["null"]
            assert rules.match({"source": "s"}) == ["gone"]
            assert rules.match({"source": "s", "v": "1"}) == ["text"]
            assert rules.match({"source": "s", "v": [1, None]}) == ["one", "null"]


# --- the probes -----------------------------------------------------------------------

_texts = st.text(alphabet="ab/.", max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(_texts, max_size=8),
    removed=st.sets(st.integers(0, 7)),
    values=st.lists(_texts, min_size=1, max_size=6),
)
def test_the_affix_trie_finds_every_key_a_value_starts_or_ends_with(
    keys: list[str], removed: set[int], values: list[str]
) -> None:
    heads, tails = _Texts(), _Texts(reverse=True)
    bits = {key: 1 << position for position, key in enumerate(dict.fromkeys(keys))}
    for key, bit in bits.items():
        heads.add(key, bit)
        tails.add(key, bit)
    for value in values:  # probe once, so that removals must redraw the trie
        heads.heads(value), tails.tails(value)
    for position, key in enumerate(list(bits)):
        if position in removed:
            heads.discard(key, bits[key])
            tails.discard(key, bits.pop(key))
    if not bits:
        return
    for value in values:
        assert heads.heads(value) == sum(b for k, b in bits.items() if value.startswith(k))
        assert tails.tails(value) == sum(b for k, b in bits.items() if value.endswith(k))


@settings(max_examples=300, deadline=None)
@given(
    glob=st.text(alphabet="ab*", max_size=7).filter(lambda g: "**" not in g),
    value=st.text(alphabet="ab*", max_size=8),
)
def test_a_glob_matches_without_backtracking_as_its_regular_expression_does(
    glob: str, value: str
) -> None:
    ((field,),) = Pattern({"k": [{"wildcard": glob}]}).alternatives
    (wildcard,) = field.conditions
    expected = re.fullmatch(".*".join(map(re.escape, glob.split("*"))), value, re.DOTALL)
    assert wildcard.test(value) == (expected is not None)


@settings(max_examples=150, deadline=None)
@given(
    blocks=st.lists(
        st.sampled_from(
            ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "0.0.0.0/0", "2001:db8::/32", "::/0"]
        ),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    removed=st.sets(st.integers(0, 4)),
    addresses=st.lists(
        st.sampled_from(["10.1.2.3", "10.2.0.1", "11.0.0.1", "2001:db8::1", "2001:db9::1", "x"]),
        min_size=1,
        max_size=5,
    ),
)
def test_cidr_tables_follow_additions_and_removals(
    blocks: list[str], removed: set[int], addresses: list[str]
) -> None:
    index = PathIndex(("ip",))
    conditions = [Cidr(ipaddress.ip_network(block)) for block in blocks]
    for condition in conditions:
        index.add(condition)
    for address in addresses:
        index.classify([address])
    kept = [c for position, c in enumerate(conditions) if position not in removed]
    for position, condition in enumerate(conditions):
        if position in removed:
            index.discard(condition)
    for address in addresses:
        found = index.classify([address])
        for condition in kept:
            assert bool(found & index.bits[condition]) == condition.test(address)


_bounds = st.sampled_from([-5, 0, 0.5, 1, 2**53, 300, 300.0, 1e300])
_numbers = st.one_of(
    _bounds,
    _bounds.map(lambda b: math.nextafter(b, math.inf)),
    _bounds.map(lambda b: math.nextafter(b, -math.inf)),
    st.sampled_from([2**53 + 1, -(10**400), 10**400, math.nan, math.inf, -math.inf, True, None]),
    st.integers(-10, 400),
)


@settings(max_examples=150, deadline=None)
@given(
    ranges=st.lists(
        st.one_of(
            st.builds(lambda op, n: [op, n], st.sampled_from(["<", "<=", "=", ">", ">="]), _bounds),
            st.builds(lambda lo, hi: [">", lo, "<=", hi], _bounds, _bounds).filter(
                lambda r: r[1] < r[3]
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    exists=st.booleans(),
    values=st.lists(_numbers, min_size=1, max_size=8),
)
def test_numbers_find_their_answer_among_a_slots_own_bounds(
    ranges: list[list[Any]], exists: bool, values: list[Any]
) -> None:
    with compiling_at_once():
        rules = RuleSet()
        for index, numeric in enumerate(ranges):
            rules.add(f"r{index}", {"source": ["s"], "n": [{"numeric": numeric}]})
        if exists:
            rules.add("there", {"source": ["s"], "n": [{"exists": True}]})
        for value in values:
            event = {"source": "s", "n": value}
            assert rules.match(event) == _expected(rules, event)
