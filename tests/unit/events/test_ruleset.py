"""RuleSet: registration, removal, ordering, and agreement with Pattern on random input."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflow.errors import InvalidPatternError
from reflow.events import Event, Pattern, RuleSet


def test_match_returns_matching_rule_names_in_the_order_added() -> None:
    rules = RuleSet()
    rules.add("zeta", {"source": ["cms"]})
    rules.add("alpha", {"source": [{"prefix": "c"}]})
    rules.add("other", {"source": ["shop"]})
    assert rules.match({"source": "cms"}) == ["zeta", "alpha"]
    assert rules.match({"source": "shop"}) == ["other"]
    assert rules.match({"source": "x"}) == []


def test_adding_a_name_again_replaces_the_rule() -> None:
    rules = RuleSet()
    rules.add("r", {"source": ["a"]})
    rules.add("r", {"source": ["b"]})
    assert len(rules) == 1
    assert rules.match({"source": "a"}) == []
    assert rules.match({"source": "b"}) == ["r"]


def test_remove_forgets_the_rule_and_keeps_the_others_sharing_its_nodes() -> None:
    rules = RuleSet()
    rules.add("a", {"source": ["cms"], "detail": {"n": [{"numeric": [">", 1]}]}})
    rules.add("b", {"source": ["cms"], "detail": {"n": [{"numeric": [">", 1]}]}})
    rules.add("c", {"source": ["cms"]})
    rules.remove("a")
    event = {"source": "cms", "detail": {"n": 2}}
    assert rules.match(event) == ["b", "c"]
    rules.remove("b")
    rules.remove("c")
    assert rules.match(event) == []
    assert "a" not in rules and len(rules) == 0


def test_removing_every_rule_leaves_an_empty_index() -> None:
    rules = RuleSet()
    for index in range(50):
        rules.add(f"r{index}", {"source": [f"s{index % 7}"], "detail": {"k": [{"prefix": "p"}]}})
    for index in range(50):
        rules.remove(f"r{index}")
    assert not rules._access and not rules._paths and not rules._values
    assert not rules._everywhere


def test_remove_of_an_unknown_rule_raises_key_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        RuleSet().remove("nope")


def test_invalid_pattern_is_refused_and_changes_nothing() -> None:
    rules = RuleSet()
    rules.add("r", {"source": ["a"]})
    with pytest.raises(InvalidPatternError):
        rules.add("r", {"source": "a"})
    assert rules.match({"source": "a"}) == ["r"]


def test_a_rule_with_two_or_branches_matching_is_reported_once() -> None:
    rules = RuleSet()
    rules.add("r", {"$or": [{"a": [1]}, {"b": [2]}]})
    assert rules.match({"a": 1, "b": 2}) == ["r"]


def test_empty_pattern_rule_matches_everything() -> None:
    rules = RuleSet()
    rules.add("all", {})
    assert rules.match({"anything": 1}) == ["all"]


def test_same_value_in_different_or_lists_does_not_leak_between_rules() -> None:
    rules = RuleSet()
    rules.add("ab", {"source": ["a", "b"]})
    rules.add("a", {"source": ["a"]})
    assert rules.match({"source": "b"}) == ["ab"]
    assert rules.match({"source": "a"}) == ["ab", "a"]


def test_pattern_and_names_accessors() -> None:
    rules = RuleSet()
    compiled = rules.add("r", '{"source": ["a"]}')
    assert rules.pattern("r") is compiled
    assert rules.names() == ["r"]


def test_many_rules_on_distinct_sources_match_only_their_own() -> None:
    rules = RuleSet()
    for index in range(2000):
        rules.add(f"r{index}", {"source": [f"src-{index}"], "detail": {"v": [{"exists": True}]}})
    assert rules.match({"source": "src-1234", "detail": {"v": 0}}) == ["r1234"]


# --- property: the index agrees with each pattern alone ---------------------------------

KEYS = ["a", "b", "c"]
STRINGS = ["", "a", "ab", "abc", "b", "ba", "A", "AB", "x*y", "10.0.0.1", "2001:db8::1"]
NUMBERS = [-1, 0, 0.5, 1, 1.0, 2, 10, 300, 300.0]
SCALARS = st.sampled_from([*STRINGS, *NUMBERS, True, False, None])

strings = st.sampled_from(STRINGS)
numbers = st.sampled_from(NUMBERS)
operators = st.one_of(
    SCALARS,
    st.builds(lambda s: {"prefix": s}, strings),
    st.builds(lambda s: {"suffix": s}, strings),
    st.builds(lambda s: {"prefix": {"equals-ignore-case": s}}, strings),
    st.builds(lambda s: {"suffix": {"equals-ignore-case": s}}, strings),
    st.builds(lambda s: {"equals-ignore-case": s}, strings),
    st.builds(lambda s: {"wildcard": s}, st.sampled_from(["*", "a*", "*b", "a*c", "*b*", "x\\*y"])),
    st.builds(lambda v: {"anything-but": v}, st.one_of(strings, numbers)),
    st.builds(lambda v: {"anything-but": v}, st.lists(st.one_of(strings, numbers), min_size=1)),
    st.builds(lambda s: {"anything-but": {"prefix": s}}, st.sampled_from(["a", "b", "1"])),
    st.builds(lambda s: {"anything-but": {"suffix": s}}, st.sampled_from(["a", "b"])),
    st.builds(lambda s: {"anything-but": {"equals-ignore-case": s}}, strings),
    st.builds(lambda s: {"anything-but": {"wildcard": s}}, st.sampled_from(["a*", "*b"])),
    st.builds(
        lambda op, n: {"numeric": [op, n]}, st.sampled_from(["<", "<=", "=", ">", ">="]), numbers
    ),
    st.builds(
        lambda lo, hi: {"numeric": [">=", lo, "<", lo + hi]}, numbers, st.sampled_from([0.5, 1, 5])
    ),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.builds(
        lambda c: {"cidr": c}, st.sampled_from(["10.0.0.0/8", "11.0.0.0/8", "2001:db8::/32"])
    ),
)
leaf_rules = st.lists(operators, min_size=1, max_size=3)


def pattern_objects(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    value: st.SearchStrategy[Any] = leaf_rules
    if depth > 0:
        value = st.one_of(leaf_rules, st.deferred(lambda: pattern_objects(depth - 1)))
    base = st.dictionaries(st.sampled_from(KEYS), value, min_size=1, max_size=3)
    if depth == 0:
        return base
    with_or = st.builds(
        lambda d, branches: {**d, "$or": branches},
        st.dictionaries(st.sampled_from(KEYS), value, max_size=2),
        st.lists(st.deferred(lambda: pattern_objects(depth - 1)), min_size=2, max_size=3),
    )
    return st.one_of(base, with_or)


def event_values(depth: int) -> st.SearchStrategy[Any]:
    leaf = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
    if depth == 0:
        return leaf
    return st.one_of(
        leaf,
        st.dictionaries(
            st.sampled_from(KEYS), st.deferred(lambda: event_values(depth - 1)), max_size=3
        ),
        st.lists(
            st.dictionaries(
                st.sampled_from(KEYS), st.deferred(lambda: event_values(depth - 1)), max_size=2
            ),
            max_size=2,
        ),
    )


events = st.dictionaries(st.sampled_from(KEYS), event_values(2), max_size=3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patterns=st.lists(pattern_objects(2), min_size=1, max_size=8),
    samples=st.lists(events, min_size=1, max_size=6),
)
def test_ruleset_match_agrees_with_each_pattern_alone(
    patterns: list[dict[str, Any]], samples: list[dict[str, Any]]
) -> None:
    rules = RuleSet()
    compiled = {}
    for index, pattern in enumerate(patterns):
        name = f"r{index}"
        compiled[name] = rules.add(name, pattern)
    for event in samples:
        expected = [name for name, p in compiled.items() if p.matches(event)]
        assert rules.match(event) == expected


@settings(max_examples=100, deadline=None)
@given(
    patterns=st.lists(pattern_objects(1), min_size=2, max_size=8),
    removed=st.sets(st.integers(min_value=0, max_value=7)),
    samples=st.lists(events, min_size=1, max_size=4),
)
def test_ruleset_after_removals_agrees_with_the_remaining_patterns(
    patterns: list[dict[str, Any]], removed: set[int], samples: list[dict[str, Any]]
) -> None:
    rules = RuleSet()
    for index, pattern in enumerate(patterns):
        rules.add(f"r{index}", pattern)
    for index in removed:
        if index < len(patterns):
            rules.remove(f"r{index}")
    for event in samples:
        expected = [n for n in rules.names() if Pattern(rules.pattern(n).source).matches(event)]
        assert rules.match(event) == expected


flat_objects = st.dictionaries(
    st.sampled_from(KEYS), st.one_of(SCALARS, st.lists(SCALARS, max_size=2))
)


@settings(max_examples=200, deadline=None)
@given(
    inner=st.dictionaries(st.sampled_from(KEYS), leaf_rules, min_size=1, max_size=3),
    items=st.lists(flat_objects, min_size=1, max_size=4),
)
def test_fields_in_an_array_of_objects_match_as_if_one_element_were_alone(
    inner: dict[str, Any], items: list[dict[str, Any]]
) -> None:
    # The oracle: a pattern over "items" matches the array exactly when it
    # matches some element on its own (EventBridge's array consistency),
    # except that exists: false must hold for the array as a whole.
    pattern = {"items": inner}
    compiled = Pattern(pattern)
    rules = RuleSet()
    rules.add("r", pattern)
    got = compiled.matches({"items": items})
    assert rules.match({"items": items}) == (["r"] if got else [])
    if not any({"exists": False} in conditions for conditions in inner.values()):
        assert got == any(compiled.matches({"items": item}) for item in items)


def _event_like(pattern: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """An event shaped like ``pattern``, its leaves often taken from the pattern itself.

    Random events rarely reach a pattern's nested fields; mirroring the
    pattern's structure makes matches (and near misses) common, so the
    agreement test compares both answers, not mostly "no".
    """
    event: dict[str, Any] = {}
    for key, value in pattern.items():
        if key == "$or":
            for branch in value:
                for k, v in _event_like(branch, data).items():
                    event.setdefault(k, v)
        elif isinstance(value, dict):
            if data.draw(st.integers(0, 3)):
                nested = _event_like(value, data)
                event[key] = [nested, data.draw(events)] if data.draw(st.booleans()) else nested
        elif data.draw(st.integers(0, 4)):
            likely = [v for item in value for v in _likely_values(item)]
            pick = st.sampled_from(likely) if likely else SCALARS
            leaf = st.one_of(pick, pick, SCALARS, st.lists(st.one_of(pick, SCALARS), max_size=3))
            event[key] = data.draw(leaf)
    return event


def _likely_values(item: Any) -> list[Any]:
    """Values that satisfy (or nearly satisfy) one member of a pattern's value array."""
    if not isinstance(item, dict):
        return [item]
    ((operator, operand),) = item.items()
    if operator in ("prefix", "suffix", "equals-ignore-case"):
        text = operand["equals-ignore-case"] if isinstance(operand, dict) else operand
        return [text, text + "b", "a" + text, text.swapcase()]
    if operator == "wildcard":
        return [operand.replace("\\*", "*").replace("*", ""), operand.replace("*", "zz")]
    if operator == "numeric":
        return [n for n in operand[1::2]] + [operand[1] + 0.5, operand[1] - 0.5]
    if operator == "cidr":
        return ["10.1.2.3", "11.0.0.1", "2001:db8::5", "2001:db9::5"]
    if operator == "anything-but":
        if isinstance(operand, list):
            return [*operand, "other"]
        return [operand, "other"] if not isinstance(operand, dict) else ["a", "b", "other"]
    return []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns=st.lists(pattern_objects(2), min_size=1, max_size=6), data=st.data())
