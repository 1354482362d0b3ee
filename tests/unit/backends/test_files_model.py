"""The files engine answers exactly like the in-memory Blobs model.

Hypothesis puts and deletes objects under keys built from awkward segments —
a key and keys below it, ``-`` (which sorts before ``/``), non-ASCII, a
segment too long for a file name — and every get, head and listing must
match the memory backend's, in the same order.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from reflow.backends.files import FileBlobs
from reflow.backends.memory import MemoryBlobs
from reflow.testing import FakeClock

T = TypeVar("T")

SEGMENTS = st.sampled_from(["a", "b", "a-b", "a.d", "é", "x" * 300])
KEYS = st.lists(SEGMENTS, min_size=1, max_size=3).map("/".join)
PREFIXES = st.sampled_from(["", "a", "a/", "a-", "b/", "é", "x", "a/a"])


class FilesSameAsMemory(RuleBasedStateMachine):
    """Every operation goes to both stores; their answers must match."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        clock = FakeClock()
        self.directory = Path(tempfile.mkdtemp())
        self.model = MemoryBlobs(clock)
        self.files = FileBlobs(self.directory / "blobs", clock)

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)

    def teardown(self) -> None:
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(key=KEYS, data=st.binary(max_size=16), kind=st.sampled_from(["text/plain", "a/b"]))
    def put(self, key: str, data: bytes, kind: str) -> None:
        meta = {"k": key[:10]}
        expected = self.run(self.model.put(key, data, content_type=kind, metadata=meta))
        assert self.run(self.files.put(key, data, content_type=kind, metadata=meta)) == expected

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.run(self.files.delete(key)) == self.run(self.model.delete(key))

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        assert self.run(self.files.get(key)) == self.run(self.model.get(key))
        assert self.run(self.files.head(key)) == self.run(self.model.head(key))

    @rule(prefix=PREFIXES, limit=st.none() | st.integers(0, 3), after=st.none() | KEYS)
    def list(self, prefix: str, limit: int | None, after: str | None) -> None:
        expected = self.run(self.model.list(prefix, start_after=after, limit=limit))
        assert self.run(self.files.list(prefix, start_after=after, limit=limit)) == expected

    @invariant()
    def everything_agrees(self) -> None:
        assert self.run(self.files.list()) == self.run(self.model.list())


TestFilesSameAsMemory = FilesSameAsMemory.TestCase
TestFilesSameAsMemory.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)
