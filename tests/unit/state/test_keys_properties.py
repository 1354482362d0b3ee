"""Properties of the key encoding and of queries against a plain-Python model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends import memory_backend
from reflow.errors import InvalidKeyError
from reflow.state import Table
from reflow.state.keys import encode_key_value

numbers = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)
strings = st.text(min_size=1, max_size=12)


@given(numbers, numbers)
def test_number_encoding_preserves_order(a: float, b: float) -> None:
    ea, eb = encode_key_value("t", "k", a), encode_key_value("t", "k", b)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)


@given(strings, strings)
def test_string_encoding_preserves_utf8_byte_order_and_prefixes(a: str, b: str) -> None:
    ea, eb = encode_key_value("t", "k", a), encode_key_value("t", "k", b)
    assert (ea < eb) == (a.encode() < b.encode())
    if b.startswith(a):
        assert eb.startswith(ea)


@given(numbers, strings)
def test_numbers_sort_before_strings(n: float, s: str) -> None:
    assert encode_key_value("t", "k", n) < encode_key_value("t", "k", s)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2**53 + 1])
def test_unrepresentable_numbers_are_refused(bad: float) -> None:
    with pytest.raises(InvalidKeyError):
        encode_key_value("t", "k", bad)


sort_values = st.one_of(
    st.integers(-1000, 1000), st.text(alphabet="ab/~%é", min_size=1, max_size=4)
)


@settings(max_examples=80, deadline=None)
@given(
    writes=st.lists(st.tuples(st.sampled_from(["p", "q"]), sort_values), max_size=30),
    low=sort_values,
    high=sort_values,
    limit=st.integers(1, 5),
    reverse=st.booleans(),
)
def test_query_pages_agree_with_a_sorted_model(
    writes: list[tuple[str, Any]], low: Any, high: Any, limit: int, reverse: bool
) -> None:
    def order(value: Any) -> tuple[int, Any]:
        return (0, value) if isinstance(value, int) else (1, value.encode())

    async def run() -> list[Any]:
        table = Table("m", memory_backend().kv, key="pk", sort_key="sk")
        for pk, sk in writes:
            await table.put({"pk": pk, "sk": sk})
        seen: list[Any] = []
        cursor = None
        while True:
            page = await table.query(
                "p", between=(low, high), limit=limit, reverse=reverse, cursor=cursor
            )
            seen.extend(item["sk"] for item in page.items)
            if page.cursor is None:
                return seen
            cursor = page.cursor

    model = sorted(
        {sk for pk, sk in writes if pk == "p" and order(low) <= order(sk) <= order(high)},
        key=order,
        reverse=reverse,
    )
    assert asyncio.run(run()) == model


@settings(max_examples=80, deadline=None)
@given(
    writes=st.lists(sort_values, max_size=25),
    after=st.none() | sort_values,
    before=st.none() | sort_values,
    limit=st.integers(1, 4),
    reverse=st.booleans(),
)
def test_exclusive_bounds_page_like_a_filtered_model(
    writes: list[Any], after: Any, before: Any, limit: int, reverse: bool
) -> None:
    def order(value: Any) -> tuple[int, Any]:
        return (0, value) if isinstance(value, int) else (1, value.encode())

    async def run() -> list[Any]:
        table = Table("m", memory_backend().kv, key="pk", sort_key="sk")
        for sk in writes:
            await table.put({"pk": "p", "sk": sk})
        seen: list[Any] = []
        cursor = None
        while True:
            page = await table.query(
                "p", after=after, before=before, limit=limit, reverse=reverse, cursor=cursor
            )
            seen.extend(item["sk"] for item in page.items)
            if page.cursor is None:
                return seen
            cursor = page.cursor

    bounds = [b for b in (after, before) if b is not None]
    kinds = {type(b) for b in bounds}

    def in_range(sk: Any) -> bool:
        if len(kinds) == 1 and type(sk) not in kinds:
            return False  # one kind of bound: only sort keys of that kind compare
        if after is not None and not order(sk) > order(after):
            return False
        return before is None or order(sk) < order(before)

    model = sorted({sk for sk in writes if in_range(sk)}, key=order, reverse=reverse)
    assert asyncio.run(run()) == model
