"""What the flows crash tests share: a backend per test, the child's run of one execution,
and a child run to its exit."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend, open_backend
from reflow.errors import ExecutionAlreadyExistsError
from reflow.flows.service import FlowService
from reflow.flows.writebehind import PersistHook
from tests.conftest import REDIS_URL, require_server

Watch = Callable[[Backend, dict[str, Any]], Awaitable[bool]]


async def ended(backend: Backend, described: dict[str, Any]) -> bool:
    """The default end of a child's run: the execution is no longer running."""
    return bool(described["status"] != "RUNNING")


def run_execution(
    url: str,
    data_dir: str,
    flows: Mapping[str, Any],
    start: tuple[str, Any, str],
    *,
    functions: Mapping[str, Any],
    on_persist: PersistHook | None = None,
    done: Watch = ended,
    polls: int = 2000,
) -> None:
    """In a crash test's child: start (or find) one execution and serve it until ``done``.

    ``start`` is (flow, input, execution name). The execution may already
    exist — or be over — when an earlier child was killed after saving it.
    """

    async def main() -> None:
        backend = await open_backend(url, data_dir=Path(data_dir))
        service = FlowService(
            backend, dict(flows), functions=dict(functions),
            workers=1, block=0.02, poll=0.02, on_persist=on_persist,
        )  # fmt: skip
        flow, execution_input, name = start
        try:
            with contextlib.suppress(ExecutionAlreadyExistsError):
                await service.start_execution(flow, execution_input, name=name)
            async with service:
                for _ in range(polls):
                    if await done(backend, await service.describe(name)):
                        break
                    await asyncio.sleep(0.005)
        finally:
            await backend.close()

    asyncio.run(main())


def backend_url(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> str:
    """A SQLite file in ``tmp_path``, or the Redis server under a prefix of this test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flows.db'}"
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}prefix={prefix}-{uuid.uuid4().hex[:12]}:"


def run_to_exit(
    context: ForkServerContext, target: Callable[..., None], args: tuple[Any, ...], what: str
) -> int:
    """Run ``target(*args)`` in a child of ``context``; its exit code (failing the test
    if it hangs past 60 s, naming ``what`` it was doing)."""
    process = context.Process(target=target, args=args)
    process.start()
    process.join(60)
    if process.exitcode is None:
        process.kill()
        process.join()
        pytest.fail(f"{what} hung")
    return process.exitcode
