"""At-least-once delivery: retries with the same event id, dead letters, redrive, replay."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reflow.backends import Backend, memory_backend
from reflow.errors import BackendError, InvalidEventError
from reflow.events.bus import EventBus
from reflow.events.delivery import Delivery, RetryPolicy, Rule
from reflow.events.dlq import DeadLetter
from reflow.events.model import Event
from reflow.events.targets import CallableTarget
from reflow.testing.clock import FakeClock
from tests.functional.events.helpers import Recorder, eventually

PATTERN = {"source": ["cms"], "detail-type": ["ArticlePublished"]}


@pytest.fixture
def clock() -> FakeClock:
    # autojump: every back-off sleep jumps virtual time straight to its end.
    return FakeClock(autojump=True)


@pytest.fixture
async def backend(clock: FakeClock) -> AsyncIterator[Backend]:
    backend = memory_backend(clock)
    yield backend
    await backend.close()


def make_bus(backend: Backend, clock: FakeClock, *rules: Rule) -> EventBus:
    bus = EventBus(backend, clock=clock, rng=random.Random(7))
    for rule in rules:
        bus.add_rule(rule)
    return bus


def article(number: int = 1) -> Event:
    return Event(source="cms", type="ArticlePublished", data={"id": number})


async def test_target_failing_twice_succeeds_on_third_attempt_with_same_event_id(
    backend: Backend, clock: FakeClock
) -> None:
    recorder = Recorder(failures=2)
    rule = Rule("render", PATTERN, CallableTarget("render", recorder))
    bus = make_bus(backend, clock, rule)
    await bus.start()
    try:
        [event_id] = await bus.put([article()])
        await eventually(lambda: len(recorder.calls) == 3)
    finally:
        await bus.stop()
    assert [call[0] for call in recorder.calls] == [event_id] * 3
    assert [call[1] for call in recorder.calls] == [1, 2, 3]
    assert await bus.dead_letters.list() == []


async def test_always_failing_target_is_dead_lettered_after_exactly_max_attempts(
    backend: Backend, clock: FakeClock
) -> None:
    recorder = Recorder(failures=10**6)
    policy = RetryPolicy(max_attempts=5, base=10.0, cap=600.0)
    rule = Rule("render", PATTERN, CallableTarget("render", recorder), retry=policy)
    bus = make_bus(backend, clock, rule)
    started = clock.time()
    await bus.start()
    try:
        [event_id] = await bus.put([article()])
        await eventually(lambda: len(recorder.calls) >= 5)
        letters = await _letters_when_present(bus)
    finally:
        await bus.stop()
    assert len(recorder.calls) == 5
    [letter] = letters
    assert letter.rule == "render"
    assert letter.event.id == event_id
    assert letter.event.data == {"id": 1}
    assert letter.attempts == 5
    assert letter.error == {"type": "RuntimeError", "message": "failure 5"}
    # Four back-offs of at least 5, 10, 20 and 40 s passed, on the virtual clock.
    assert clock.time() - started >= 75.0


async def test_event_older_than_max_event_age_goes_to_the_dead_letter_queue(
    backend: Backend, clock: FakeClock
) -> None:
    recorder = Recorder(failures=10**6)
    policy = RetryPolicy(max_attempts=100, max_event_age=60.0, base=10.0, cap=40.0)
    rule = Rule("render", PATTERN, CallableTarget("render", recorder), retry=policy)
    bus = make_bus(backend, clock, rule)
    await bus.start()
    try:
        await bus.put([article()])
        letters = await _letters_when_present(bus)
    finally:
        await bus.stop()
    assert 1 < len(recorder.calls) < 100
    assert letters[0].attempts == len(recorder.calls)


async def test_redrive_delivers_a_dead_letter_again_and_empties_the_queue(
    backend: Backend, clock: FakeClock
) -> None:
    recorder = Recorder(failures=2)
    policy = RetryPolicy(max_attempts=2)
    rule = Rule("render", PATTERN, CallableTarget("render", recorder), retry=policy)
    bus = make_bus(backend, clock, rule)
    await bus.start()
    try:
        [event_id] = await bus.put([article()])
        await _letters_when_present(bus)
        redriven = await bus.dead_letters.redrive("render")
        await eventually(lambda: len(recorder.calls) == 3)
        remaining = await bus.dead_letters.list()
    finally:
        await bus.stop()
    assert redriven == [event_id]
    assert recorder.calls[-1][0] == event_id
    assert remaining == []


async def test_slow_failing_rule_does_not_hold_up_another_rule(
    backend: Backend, clock: FakeClock
) -> None:
    failing = Recorder(failures=10**6)
    healthy = Recorder()
    policy = RetryPolicy(max_attempts=3)
    bus = make_bus(
        backend,
        clock,
        Rule("broken", PATTERN, CallableTarget("broken", failing), retry=policy),
        Rule("fine", PATTERN, CallableTarget("fine", healthy)),
    )
    await bus.start()
    try:
        ids = await bus.put([article(n) for n in range(5)])
        await eventually(lambda: len(healthy.calls) == 5)
        await eventually(lambda: len(failing.calls) == 15)
    finally:
        await bus.stop()
    assert sorted(call[0] for call in healthy.calls) == sorted(ids)


async def test_event_matching_no_rule_is_archived_but_delivered_nowhere(
    backend: Backend, clock: FakeClock
) -> None:
    recorder = Recorder()
    bus = make_bus(backend, clock, Rule("render", PATTERN, CallableTarget("render", recorder)))
    await bus.start()
    try:
        await bus.put([Event(source="other", type="Thing"), article()])
        await eventually(lambda: len(recorder.calls) == 1)
    finally:
        await bus.stop()
    assert await backend.log.length("events.bus.default") == 2


async def test_put_refuses_the_whole_batch_naming_the_bad_entry(
    backend: Backend, clock: FakeClock
) -> None:
    bus = make_bus(backend, clock)
    good = {"source": "cms", "detail-type": "A", "detail": {}}
    with pytest.raises(InvalidEventError) as caught:
        await bus.put([good, {"source": "cms", "detail-type": "", "detail": {}}])
    assert caught.value.field == "entries[1].type"
    assert await backend.log.length("events.bus.default") == 0


async def test_put_refuses_an_event_over_256_kb(backend: Backend, clock: FakeClock) -> None:
    bus = make_bus(backend, clock)
    with pytest.raises(Exception, match="limit is 262144 bytes"):
        await bus.put([{"Source": "cms", "DetailType": "Big", "Detail": '"' + "x" * 270_000 + '"'}])


async def test_put_events_entry_shape_is_accepted_and_stamped_with_bus_time(
    backend: Backend, clock: FakeClock
) -> None:
    recorder = Recorder()
    bus = make_bus(backend, clock, Rule("render", PATTERN, CallableTarget("render", recorder)))
    await bus.start()
    try:
        await bus.put([{"Source": "cms", "DetailType": "ArticlePublished", "Detail": '{"id": 9}'}])
        await eventually(lambda: len(recorder.calls) == 1)
    finally:
        await bus.stop()
    payload = recorder.calls[0][2]
    assert isinstance(payload, dict)
    assert payload["detail"] == {"id": 9}
    assert payload["time"].endswith("Z")


async def test_replay_redelivers_archived_events_in_the_window_marked_as_replays(
    backend: Backend, clock: FakeClock
) -> None:
    recorder = Recorder()
    other = Recorder()
    bus = make_bus(
        backend,
        clock,
        Rule("render", PATTERN, CallableTarget("render", recorder)),
        Rule("audit", PATTERN, CallableTarget("audit", other)),
    )
    await bus.start()
    try:
        await bus.put([article(1)])
        clock.advance(100)
        window_start = clock.time()
        [second] = await bus.put([article(2)])
        clock.advance(100)
        await bus.put([article(3)])
        await eventually(lambda: len(recorder.calls) == 3 and len(other.calls) == 3)
        name, queued = await bus.replay(
            "default", window_start, window_start + 50, rule="render", name="fix-1"
        )
        await eventually(lambda: len(recorder.calls) == 4)
    finally:
        await bus.stop()
    assert queued == 1
    event_id, _, payload = recorder.calls[-1]
    assert event_id == second
    assert isinstance(payload, dict)
    assert payload["replay-name"] == "fix-1"
    assert len(other.calls) == 3


async def _letters_when_present(bus: EventBus) -> list[DeadLetter]:
    for _ in range(1000):
        letters = await bus.dead_letters.list()
        if letters:
            return letters
        await asyncio.sleep(0.01)
    raise AssertionError("no dead letter appeared")


class FlakyLog:
    """A Log whose first ``failures`` reads fail, as a backend hiccup would."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise BackendError("the backend went away for a moment")
        return await self.inner.read(*args, **kwargs)


