"""The SQLite engine behaves exactly like the in-memory model.

Hypothesis drives the same random sequence of operations — appends, group
reads with leases, acks, trims, clock jumps; puts, compare-and-sets, deletes,
counters, transactions — into a memory backend and a SQLite backend that share
one ``FakeClock``, and every answer must be identical: ids, delivery counts,
pending lists, versions, errors.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reflow.backends import Backend, Check, Delete, Put, memory_backend, open_backend
from reflow.errors import BackendError
from reflow.testing import FakeClock

T = TypeVar("T")

STREAMS = st.sampled_from(["s1", "s2"])
GROUPS = st.sampled_from(["g1", "g2"])
CONSUMERS = st.sampled_from(["a", "b", "c"])
KEYS = st.sampled_from(["k", "k/1", "k/2", "ka", "z"])
VERSIONS = st.none() | st.integers(min_value=0, max_value=4)


class _BothBackends(RuleBasedStateMachine):
    """Every operation goes to both backends; their answers must match."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.directory = Path(tempfile.mkdtemp())
        self.model = memory_backend(self.clock)
        self.real: Backend = self.run(
            open_backend(
                f"sqlite:///{self.directory / 'r.db'}", data_dir=self.directory, clock=self.clock
            )
        )
        self.delivered: list[tuple[str, str, str]] = []  # (stream, group, id) ever read

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)

    def both(self, call: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``call`` on both backends; compare results (or error types)."""
        primitive, method = call.split(".")
        outcomes = []
        for backend in (self.model, self.real):
            target = getattr(getattr(backend, primitive), method)
            try:
                outcomes.append(("ok", self.run(target(*args, **kwargs))))
            except (BackendError, ValueError) as exc:
                outcomes.append(("error", type(exc).__name__))
        assert outcomes[0] == outcomes[1], f"{call}{args}{kwargs}: {outcomes}"
        return outcomes[0][1]

    def teardown(self) -> None:
        self.run(self.real.close())
        self.run(self.model.close())
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class LogSameAsMemory(_BothBackends):
    """Streams, groups, leases, acks and trims."""

    @rule(stream=STREAMS, data=st.binary(max_size=8))
    def append(self, stream: str, data: bytes) -> None:
        self.both("log.append", stream, data)

    @rule(
        stream=STREAMS,
        group=GROUPS,
        consumer=CONSUMERS,
        count=st.integers(1, 4),
        lease=st.sampled_from([5.0, 30.0]),
    )
    def read(self, stream: str, group: str, consumer: str, count: int, lease: float) -> None:
        entries = self.both("log.read", stream, group, consumer, count=count, lease=lease)
        self.delivered.extend((stream, group, e.id) for e in entries)

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        stream, group, entry_id = data.draw(st.sampled_from(self.delivered))
        self.both("log.ack", stream, group, [entry_id])

    @rule(stream=STREAMS, group=GROUPS, start=st.sampled_from(["0", "$"]))
    def create_group(self, stream: str, group: str, start: str) -> None:
        self.both("log.create_group", stream, group, start=start)

    @rule(stream=STREAMS, max_length=st.integers(0, 4))
    def trim(self, stream: str, max_length: int) -> None:
        self.both("log.trim", stream, max_length=max_length)

    @rule(seconds=st.sampled_from([0.0005, 0.002, 4.0, 6.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def logs_agree(self) -> None:
        for stream in ("s1", "s2"):
            self.both("log.range", stream)
            self.both("log.length", stream)
            for group in ("g1", "g2"):
                self.both("log.pending", stream, group)


class KVSameAsMemory(_BothBackends):
    """Versions, compare-and-set, TTLs, counters, scans and transactions."""

    @rule(key=KEYS, value=st.binary(max_size=4), expect=VERSIONS, ttl=st.none() | st.just(5.0))
    def put(self, key: str, value: bytes, expect: int | None, ttl: float | None) -> None:
        self.both("kv.put", key, value, expect_version=expect, ttl=ttl)

    @rule(key=KEYS, expect=VERSIONS)
    def delete(self, key: str, expect: int | None) -> None:
        self.both("kv.delete", key, expect_version=expect)

    @rule(key=st.sampled_from(["n1", "n2"]), by=st.integers(-3, 3), ttl=st.none() | st.just(5.0))
    def incr(self, key: str, by: int, ttl: float | None) -> None:
        self.both("kv.incr", key, by, ttl=ttl)

    @rule(
        ops=st.lists(
            st.one_of(
                st.builds(Put, KEYS, st.binary(max_size=3), VERSIONS),
                st.builds(Delete, KEYS, VERSIONS),
                st.builds(Check, KEYS, st.integers(0, 4)),
            ),
            max_size=4,
        )
    )
    def transact(self, ops: list[Put | Delete | Check]) -> None:
        self.both("kv.transact", ops)

    @rule(seconds=st.sampled_from([1.0, 4.0, 6.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def keys_agree(self) -> None:
        self.both("kv.scan")
        self.both("kv.scan", "k/")
        self.both("kv.get_many", ["k", "z", "n1", "n2", "missing"])


SETTINGS = settings(max_examples=25, stateful_step_count=30, deadline=None)
TestLogSameAsMemory = LogSameAsMemory.TestCase
TestLogSameAsMemory.settings = SETTINGS
TestKVSameAsMemory = KVSameAsMemory.TestCase
TestKVSameAsMemory.settings = SETTINGS
