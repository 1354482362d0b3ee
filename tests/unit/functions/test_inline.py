"""Inline isolation: handlers in the server's process, sync ones off the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

from reflow import App, Context
from reflow.errors import FunctionNotFoundError, FunctionTimeoutError, HandlerError, ThrottledError
from reflow.functions import Runtime, handoff, pools
from reflow.functions.pools import InlinePool, _HandlerThread
from reflow.testing.clock import FakeClock


@pytest.fixture(autouse=True, params=["c", "python"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with the C hand-off and with the pure-Python fallback."""
    kind = str(request.param)
    if kind == "c" and not handoff.available():
        message = "reflow._handoff was not built (no C compiler at install time)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    monkeypatch.setattr(pools, "new_handoff", lambda: handoff.new_handoff(pure=kind == "python"))
    return kind


app = App("inline", root=".")
seen: dict[str, Any] = {}


@app.function
def where(event: Any, context: Context) -> dict[str, Any]:
    """Report the thread it runs on."""
    return {"thread": threading.get_ident(), "event": event}


@app.function
async def awaited(event: Any, context: Context) -> dict[str, Any]:
    """An async handler."""
    await asyncio.sleep(0)
    return {"thread": threading.get_ident(), "id": context.aws_request_id}


@app.function(timeout=0.2)
def spin(event: Any, context: Context) -> str:
    """Busy-loop in Python until interrupted (or event['seconds'] pass)."""
    ends = time.monotonic() + float(event["seconds"])
    while time.monotonic() < ends:
        pass
    seen["spin_finished"] = True
    return "done"


@app.function(timeout=0.2)
async def stall(event: Any, context: Context) -> str:
    """Wait forever."""
    await asyncio.Event().wait()
    return "never"


@app.function
def broken(event: Any, context: Context) -> None:
    """Raise a KeyError."""
    raise KeyError(event)


@app.function
async def times_out_itself(event: Any, context: Context) -> None:
    """Raise TimeoutError of its own, well before the function's timeout."""
    raise TimeoutError("upstream took too long")


@app.function(reserved=1)
async def single(event: Any, context: Context) -> int:
    """At most one at a time."""
    await asyncio.sleep(float(event))
    return 1


# A handler as it would be written for AWS Lambda: only the event, the
# context's attributes and the standard library.
@app.function(name="lambda_style", timeout=30, memory_mb=256)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Echo the way Lambda's documentation examples do."""
    import json

    body = json.loads(event["body"])
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {
                "greeting": f"hello {body['name']}",
                "function": context.function_name,
                "version": context.function_version,
                "memory": context.memory_limit_in_mb,
                "arn": context.invoked_function_arn,
                "request": context.aws_request_id,
                "group": context.log_group_name,
                "stream": context.log_stream_name,
                "remaining": context.get_remaining_time_in_millis(),
            }
        ),
    }


async def test_sync_handlers_run_off_the_event_loop_thread() -> None:
    async with Runtime(app) as runtime:
        result = await runtime.invoke("where", {"x": 1})
    assert result["event"] == {"x": 1}
    assert result["thread"] != threading.get_ident()


async def test_async_handlers_are_awaited_on_the_loop() -> None:
    async with Runtime(app) as runtime:
        result = await runtime.invoke("awaited", None, request_id="abc")
    assert result == {"thread": threading.get_ident(), "id": "abc"}


async def test_sync_handler_past_its_timeout_raises_timeout_and_is_interrupted() -> None:
    seen.clear()
    async with Runtime(app) as runtime:
        started = time.monotonic()
        with pytest.raises(FunctionTimeoutError) as caught:
            await runtime.invoke("spin", {"seconds": 5})
        assert time.monotonic() - started < 2
        assert caught.value.timeout == 0.2
        assert runtime.metrics["spin"].timeouts == 1
        # The next call runs on a fresh thread and completes.
        assert await runtime.invoke("spin", {"seconds": 0}) == "done"
    assert seen == {"spin_finished": True}  # the interrupted one never finished


async def test_async_handler_past_its_timeout_is_cancelled() -> None:
    async with Runtime(app) as runtime:
        with pytest.raises(FunctionTimeoutError):
            await runtime.invoke("stall", {})
        assert runtime.metrics["stall"].errors == 1


async def test_handler_exception_becomes_handler_error_with_type_and_message() -> None:
    async with Runtime(app) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("broken", "missing")
    assert caught.value.error_type == "KeyError"
    assert caught.value.error_message == "'missing'"
    assert any("broken" in line for line in caught.value.trace)


async def test_a_handlers_own_timeout_error_is_not_mistaken_for_the_runtimes() -> None:
    async with Runtime(app) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("times_out_itself", {})
    assert caught.value.error_type == "TimeoutError"
    assert caught.value.error_message == "upstream took too long"


