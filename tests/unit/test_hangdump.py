"""The hang dump (tests/hangdump.py): what a hung asyncio test was waiting for."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests import hangdump

ROOT = Path(__file__).resolve().parents[2]


async def innermost(future: asyncio.Future[None]) -> None:
    await future


async def middle(future: asyncio.Future[None]) -> None:
    await innermost(future)


async def test_each_task_is_shown_with_its_whole_await_chain_and_its_future() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(middle(future), name="stuck-helper")
    await asyncio.sleep(0)
    try:
        text = hangdump.describe_loop(asyncio.get_running_loop())
    finally:
        task.cancel()
    block = text[text.index("name='stuck-helper'") :]
    # Task.print_stack would show only middle(): the chain goes down to innermost().
    assert "in middle" in block and "in innermost" in block
    assert "the task waits on <Future pending" in block


async def test_a_free_loop_describes_itself_when_asked_from_another_thread() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(middle(future), name="stuck-helper")
    try:
        text = await asyncio.to_thread(hangdump.dump_running_loops, 2.0)
    finally:
        task.cancel()
    assert "written by the loop's own thread" in text
    assert "name='stuck-helper'" in text and "in innermost" in text


async def test_a_blocked_loop_is_read_from_the_other_thread() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(middle(future), name="stuck-helper")
    await asyncio.sleep(0)
    found: list[str] = []
    dumper = threading.Thread(target=lambda: found.append(hangdump.dump_running_loops(0.2)))
    try:
        dumper.start()
        time.sleep(0.8)  # the loop is blocked: it cannot answer the dumper
    finally:
        dumper.join(5.0)
        task.cancel()
    (text,) = found
    assert "blocked in a synchronous call" in text
    assert "name='stuck-helper'" in text and "in innermost" in text


def fake_item() -> Any:
    return SimpleNamespace(nodeid="tests/x.py::test_x", stash=pytest.Stash())


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def test_an_armed_dump_is_written_when_due_and_not_once_disarmed() -> None:
    read, write = os.pipe()
    try:
        due, cancelled = fake_item(), fake_item()
        hangdump.arm(due, 0.4, write)
        hangdump.arm(cancelled, 0.4, write)
        hangdump.disarm(cancelled)
        deadline = time.monotonic() + 5
        written = b""
        while b"+" * 40 + b"\n" not in written[-60:] and time.monotonic() < deadline:
            written += read_all(read)
            time.sleep(0.02)
        assert written.count(b"is still running after") == 1
        assert b"tests/x.py::test_x is still running after 0 s (limit 0.4 s)" in written
    finally:
        os.close(read)
        os.close(write)


HUNG = """
import asyncio


async def waits_for_nothing(future):
    await future


async def test_hangs():
    await waits_for_nothing(asyncio.get_running_loop().create_future())
"""


def test_pytest_timeout_is_preceded_by_the_task_dump(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.hangdump",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "-o",
        "timeout_method=thread",
        "--timeout=3",
        "test_hung.py",
    ]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one pipe: the order of the two reports is kept
        text=True,
        timeout=60,
    )
    output = done.stdout
    assert done.returncode != 0
    dump = output.index("test_hung.py::test_hangs is still running after")
    assert output.index("Timeout", dump) > dump  # pytest-timeout came after the dump
    assert "in waits_for_nothing" in output[dump:]
