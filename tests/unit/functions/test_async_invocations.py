"""Event invocations over the Log: durable first, retried on the Clock, never dropped."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from reflow import App, Context
from reflow.backends import Backend, memory_backend
from reflow.errors import (
    BackendUnavailableError,
    InvalidEventError,
    RegistrationError,
    ThrottledError,
)
from reflow.functions import Runtime, backoff, dead_letters, events_stream
from reflow.functions.invocations import AsyncInvocations, Destination, parse_destination
from reflow.functions.runtime import metrics_key, new_request_id
from reflow.testing.clock import FakeClock

app = App("queued", root=".")
attempts: dict[str, list[float]] = {}
gate: dict[str, asyncio.Event] = {}
CLOCK_START = 1_700_000_000.0


def note(name: str, context: Context) -> None:
    attempts.setdefault(name, []).append(context._clock.time() - CLOCK_START)


@app.function(on_success="recorder")
async def ok(event: Any, context: Context) -> dict[str, Any]:
    """Succeed with the event doubled."""
    note("ok", context)
    return {"doubled": event["n"] * 2}


@app.function(on_failure="flow:cleanup")
async def failing(event: Any, context: Context) -> None:
    """Always fail."""
    note("failing", context)
    raise RuntimeError(f"cannot handle {event['n']}")


@app.function(retries=0, on_failure="bus:alerts")
async def no_retry(event: Any, context: Context) -> None:
    """Fail once, with no retries allowed."""
    note("no_retry", context)
    raise ValueError("nope")


@app.function(max_event_age=90)
async def short_lived(event: Any, context: Context) -> None:
    """Fail, under a 90-second maximum event age."""
    note("short_lived", context)
    raise RuntimeError("still failing")


@app.function
async def recorder(event: Any, context: Context) -> None:
    """Destination: remember what it was given."""
    attempts.setdefault("recorder", []).append(0.0)
    recorded.append(event)


@app.function
async def blocking(event: Any, context: Context) -> str:
    """Wait until the test releases it."""
    note("blocking", context)
    await gate["blocking"].wait()
    return "released"


@app.function(reserved=1)
async def one_at_a_time(event: Any, context: Context) -> None:
    """Take a moment, under reserved concurrency 1."""
    await asyncio.sleep(0.01)


@app.function
async def picky(event: Any, context: Context) -> str:
    """Fail the events marked to fail; succeed on the others."""
    note("picky", context)
    if event.get("fail"):
        raise RuntimeError("marked to fail")
    recorded.append(event)
    return "ok"


@app.function(reserved=0, retries=1)
async def switched_off(event: Any, context: Context) -> None:
    """Reserved concurrency 0: never runs."""
    note("switched_off", context)


recorded: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    attempts.clear()
    recorded.clear()
    gate.clear()


async def drive(clock: FakeClock, done: Callable[[], bool], step: float = 30.0) -> None:
    """Let the runtime work, advancing virtual time whenever it waits on the clock."""
    for _ in range(2000):
        if done():
            return
        # One sleeper is always there: the runtime's metrics publisher. Time
        # moves only when something else (a back-off) waits on the clock.
        if clock.sleepers > 1:
            clock.advance(step)
        await asyncio.sleep(0.002)
    raise AssertionError("the runtime did not get there")


def setup() -> tuple[FakeClock, Backend]:
    clock = FakeClock(CLOCK_START)
    return clock, memory_backend(clock)


async def test_an_accepted_invocation_is_in_the_log_when_invoke_async_returns() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        gate["blocking"] = asyncio.Event()
        request_id = await runtime.invoke_async("blocking", {"n": 1})
        entries = await backend.log.range(events_stream("blocking"))
        assert [json.loads(e.data)["id"] for e in entries] == [request_id]
        assert json.loads(entries[0].data)["payload"] == {"n": 1}
        gate["blocking"].set()
        await drive(clock, lambda: "blocking" in attempts)


async def test_success_sends_lambdas_destination_record_to_the_on_success_function() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend, region="eu-west-1") as runtime:
        request_id = await runtime.invoke_async("ok", {"n": 21})
        await drive(clock, lambda: bool(recorded))
    (record,) = recorded
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": "arn:reflow:lambda:eu-west-1:000000000000:function:ok",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert record["requestPayload"] == {"n": 21}
    assert record["responsePayload"] == {"doubled": 42}
    assert record["responseContext"]["statusCode"] == 200


async def test_failure_is_retried_after_one_then_two_minutes_then_dead_lettered() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        request_id = await runtime.invoke_async("failing", {"n": 7})
        await drive(clock, lambda: runtime.metrics["failing"].dead_letters == 1, step=10)
        letters = await dead_letters(backend.log, "failing")
        flow_records = await backend.log.range(Destination("flow", "cleanup").stream)
        pending = await backend.log.pending(events_stream("failing"), "functions")
    # Three attempts: at once, a minute later, two minutes after that.
    assert attempts["failing"] == [0.0, 60.0, 180.0]
    assert [backoff(1), backoff(2)] == [60.0, 120.0]
    (letter,) = letters
    assert letter["requestId"] == request_id
    assert letter["payload"] == {"n": 7}
    assert letter["attempts"] == 3
    assert letter["error"]["errorType"] == "RuntimeError"
    assert letter["error"]["errorMessage"] == "cannot handle 7"
    assert letter["condition"] == "RetriesExhausted"
    (flow_record,) = [json.loads(e.data) for e in flow_records]
    assert flow_record["requestContext"]["condition"] == "RetriesExhausted"
    assert flow_record["requestContext"]["approximateInvokeCount"] == 3
    assert flow_record["responsePayload"]["errorType"] == "RuntimeError"
    assert flow_record["responseContext"]["functionError"] == "Unhandled"
    assert pending == []  # every entry was acknowledged once its outcome was recorded


async def test_zero_retries_dead_letters_after_the_first_failure() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        await runtime.invoke_async("no_retry", {"n": 1})
        await drive(clock, lambda: runtime.metrics["no_retry"].dead_letters == 1)
        (letter,) = await dead_letters(backend.log, "no_retry")
        bus = await backend.log.range(Destination("bus", "alerts").stream)
    assert attempts["no_retry"] == [0.0]
    assert letter["attempts"] == 1 and letter["error"]["errorType"] == "ValueError"
    assert len(bus) == 1


async def test_a_retry_that_would_pass_the_maximum_event_age_is_not_made() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        await runtime.invoke_async("short_lived", {})
        await drive(clock, lambda: runtime.metrics["short_lived"].dead_letters == 1, step=10)
        (letter,) = await dead_letters(backend.log, "short_lived")
    # The second attempt at 60 s fits in 90 s; a third at 180 s would not.
    assert attempts["short_lived"] == [0.0, 60.0]
    assert letter["attempts"] == 2


async def test_an_event_older_than_its_maximum_age_goes_to_the_dlq_unrun() -> None:
    clock, backend = setup()
    queued = Runtime(app, backend=backend)  # never started: only queues
    await AsyncInvocations(queued, backend.log, clock).submit("short_lived", {"late": True})
    clock.advance(91)
    async with Runtime(app, backend=backend) as runtime:
        await drive(clock, lambda: runtime.metrics["short_lived"].dead_letters == 1)
        (letter,) = await dead_letters(backend.log, "short_lived")
    assert "short_lived" not in attempts
    assert letter["condition"] == "EventAgeExceeded"
    assert letter["payload"] == {"late": True}
    assert letter["attempts"] == 0


async def test_an_invocation_cut_off_by_a_stopping_runtime_runs_on_the_next_one() -> None:
    clock, backend = setup()
    gate["blocking"] = asyncio.Event()
    first = Runtime(app, backend=backend)
    await first.start()
    await first.invoke_async("blocking", {"n": 1})
    await drive(clock, lambda: "blocking" in attempts)
    await first.stop()  # mid-invocation: nothing was acknowledged
    gate["blocking"].set()
    async with Runtime(app, backend=backend) as second:
        # The lease of the dead runtime's consumer runs out in virtual time.
        clock.advance(300)
        await drive(clock, lambda: len(attempts["blocking"]) == 2)
        await drive(clock, lambda: second.metrics["blocking"].invocations == 1)
        for _ in range(100):
            if not await backend.log.pending(events_stream("blocking"), "functions"):
                break
            await asyncio.sleep(0.01)
        assert await backend.log.pending(events_stream("blocking"), "functions") == []
    assert await dead_letters(backend.log, "blocking") == []


async def test_async_invocations_queue_behind_reserved_concurrency_instead_of_throttling() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        for n in range(3):
            await runtime.invoke_async("one_at_a_time", n)
        metrics = runtime.metrics["one_at_a_time"]
        await drive(clock, lambda: metrics.invocations == 3 and metrics.concurrent == 0)
    assert (metrics.throttles, metrics.max_concurrent, metrics.dead_letters) == (0, 1, 0)


async def test_a_payload_that_is_not_json_is_refused_at_the_door() -> None:
    _, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        with pytest.raises(InvalidEventError) as caught:
            await runtime.invoke_async("ok", {"n": object()})
    assert caught.value.field == "payload"
    assert await backend.log.length(events_stream("ok")) == 0


async def test_async_invocation_without_a_backend_is_refused() -> None:
    async with Runtime(app) as runtime:
        with pytest.raises(RegistrationError, match="need a runtime with a backend"):
            await runtime.invoke_async("ok", {})


def test_destinations_parse_kinds_and_refuse_unknown_functions() -> None:
    known = {"a", "b"}
    assert parse_destination("b", known, "a") == Destination("function", "b")
    assert parse_destination("function:a", known, "b") == Destination("function", "a")
    assert parse_destination("flow:publish", known, "a").stream == (
        "functions.destinations.flow.publish"
    )
    with pytest.raises(RegistrationError, match="'zzz' is not registered"):
        parse_destination("zzz", known, "a")
    with pytest.raises(RegistrationError, match="must be 'function:NAME'"):
        parse_destination("queue:x", known, "a")


async def test_metrics_snapshots_are_published_to_the_backend_kv() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        await runtime.invoke("ok", {"n": 1})
        await runtime.publish_metrics()
        item = await backend.kv.get(metrics_key("queued", "ok"))
        assert item is not None
        assert json.loads(item.value)["invocations"] == 1
        await runtime.invoke("ok", {"n": 2})
        for _ in range(50):
            clock.advance(10)  # the periodic publisher runs on the clock too
            await asyncio.sleep(0.002)
            item = await backend.kv.get(metrics_key("queued", "ok"))
            if item is not None and json.loads(item.value)["invocations"] == 2:
                break
        assert item is not None and json.loads(item.value)["invocations"] == 2


def test_request_ids_are_version_4_uuids() -> None:
    import uuid

    ids = {new_request_id() for _ in range(500)}
    assert len(ids) == 500
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


class _DeadLetterStoreFailsOnce:
    """A Log whose first dead-letter append fails, as a backend outage would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, stream: str, data: bytes) -> str:
        if stream.endswith(".dlq") and not self.failed:
            self.failed = True
            raise BackendUnavailableError("memory://", "simulated outage")
        result: str = await self.inner.append(stream, data)
        return result