def test_ruleset_agrees_with_patterns_on_events_shaped_like_them(
    patterns: list[dict[str, Any]], data: st.DataObject
) -> None:
    rules = RuleSet()
    compiled = {f"r{i}": rules.add(f"r{i}", p) for i, p in enumerate(patterns)}
    for pattern in patterns:
        event = _event_like(pattern, data)
        expected = [name for name, p in compiled.items() if p.matches(event)]
        assert rules.match(event) == expected


def test_match_and_matches_accept_an_event_through_its_eventbridge_view() -> None:
    event = Event(source="cms", type="ArticlePublished", data={"section": "sport"})
    pattern = {"detail-type": ["ArticlePublished"], "detail": {"section": [{"prefix": "sp"}]}}
    rules = RuleSet()
    rules.add("r", pattern)
    assert rules.match(event) == ["r"]
    assert Pattern(pattern).matches(event)


numeric_rules = st.lists(
    st.one_of(
        st.builds(lambda op, n: [op, n], st.sampled_from(["<", "<=", "=", ">", ">="]), numbers),
        st.builds(
            lambda lo, width, a, b: [a, lo, b, lo + width],
            numbers,
            st.sampled_from([0.5, 1, 5]),
            st.sampled_from([">", ">="]),
            st.sampled_from(["<", "<="]),
        ),
    ),
    min_size=9,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    ranges=numeric_rules,
    values=st.lists(
        st.one_of(numbers, st.floats(-5, 400), st.sampled_from(["1", None])), max_size=8
    ),
    removed=st.sets(st.integers(0, 39), max_size=10),
)
def test_many_numeric_rules_on_one_path_agree_with_each_pattern(
    ranges: list[list[Any]], values: list[Any], removed: set[int]
) -> None:
    # Past a handful of ranges a branch answers from its interval tree.
    rules = RuleSet()
    for index, numeric in enumerate(ranges):
        rules.add(f"r{index}", {"detail": {"n": [{"numeric": numeric}]}})
    for value in values:
        event = {"detail": {"n": value}}
        expected = [n for n in rules.names() if rules.pattern(n).matches(event)]
        assert rules.match(event) == expected
    for index in removed:
        if index < len(ranges):
            rules.remove(f"r{index}")
    for value in values:
        event = {"detail": {"n": [value, 2]}}
        expected = [n for n in rules.names() if rules.pattern(n).matches(event)]
        assert rules.match(event) == expected