async def test_reserved_concurrency_throttles_sync_and_queues_waiting_calls() -> None:
    async with Runtime(app) as runtime:
        first = asyncio.create_task(runtime.invoke("single", 0.05))
        await asyncio.sleep(0.01)
        with pytest.raises(ThrottledError):
            await runtime.invoke("single", 0)
        queued = asyncio.create_task(runtime.invoke("single", 0, wait=True))
        assert await first == 1 and await queued == 1
        metrics = runtime.metrics["single"]
        assert (metrics.throttles, metrics.invocations, metrics.max_concurrent) == (1, 2, 1)


async def test_unknown_function_is_not_found() -> None:
    async with Runtime(app) as runtime:
        with pytest.raises(FunctionNotFoundError):
            await runtime.invoke("nope", {})


async def test_lambda_style_handler_runs_unchanged() -> None:
    import json

    clock = FakeClock()
    async with Runtime(app, clock=clock, region="us-east-1") as runtime:
        response = await runtime.invoke(
            "lambda_style", {"body": json.dumps({"name": "ada"})}, request_id="r-7"
        )
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["greeting"] == "hello ada"
    assert body["function"] == "lambda_style"
    assert body["version"] == "$LATEST"
    assert body["memory"] == 256
    assert body["arn"].endswith(":us-east-1:000000000000:function:lambda_style")
    assert body["request"] == "r-7"
    assert body["group"] == "/reflow/functions/lambda_style"
    assert body["stream"].startswith("2023/11/14/[$LATEST]")
    assert body["remaining"] == 30_000  # virtual time does not move by itself


async def test_metrics_count_invocations_errors_and_durations() -> None:
    async with Runtime(app) as runtime:
        for _ in range(3):
            await runtime.invoke("where", {})
        with pytest.raises(HandlerError):
            await runtime.invoke("broken", 1)
        rows = {row["name"]: row for row in runtime.snapshot()}
    assert rows["where"]["invocations"] == 3 and rows["where"]["errors"] == 0
    assert rows["broken"]["errors"] == 1
    assert rows["where"]["duration_p50_ms"] is not None
    assert rows["where"]["isolation"] == "inline"
    assert rows["where"]["concurrent_executions"] == 0


async def test_inline_pool_threads_are_reused_between_calls() -> None:
    async with Runtime(app) as runtime:
        a = await runtime.invoke("where", 1)
        b = await runtime.invoke("where", 2)
        pool = runtime.pool("where")
        assert isinstance(pool, InlinePool)
        assert a["thread"] == b["thread"]
        assert len(pool._threads) == 1


def test_app_invoke_runs_a_function_once_outside_an_event_loop() -> None:
    assert app.invoke("where", {"k": "v"})["event"] == {"k": "v"}
    with pytest.raises(HandlerError) as caught:
        app.invoke("broken", "x")
    assert caught.value.error_type == "KeyError"


@app.function(name="saves")
def saves(event: Any, context: Context) -> str:
    """A synchronous inline handler writing through the platform client."""
    context.blobs.sync.put(f"out/{event}", b"saved")
    blob = context.blobs.sync.get(f"out/{event}")
    return blob.data.decode() if blob else "missing"


async def test_a_sync_inline_handler_reaches_blobs_through_the_runtime() -> None:
    from reflow.backends import memory_backend

    backend = memory_backend()
    async with Runtime(app, backend=backend, serve=False) as runtime:
        assert await runtime.invoke("saves", "a") == "saved"
    assert await backend.blobs.head("out/a") is not None


async def test_a_thread_interrupted_between_calls_gets_no_exception_and_ends() -> None:
    # An exception raised asynchronously into a thread blocked in C stays
    # pending; on 3.11 that stalls every thread of the process under a tracer.
    # So an idle thread is only told to stop, and it does.
    thread = _HandlerThread()
    thread.start()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    thread.start_call(lambda: "first", (), future)
    assert (await future)[:2] == ("first", None)
    thread.interrupt()
    await asyncio.to_thread(thread.join, 2.0)
    assert not thread.is_alive()


async def test_a_thread_interrupted_inside_its_call_ends_without_settling() -> None:
    thread = _HandlerThread()
    thread.start()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    entered = threading.Event()

    def spin_forever() -> None:
        entered.set()
        while True:
            pass

    thread.start_call(spin_forever, (), future)
    assert await asyncio.to_thread(entered.wait, 2.0)
    thread.interrupt()
    await asyncio.to_thread(thread.join, 2.0)
    assert not thread.is_alive()
    await asyncio.sleep(0.05)
    assert not future.done()  # the caller already has its timeout error


@app.function(name="naps")
def naps(event: Any, context: Context) -> float:
    """Sleep ``event['seconds']`` (a blocking call, the GIL released), then maybe raise."""
    time.sleep(float(event["seconds"]))
    if event.get("fail"):
        raise ValueError("asked to fail")
    return float(event["seconds"])


