"""Async invocations on the real engines: SQLite and Redis, not only the memory backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from reflow import App, Context
from reflow.backends import Backend, open_backend
from reflow.backends.protocols import Log
from reflow.functions import Runtime, dead_letters, events_stream
from reflow.functions.invocations import GROUP
from reflow.testing.clock import FakeClock
from tests.conftest import REDIS_URL, require_server

app = App("engines", root=".")
runs: list[tuple[str, Any]] = []


class Release:
    """What ``waits`` waits for: a fresh event per test (see the ``engine`` fixture).

    An asyncio.Event binds to the loop of its first waiter, and every test
    runs on a loop of its own: one module-level event made ``waits`` raise
    RuntimeError ("bound to a different event loop") in whichever test came
    second, so the Redis run tested a failed attempt and its retry instead of
    an event held by a stopped runtime, and failed when the stop fell
    between the retry's append and the old entry's ack (three runs).
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()


release = Release()


@app.function(retries=1)
async def fails(event: Any, context: Context) -> None:
    """Always fail."""
    runs.append(("fails", event))
    raise RuntimeError("no")


@app.function
async def waits(event: Any, context: Context) -> str:
    """Block until released."""
    runs.append(("waits", event))
    await release.event.wait()
    return "ok"


def url_of(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'functions.db'}"
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}prefix=test-fn-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["sqlite", "redis"])
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, FakeClock]]:
    runs.clear()
    release.event = asyncio.Event()  # created on this test's loop, bound to it
    yield url_of(request.param, tmp_path), FakeClock()


async def opened(url: str, clock: FakeClock, tmp_path: Path) -> Backend:
    return await open_backend(url, data_dir=tmp_path, clock=clock)


async def drive(clock: FakeClock, done: Callable[[], bool], idle_sleepers: int = 1) -> None:
    for _ in range(1500):
        if done():
            return
        if clock.sleepers > idle_sleepers:
            clock.advance(30)
        await asyncio.sleep(0.005)
    raise AssertionError("not reached")


async def acknowledged(log: Log, function: str) -> bool:
    """Whether nothing of ``function``'s events is pending, waiting a little for the last ack.

    An outcome is recorded (dead letter, metrics) before its entry is
    acknowledged: a runtime stopped in between leaves the entry pending.
    """
    for _ in range(200):
        if not await log.pending(events_stream(function), GROUP):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_failed_event_is_retried_then_dead_lettered_on_the_engine(
    engine: tuple[str, FakeClock], tmp_path: Path
) -> None:
    url, clock = engine
    backend = await opened(url, clock, tmp_path)
    try:
        async with Runtime(app, backend=backend) as runtime:
            await runtime.invoke_async("fails", {"n": 1})
            await drive(clock, lambda: runtime.metrics["fails"].dead_letters == 1)
            assert await acknowledged(backend.log, "fails")
        (letter,) = await dead_letters(backend.log, "fails")
        assert letter["attempts"] == 2 and letter["payload"] == {"n": 1}
        assert letter["error"]["errorMessage"] == "no"
        assert runs == [("fails", {"n": 1}), ("fails", {"n": 1})]
    finally:
        await backend.close()


async def test_an_event_held_by_a_dead_runtime_is_run_by_another_process_runtime(
    engine: tuple[str, FakeClock], tmp_path: Path
) -> None:
    url, clock = engine
    first_backend = await opened(url, clock, tmp_path)
    second_backend = await opened(url, clock, tmp_path)  # as another process would
    try:
        first = Runtime(app, backend=first_backend)
        await first.start()
        await first.invoke_async("waits", {"n": 2})
        await drive(clock, lambda: bool(runs))
        await first.stop()  # it never acknowledged
        # Held, not failed: the first attempt was still waiting when its runtime stopped.
        assert first.metrics["waits"].async_retries == 0
        (held,) = await first_backend.log.pending(events_stream("waits"), GROUP)
        assert held.deliveries == 1
        release.event.set()
        async with Runtime(app, backend=second_backend) as second:
            clock.advance(600)  # past the lease
            await drive(clock, lambda: second.metrics["waits"].invocations == 1)
            assert await acknowledged(second_backend.log, "waits")
        assert second.metrics["waits"].errors == 0
        assert runs == [("waits", {"n": 2}), ("waits", {"n": 2})]
    finally:
        await first_backend.close()
        await second_backend.close()
