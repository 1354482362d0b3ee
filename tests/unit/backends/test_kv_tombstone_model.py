"""With tombstone collection anywhere in a run, no key ever returns to a version.

Hypothesis drives puts (plain, compare-and-set at the current version, at 0,
at a stale version), deletes, counters, transactions, clock jumps and
collections (grace 0 or 60 s, one key or many per run) into one engine, and
checks every answer against a model that knows values, expiries and, per key,
every version the engine ever handed out. Version numbers' absolute values
are the engine's; the model only demands that each new one is above all the
key's earlier ones and that compare-and-set obeys the last one.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from reflow.backends import Backend, Delete, Operation, Put, open_backend
from reflow.errors import TransactionConflictError, VersionConflictError
from reflow.testing import FakeClock
from tests.conftest import REDIS_URL, require_server

T = TypeVar("T")

KEYS = st.sampled_from(["a", "b", "c/1"])
DIGITS = st.integers(min_value=0, max_value=9).map(lambda n: str(n).encode())
TTLS = st.sampled_from([None, None, 5.0])
MODES = st.sampled_from(["plain", "current", "zero", "stale"])


@dataclass
class Live:
    """What the model knows of a live key."""

    value: bytes
    version: int
    expires_at: float | None


def _url(kind: str, directory: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{directory / 'm.db'}"
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}prefix=test-{uuid.uuid4().hex[:12]}:"


class TombstoneModel(RuleBasedStateMachine):
    """One engine against the model; collections interleaved anywhere."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.directory = Path(tempfile.mkdtemp())
        url = _url(self.kind, self.directory)
        self.backend: Backend = self.run(
            open_backend(url, data_dir=self.directory, clock=self.clock)
        )
        self.live: dict[str, Live] = {}
        self.seen: dict[str, set[int]] = {}  # every version each key was given

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)

    def teardown(self) -> None:
        self.run(self.backend.close())
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- the model ---------------------------------------------------------

    def current(self, key: str) -> Live | None:
        entry = self.live.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self.clock.time():
            del self.live[key]
            return None
        return entry

    def given(self, key: str, version: int) -> None:
        """The engine gave ``key`` a new version: above every earlier one."""
        earlier = self.seen.setdefault(key, set())
        assert all(version > old for old in earlier), (key, version, sorted(earlier))
        earlier.add(version)

    def expectation(self, key: str, mode: str) -> int | None:
        entry = self.current(key)
        if mode == "plain":
            return None
        if mode == "current":
            return entry.version if entry else 0
        if mode == "zero":
            return 0
        stale = sorted(self.seen.get(key, set()) - {entry.version if entry else -1})
        return stale[-1] if stale else None

    # --- rules -------------------------------------------------------------

    @rule(key=KEYS, value=DIGITS, ttl=TTLS, mode=MODES)
    def put(self, key: str, value: bytes, ttl: float | None, mode: str) -> None:
        expect = self.expectation(key, mode)
        entry = self.current(key)
        applies = expect is None or expect == (entry.version if entry else 0)
        kv: Any = self.backend.kv
        try:
            version = self.run(kv.put(key, value, expect_version=expect, ttl=ttl))
        except VersionConflictError as exc:
            assert not applies, (key, expect, exc)
            assert exc.actual == (entry.version if entry else 0)
            return
        assert applies, (key, expect, version)
        self.given(key, version)
        expires = None if ttl is None else self.clock.time() + ttl
        self.live[key] = Live(value, version, expires)

    @rule(key=KEYS, conditional=st.booleans())
    def delete(self, key: str, conditional: bool) -> None:
        entry = self.current(key)
        expect = (entry.version if entry else 0) if conditional else None
        assert self.run(self.backend.kv.delete(key, expect_version=expect)) is (entry is not None)
        self.live.pop(key, None)

    @rule(key=KEYS, by=st.integers(min_value=-3, max_value=3))
    def incr(self, key: str, by: int) -> None:
        entry = self.current(key)
        total = self.run(self.backend.kv.incr(key, by))
        assert total == (int(entry.value) if entry else 0) + by
        item = self.run(self.backend.kv.get(key))
        assert item is not None and item.value == str(total).encode()
        self.given(key, item.version)
        self.live[key] = Live(item.value, item.version, entry.expires_at if entry else None)

    @rule(first=KEYS, second=KEYS, value=DIGITS, mode=MODES)
    def transact(self, first: str, second: str, value: bytes, mode: str) -> None:
        if first == second:
            return
        expect = self.expectation(first, mode)
        entry = self.current(first)
        applies = expect is None or expect == (entry.version if entry else 0)
        ops: list[Operation] = [Put(first, value, expect_version=expect), Delete(second)]
        try:
            versions = self.run(self.backend.kv.transact(ops))
        except TransactionConflictError:
            assert not applies
            return
        assert applies
        self.given(first, versions[0])
        self.live[first] = Live(value, versions[0], None)
        self.live.pop(second, None)

    @rule(seconds=st.sampled_from([1.0, 4.0, 30.0, 61.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(grace=st.sampled_from([0.0, 60.0]), limit=st.sampled_from([1, 1000]))
    def collect(self, grace: float, limit: int) -> None:
        kv: Any = self.backend.kv
        dropped = self.run(kv.collect(grace=grace, limit=limit))
        assert 0 <= dropped <= limit

    # --- what every reader sees --------------------------------------------

    @invariant()
    def reads_match_the_model(self) -> None:
        expected = {}
        for key in sorted(self.live):
            entry = self.current(key)
            if entry is not None:
                expected[key] = (entry.value, entry.version, entry.expires_at)
        items = self.run(self.backend.kv.scan())
        assert {i.key: (i.value, i.version, i.expires_at) for i in items} == expected
        for key in ("a", "b", "c/1"):
            item = self.run(self.backend.kv.get(key))
            found = None if item is None else (item.value, item.version, item.expires_at)
            assert found == expected.get(key)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_no_key_returns_to_an_old_version(kind: str) -> None:
    if kind == "redis":
        require_server(REDIS_URL, "the Redis server")
    machine = type(f"TombstoneModel_{kind}", (TombstoneModel,), {"kind": kind})
    run_state_machine_as_test(
        machine, settings=settings(max_examples=30, stateful_step_count=40, deadline=None)
    )