async def test_dispatcher_and_workers_survive_failing_reads(
    backend: Backend, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = dataclasses.replace(backend, log=FlakyLog(backend.log, failures=2))
    recorder = Recorder()
    bus = make_bus(flaky, clock, Rule("render", PATTERN, CallableTarget("render", recorder)))
    await bus.start()
    try:
        [event_id] = await bus.put([article()])
        await eventually(lambda: len(recorder.calls) == 1)
    finally:
        await bus.stop()
    assert recorder.calls[0][0] == event_id
    assert "retrying in 1 s" in caplog.text


async def test_retry_waiting_out_its_backoff_does_not_stall_fresh_events() -> None:
    clock = FakeClock()  # no autojump: the back-off only ends if the test says so
    backend = memory_backend(clock)
    calls: list[int] = []

    def target(payload: Any, delivery: Delivery) -> None:
        calls.append(payload["detail"]["id"])
        if payload["detail"]["id"] == 0:
            raise RuntimeError("the first event always fails")

    policy = RetryPolicy(max_attempts=3, base=600.0, cap=600.0)
    bus = EventBus(backend, clock=clock, concurrency=1, rng=random.Random(2))
    bus.add_rule(Rule("render", PATTERN, CallableTarget("render", target), retry=policy))
    await bus.start()
    try:
        await bus.put([article(0)])
        await eventually(lambda: calls == [0])
        await eventually(lambda: clock.sleepers == 1)  # its retry waits out the back-off
        await bus.put([article(1), article(2)])
        await eventually(lambda: calls == [0, 1, 2])
    finally:
        await bus.stop()
        await backend.close()