async def _ticks_during(call: Any) -> tuple[Any, int]:
    """Run ``call`` and count how often a 1 ms ticker got the loop meanwhile."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # let it start
    ticks = 0
    try:
        result = await call
    finally:
        stop.set()
        await task
    return result, ticks


async def test_a_slow_sync_handler_never_holds_the_event_loop() -> None:
    async with Runtime(app) as runtime:
        # The first call is waited for synchronously (no run time known
        # yet), but only briefly: the loop goes on while it sleeps.
        result, ticks = await _ticks_during(runtime.invoke("naps", {"seconds": 0.1}))
        assert result == 0.1
        assert ticks >= 20  # about 100 at 1 ms; the loop was free
        # Known to be slow now, the next call is awaited from the start.
        result, ticks = await _ticks_during(runtime.invoke("naps", {"seconds": 0.1}))
        assert ticks >= 20


async def test_a_fast_sync_handler_can_complete_without_a_turn_of_the_loop() -> None:
    # The loop waits for a handler that ran fast last time (bounded, see
    # docs/functions.md), so a callback scheduled before the call has not
    # run when the result is back. On a loaded machine a wait can pass its
    # bound and fall back to awaiting; one of many calls must not have.
    loop = asyncio.get_running_loop()
    async with Runtime(app) as runtime:
        await runtime.invoke("where", 0)
        without_a_turn = 0
        for n in range(50):
            turned: list[bool] = []
            loop.call_soon(turned.append, True)
            result = await runtime.invoke("where", n)
            assert result["event"] == n and result["thread"] != threading.get_ident()
            without_a_turn += not turned
            await asyncio.sleep(0)
    assert without_a_turn > 0


async def test_errors_and_results_come_back_both_ways_on_one_reused_thread() -> None:
    async with Runtime(app) as runtime:
        pool = runtime.pool("naps")
        assert isinstance(pool, InlinePool)
        # slow then fast, failing and not: awaited and waited-for calls alike
        for seconds, fail in [(0.02, True), (0.02, False), (0, True), (0, False), (0.02, True)]:
            if fail:
                with pytest.raises(HandlerError) as caught:
                    await runtime.invoke("naps", {"seconds": seconds, "fail": True})
                assert caught.value.error_type == "ValueError"
            else:
                assert await runtime.invoke("naps", {"seconds": seconds}) == seconds
        assert len(pool._threads) == 1 and len(pool._idle) == 1
        assert runtime.metrics["naps"].errors == 3


async def test_a_call_not_done_in_the_wait_is_detached_to_the_future_exactly_once() -> None:
    thread = _HandlerThread()
    thread.start()
    loop = asyncio.get_running_loop()
    release = threading.Event()
    # Still running after the bounded wait: detached, nothing returned.
    assert thread.call(release.wait, (2.0,), loop) is None
    future: asyncio.Future[Any] = loop.create_future()
    thread.future = future  # before the next turn of the loop, as the pool does
    release.set()
    result, error, seconds = await asyncio.wait_for(future, 2.0)
    assert (result, error) == (True, None) and seconds > pools.SYNC_WAIT
    # A quick call is answered through the wait, and the old future is left alone.
    quick = thread.call(lambda: "quick", (), loop)
    assert quick is not None and quick[:2] == ("quick", None)
    thread.interrupt()
    await asyncio.to_thread(thread.join, 2.0)
    assert not thread.is_alive()


async def test_a_slow_sync_handler_does_not_keep_the_loop_spinning() -> None:
    # The loop spins only for its short window, then sleeps (the GIL
    # released) and goes on to await the call: its thread's CPU time over a
    # 30 ms call stays far below 30 ms.
    async with Runtime(app) as runtime:
        used = time.thread_time()  # a first call is waited for (as if fast)
        assert await runtime.invoke("naps", {"seconds": 0.03}) == 0.03
        used = time.thread_time() - used
    assert used < 0.01


async def test_a_five_ms_handler_works_on_both_paths_and_runs_on_one_thread() -> None:
    async with Runtime(app) as runtime:
        pool = runtime.pool("naps")
        assert isinstance(pool, InlinePool)
        for _ in range(3):
            assert await runtime.invoke("naps", {"seconds": 0.005}) == 0.005
            assert await runtime.invoke("naps", {"seconds": 0}) == 0
        assert len(pool._threads) == 1


async def test_concurrent_sync_calls_each_get_a_thread_and_their_own_result() -> None:
    async with Runtime(app) as runtime:
        pool = runtime.pool("naps")
        assert isinstance(pool, InlinePool)
        seconds = [0.02, 0.0, 0.01, 0.0, 0.03]
        results = await asyncio.gather(*(runtime.invoke("naps", {"seconds": s}) for s in seconds))
        assert results == seconds
        threads = len(pool._threads)
        assert 1 <= threads <= len(seconds) and len(pool._idle) == threads
        # Reused, not multiplied, by a second round.
        await asyncio.gather(*(runtime.invoke("naps", {"seconds": s}) for s in seconds))
        assert len(pool._threads) <= len(seconds)


async def test_closing_the_runtime_stops_its_handler_threads() -> None:
    async with Runtime(app) as runtime:
        for n in range(3):
            await runtime.invoke("where", n)
        pool = runtime.pool("where")
        assert isinstance(pool, InlinePool)
        threads = list(pool._threads)
    assert threads and not any(thread.is_alive() for thread in threads)
