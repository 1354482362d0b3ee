"""Process isolation: each failure the issue names, and the worker replaced after it."""

from __future__ import annotations

import os

import pytest

from reflow.errors import FunctionCrashedError, FunctionTimeoutError, HandlerError
from reflow.functions import Runtime
from reflow.functions.pools import ProcessPool
from tests.functional.functions.sample_app import app


def pool_of(runtime: Runtime, name: str) -> ProcessPool:
    pool = runtime.pool(name)
    assert isinstance(pool, ProcessPool)
    return pool


async def test_process_handler_runs_in_another_process_with_lambda_context(
    runtime: Runtime,
) -> None:
    result = await runtime.invoke("echo", {"a": 1}, request_id="req-1")
    assert result["event"] == {"a": 1}
    assert result["pid"] != os.getpid()
    assert result["function_name"] == "echo"
    assert result["request_id"] == "req-1"
    assert result["memory"] == 128
    assert 0 < result["remaining"] <= 5000


async def test_forked_worker_inherits_module_init_done_once_in_the_zygote(
    runtime: Runtime,
) -> None:
    result = await runtime.invoke("echo", {})
    assert runtime.zygote is not None
    assert result["init_pid"] == runtime.zygote.pid
    assert result["pid"] != runtime.zygote.pid


async def test_warm_worker_is_reused_and_only_the_first_call_is_a_cold_start(
    runtime: Runtime,
) -> None:
    first = await runtime.invoke("echo", 1)
    second = await runtime.invoke("echo", 2)
    assert first["pid"] == second["pid"]
    assert runtime.metrics["echo"].cold_starts == 1
    assert runtime.metrics["echo"].invocations == 2


async def test_async_handler_is_awaited_in_the_worker(runtime: Runtime) -> None:
    result = await runtime.invoke("echo_async", [1, 2])
    assert result["async"] == [1, 2]


async def test_handler_exception_surfaces_with_lambda_error_shape(runtime: Runtime) -> None:
    with pytest.raises(HandlerError) as caught:
        await runtime.invoke("misbehave", {"how": "raise", "detail": "x"})
    assert caught.value.error_type == "ValueError"
    assert caught.value.error_message == "bad input: x"
    assert any("misbehave" in line for line in caught.value.trace)
    # A plain exception leaves the worker healthy: it is reused.
    first = await runtime.invoke("misbehave", {})
    assert runtime.metrics["misbehave"].cold_starts == 1
    assert (await runtime.invoke("misbehave", {}))["pid"] == first["pid"]


async def test_timeout_kills_the_worker_and_the_next_call_runs_on_a_fresh_one(
    runtime: Runtime,
) -> None:
    assert await runtime.invoke("sleepy", {"seconds": 0}) == "awake"
    pool = pool_of(runtime, "sleepy")
    stuck_pid = pool._idle[-1].pid
    with pytest.raises(FunctionTimeoutError) as caught:
        await runtime.invoke("sleepy", {"seconds": 30})
    assert caught.value.timeout == 0.5
    assert pool.workers == 0
    assert runtime.zygote is not None
    # The zygote reaped the worker and says how it ended: SIGKILLed by the runtime.
    assert await runtime.zygote.exit_cause(stuck_pid) == "killed by SIGKILL"
    assert await runtime.invoke("sleepy", {"seconds": 0}) == "awake"
    assert pool._idle[-1].pid != stuck_pid
    assert runtime.metrics["sleepy"].timeouts == 1
    assert runtime.metrics["sleepy"].cold_starts == 2


async def test_allocating_past_the_memory_limit_fails_with_a_memory_error(
    runtime: Runtime,
) -> None:
    with pytest.raises(HandlerError) as caught:
        await runtime.invoke("hungry", {"mb": 512})
    assert caught.value.error_type == "MemoryError"
    assert "memory_mb=64" in caught.value.error_message
    # The worker that ran out of memory is retired; a small allocation then works.
    assert await runtime.invoke("hungry", {"mb": 8}) == 8 * 1024 * 1024
    assert runtime.metrics["hungry"].cold_starts == 2


async def test_os_exit_is_a_crash_with_its_status_and_the_next_call_succeeds(
    runtime: Runtime,
) -> None:
    with pytest.raises(FunctionCrashedError) as caught:
        await runtime.invoke("misbehave", {"how": "exit"})
    assert "exited with status 1" in caught.value.cause
    assert "pid" in await runtime.invoke("misbehave", {})
    assert runtime.metrics["misbehave"].crashes == 1


async def test_segfault_is_a_crash_naming_the_signal(runtime: Runtime) -> None:
    with pytest.raises(FunctionCrashedError) as caught:
        await runtime.invoke("misbehave", {"how": "segfault"})
    assert "SIGSEGV" in caught.value.cause
    assert "pid" in await runtime.invoke("misbehave", {})


async def test_spawned_workers_run_the_same_handler_without_the_zygote_fork() -> None:
    async with Runtime(app, spawn=True) as spawned:
        result = await spawned.invoke("echo", {"b": 2})
        assert spawned.zygote is not None
        assert result["event"] == {"b": 2}
        # A spawned worker imported the module itself: its init ran in it.
        assert result["init_pid"] == result["pid"]


async def test_a_killed_zygote_is_restarted_and_new_workers_come_from_the_new_one(
    runtime: Runtime,
) -> None:
    import asyncio
    import signal

    zygote = runtime.zygote
    assert zygote is not None and zygote.pid is not None
    first = await runtime.invoke("echo", {})
    old_pid = zygote.pid
    os.kill(old_pid, signal.SIGKILL)
    for _ in range(200):
        if not zygote.running:
            break
        await asyncio.sleep(0.01)
    # The warm worker outlives its parent and keeps serving.
    assert (await runtime.invoke("echo", {}))["pid"] == first["pid"]
    # A cold start needs the zygote: a new one is started for it.
    fresh = await runtime.invoke("misbehave", {})
    assert zygote.restarts == 1 and zygote.pid != old_pid
    assert fresh["pid"] != first["pid"]


async def test_a_process_function_sees_its_declared_environment(runtime: Runtime) -> None:
    assert await runtime.invoke("configured", {}) == "bonjour"
    assert "GREETING" not in os.environ  # only the worker's environment changed


async def test_the_zygote_and_its_workers_sit_outside_the_servers_process_group(
    runtime: Runtime,
) -> None:
    result = await runtime.invoke("echo", {})
    assert runtime.zygote is not None and runtime.zygote.pid is not None
    # A terminal's Ctrl-C goes to the server's process group, not to these.
    assert os.getpgid(runtime.zygote.pid) != os.getpgrp()
    assert os.getpgid(result["pid"]) != os.getpgrp()
