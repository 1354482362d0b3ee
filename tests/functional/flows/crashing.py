"""What the flows crash tests share: a backend per test and a child run to its exit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REDIS_URL, require_server


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