@settings(max_examples=100, deadline=None)
@given(
    blocks=st.lists(
        st.one_of(
            st.builds(
                lambda a, n: f"10.{a}.0.0/{n}", st.integers(0, 3), st.sampled_from([8, 14, 16])
            ),
            st.builds(
                lambda a, n: f"10.{a}.{a}.0/{n}", st.integers(0, 3), st.sampled_from([24, 31])
            ),
            st.builds(
                lambda a, n: f"2001:db8:{a}::/{n}", st.integers(0, 3), st.sampled_from([48, 64])
            ),
            st.just("0.0.0.0/0"),
            st.just("::/0"),
        ),
        min_size=1,
        max_size=30,
    ),
    addresses=st.lists(
        st.one_of(
            st.builds(lambda a, b: f"10.{a}.{a}.{b}", st.integers(0, 4), st.integers(0, 255)),
            st.builds(lambda a, b: f"2001:db8:{a}::{b:x}", st.integers(0, 4), st.integers(0, 999)),
            st.sampled_from(["not-an-ip", "::ffff:10.0.0.1", "10.0.0.1/8"]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_many_cidr_rules_agree_with_each_pattern(blocks: list[str], addresses: list[str]) -> None:
    rules = RuleSet()
    for index, block in enumerate(blocks):
        network = ipaddress.ip_network(block, strict=False)  # normalise host bits away
        rules.add(f"r{index}", {"ip": [{"cidr": str(network)}]})
    for address in addresses:
        event = {"ip": address}
        expected = [n for n in rules.names() if rules.pattern(n).matches(event)]
        assert rules.match(event) == expected
    for index in range(0, len(blocks), 2):
        rules.remove(f"r{index}")
    for address in addresses:
        event = {"ip": address}
        expected = [n for n in rules.names() if rules.pattern(n).matches(event)]
        assert rules.match(event) == expected


wildcards = st.lists(
    st.text(alphabet="ab/*.", max_size=6)
    .map(lambda text: text.replace("**", "*"))
    .filter(lambda text: "**" not in text),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    globs=wildcards,
    values=st.lists(st.text(alphabet="ab/.*", max_size=8), min_size=1, max_size=6),
)
def test_many_wildcard_rules_agree_with_each_pattern(globs: list[str], values: list[str]) -> None:
    # Wildcards are indexed by their literal head (or tail); each must still
    # answer exactly as its own pattern does, after removals too.
    rules = RuleSet()
    for index, glob in enumerate(globs):
        rules.add(f"r{index}", {"key": [{"wildcard": glob}]})
    for round_ in range(2):
        for value in values:
            event = {"key": value}
            expected = [n for n in rules.names() if rules.pattern(n).matches(event)]
            assert rules.match(event) == expected
        if round_ == 0:
            for index in range(0, len(globs), 2):
                rules.remove(f"r{index}")
