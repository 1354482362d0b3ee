"""Fresh copies of a header template (``reflow.edge.tracked.copier``).

A copy handed to a function must equal the template and share nothing
mutable with it or with other copies, whatever the headers hold; the copy
functions are compiled per shape from indices only, so header bytes never
become source code.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.edge import tracked
from reflow.edge.tracked import HeaderCopies, copier
from reflow.edge.triggers import headers_to_cf

_names = st.sampled_from(["host", "Host", "X-A", "x-a", "cookie", "s[0]", "}", "'\"", "a b"])
_values = st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=12))
def test_a_copy_equals_the_template_and_shares_nothing_mutable(
    pairs: list[tuple[str, str]],
) -> None:
    template = headers_to_cf(pairs)
    make = copier(template)
    assert make is not None
    first, second = make(), make()
    assert first == template == second
    assert list(first) == list(template)  # the same order
    for copy in (first, second):
        assert copy is not template
        for name, entries in copy.items():
            assert entries is not template[name]
            for entry, original in zip(entries, template[name], strict=True):
                assert entry is not original
    # Changing a copy in every way a function might leaves the template and the
    # other copy as they were.
    expected = headers_to_cf(pairs)
    for entries in first.values():
        for entry in entries:
            entry["value"] = "changed"
        entries.append({"key": "x", "value": "y"})
    first["added"] = [{"key": "Added", "value": "1"}]
    assert template == expected == second


def test_templates_that_are_not_plain_strings_get_no_copier() -> None:
    assert copier([("a", "b")]) is None
    assert copier({"a": "b"}) is None
    assert copier({"a": [("key", "b")]}) is None
    assert copier({"a": [{"key": 1}]}) is None
    assert copier({1: []}) is None
    assert copier({}) is not None


def test_one_compiled_function_per_shape_and_a_bounded_number_of_them() -> None:
    before = dict(tracked._COPIERS)
    try:
        tracked._COPIERS.clear()
        copier(headers_to_cf([("a", "1"), ("b", "2")]))
        copier(headers_to_cf([("c", "3"), ("d", "4")]))
        assert len(tracked._COPIERS) == 1
        for size in range(tracked._MAX_COPIERS + 20):
            made = copier(headers_to_cf([("a", str(n)) for n in range(size)]))
            assert made is not None
            assert made() == headers_to_cf([("a", str(n)) for n in range(size)])
        assert len(tracked._COPIERS) == tracked._MAX_COPIERS
    finally:
        tracked._COPIERS.clear()
        tracked._COPIERS.update(before)


def test_header_copies_hand_out_fresh_copies_when_there_is_no_spare() -> None:
    copies = HeaderCopies([("host", "e")], headers_to_cf)
    one = copies.take()
    one["host"][0]["value"] = "changed"
    two = copies.take()
    assert two == copies.template == {"host": [{"key": "host", "value": "e"}]}
    assert copies.fresh() is not two
