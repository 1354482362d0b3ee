"""Counters: atomic increments and bounded decrements that never oversell."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from reflow.backends import Backend
from reflow.state.counters import Counters, InsufficientError


@pytest.fixture
async def counters(backend: Backend) -> AsyncIterator[Counters]:
    made = Counters.for_backend(backend)  # the Lua path on Redis, CAS elsewhere
    try:
        yield made
    finally:
        await made.close()


async def test_incr_and_get(counters: Counters) -> None:
    assert await counters.get("views") == 0
    assert await counters.incr("views") == 1
    assert await counters.incr("views", 5) == 6
    assert await counters.incr("views", -2) == 4
    assert await counters.get("views") == 4


async def test_decrement_if_stops_at_the_minimum(counters: Counters) -> None:
    await counters.set("stock", 3)
    assert await counters.decrement_if("stock", 2) == 1
    with pytest.raises(InsufficientError) as caught:
        await counters.decrement_if("stock", 2)
    assert (caught.value.key, caught.value.available, caught.value.wanted) == ("stock", 1, 2)
    assert await counters.get("stock") == 1
    assert await counters.decrement_if("stock", 1) == 0


async def test_decrement_if_honours_a_custom_floor(counters: Counters) -> None:
    await counters.set("seats", 10)
    assert await counters.decrement_if("seats", 7, minimum=2) == 3
    with pytest.raises(InsufficientError):
        await counters.decrement_if("seats", 2, minimum=2)


async def test_negative_amount_is_refused(counters: Counters) -> None:
    with pytest.raises(ValueError):
        await counters.decrement_if("x", -1)


async def test_kv_path_and_incr_share_one_key(backend: Backend) -> None:
    plain = Counters(backend.kv)
    await plain.incr("k", 5)
    assert await plain.decrement_if("k", 2) == 3
    assert await plain.get("k") == 3


async def test_concurrent_reservations_in_one_process_never_oversell(counters: Counters) -> None:
    await counters.set("sku", 20)

    async def reserve() -> bool:
        try:
            await counters.decrement_if("sku", 1)
        except InsufficientError:
            return False
        return True

    results = await asyncio.gather(*(reserve() for _ in range(60)))
    assert sum(results) == 20
    assert await counters.get("sku") == 0