async def test_an_outcome_that_cannot_be_recorded_leaves_the_event_for_redelivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, backend = setup()
    flaky = _DeadLetterStoreFailsOnce(backend.log)
    backend = dataclasses.replace(backend, log=flaky)
    async with Runtime(app, backend=backend) as runtime:
        await runtime.invoke_async("no_retry", {"n": 5})
        await drive(clock, lambda: flaky.failed)
        stream = events_stream("no_retry")
        assert len(await backend.log.pending(stream, "functions")) == 1  # not acknowledged
        clock.advance(300)  # past the lease
        await drive(clock, lambda: runtime.metrics["no_retry"].dead_letters == 1)
        (letter,) = await dead_letters(backend.log, "no_retry")
        assert await backend.log.pending(stream, "functions") == []
    # The redelivery counted as the attempt that the outage interrupted.
    assert letter["payload"] == {"n": 5} and letter["condition"] == "RetriesExhausted"
    assert attempts["no_retry"] == [0.0]
    assert "left for redelivery" in caplog.text


def test_runtime_failures_take_lambdas_error_names() -> None:
    from reflow.errors import FunctionCrashedError, FunctionTimeoutError, HandlerError
    from reflow.errors import ThrottledError as Throttled
    from reflow.functions.invocations import lambda_error

    assert lambda_error(FunctionTimeoutError("f", 3))["errorType"] == "Sandbox.Timedout"
    assert lambda_error(FunctionTimeoutError("f", 3))["errorMessage"] == (
        "Task timed out after 3.00 seconds"
    )
    crashed = lambda_error(FunctionCrashedError("f", "worker 9 killed by SIGSEGV"))
    assert crashed["errorType"] == "Runtime.ExitError" and "SIGSEGV" in crashed["errorMessage"]
    assert lambda_error(Throttled("f", 2))["errorType"] == "TooManyRequestsException"
    handler = lambda_error(HandlerError("f", "KeyError", "'k'", ["trace"]))
    assert handler == {"errorType": "KeyError", "errorMessage": "'k'", "stackTrace": ["trace"]}


async def test_retries_waiting_out_their_back_off_do_not_stall_healthy_events() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        for n in range(6):  # more failing events than the function runs at once
            await runtime.invoke_async("picky", {"fail": True, "n": n})
        await drive(clock, lambda: len(attempts.get("picky", [])) == 6, step=0)
        await runtime.invoke_async("picky", {"fail": False})
        # No virtual time passes: every retry is still waiting for its minute.
        await drive(clock, lambda: recorded == [{"fail": False}], step=0)
        assert runtime.metrics["picky"].async_retries == 6
        assert clock.sleepers >= 6


async def test_a_function_with_reserved_zero_throttles_events_into_the_dlq() -> None:
    clock, backend = setup()
    async with Runtime(app, backend=backend) as runtime:
        with pytest.raises(ThrottledError):
            await runtime.invoke("switched_off", {}, wait=True)
        await runtime.invoke_async("switched_off", {"n": 1})
        await drive(clock, lambda: runtime.metrics["switched_off"].dead_letters == 1)
        (letter,) = await dead_letters(backend.log, "switched_off")
    assert "switched_off" not in attempts
    assert letter["error"]["errorType"] == "TooManyRequestsException"
    assert letter["attempts"] == 2
