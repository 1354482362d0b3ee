"""What a hung asyncio test was waiting for, written out before the run is ended.

pytest-timeout (thread method) prints every thread's stack and exits. For a
test on an event loop that waits for something that never comes, the main
thread's stack ends in ``select()``: the test coroutine, and whatever it
awaits, is not on any thread's stack. What explains such a hang is each
task's chain of awaits (test → ``Runtime.stop`` → ``Batcher`` future…) and
the future at its end, so this plugin writes those a little before
pytest-timeout fires, with the loop's pending timers and the records the
test logged so far (they are in pytest's capture, which a timeout never
prints).

The dump runs on a timer thread, so it needs the GIL: a process that
livelocks the GIL gets only faulthandler's dump (tests/conftest.py). It
first asks the loop to dump itself (consistent, on the loop's own thread);
a loop that does not answer within a second or two is blocked in a
synchronous call, and the timer thread then reads the tasks itself (best
effort: they cannot change while the loop is stuck).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

__all__ = [
    "DUMP_LEAD",
    "arm",
    "await_chain",
    "describe_loop",
    "disarm",
    "dump_running_loops",
]

DUMP_LEAD = 5.0  # seconds before the test's time limit that the tasks are written
_ANSWER = 2.0  # seconds the loop has to dump itself before the timer thread does
_MAX_DEPTH = 200  # an await chain deeper than this is cut (a cycle would be a bug)
_KEY = pytest.StashKey[list[threading.Timer]]()  # an item's armed dumps
_FD = pytest.StashKey[int]()  # the real stderr, where dumps go


def _frame_of(awaitable: Any) -> FrameType | None:
    for name in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(awaitable, name, None)
        if frame is not None:
            return frame  # type: ignore[no-any-return]
    return None


def _awaited_by(awaitable: Any) -> Any:
    for name in ("cr_await", "gi_yieldfrom", "ag_await"):
        inner = getattr(awaitable, name, None)
        if inner is not None:
            return inner
    return None


def await_chain(coroutine: Any) -> Iterator[str]:
    """One line per coroutine that ``coroutine`` is suspended in, outermost first.

    ``Task.print_stack`` shows only the task's own coroutine frame (a
    suspended coroutine's frame has no ``f_back``): the line of its first
    ``await``. The callee chain is ``cr_await`` (``gi_yieldfrom`` for
    generators, ``ag_await`` for async generators), followed to its end.
    """
    awaitable = coroutine
    for _ in range(_MAX_DEPTH):
        frame = _frame_of(awaitable)
        if frame is None:
            # A future's own iterator says nothing: the task's waiter is shown instead.
            if awaitable is not coroutine and type(awaitable).__name__ != "FutureIter":
                yield f"    awaiting {awaitable!r}"
            return
        code = frame.f_code
        yield f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}'
        awaitable = _awaited_by(awaitable)
        if awaitable is None:
            return
    yield "    ... (chain cut)"


def describe_loop(loop: asyncio.AbstractEventLoop) -> str:
    """Every task of ``loop`` with its await chain and the future it waits on, and the timers."""
    lines = [f"event loop {loop!r}"]
    scheduled = sorted(getattr(loop, "_scheduled", []), key=lambda handle: handle.when())
    if scheduled:
        now = loop.time()
        lines.append(f"  {len(scheduled)} timer(s) pending; the first:")
        for handle in scheduled[:10]:
            lines.append(f"    in {handle.when() - now:8.3f} s: {handle!r}")
    ready = getattr(loop, "_ready", None)
    if ready is not None:
        lines.append(f"  {len(ready)} callback(s) ready to run")
    tasks = sorted(asyncio.all_tasks(loop), key=lambda task: task.get_name())
    lines.append(f"  {len(tasks)} task(s) not done:")
    for task in tasks:
        lines.append(f"- {task!r}")
        lines.extend(await_chain(task.get_coro()))
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is not None:
            lines.append(f"    the task waits on {waiter!r}")
    return "\n".join(lines) + "\n"


def _running_loops() -> list[asyncio.AbstractEventLoop]:
    # A loop's "running" marker is per thread; from another thread the loops
    # are found among the objects the collector tracks (a one-off cost).
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.AbstractEventLoop) and obj.is_running()
    ]


def _ask(loop: asyncio.AbstractEventLoop, answer: float) -> str | None:
    """The loop's own description of itself, or None if it did not answer in time."""
    described: list[str] = []
    done = threading.Event()

    def on_loop() -> None:
        try:
            described.append(describe_loop(loop))
        except Exception as exc:  # never an error in the loop's own handler
            described.append(f"could not describe the loop: {exc!r}\n")
        finally:
            done.set()

    loop.call_soon_threadsafe(on_loop)
    return described[0] if done.wait(answer) else None


def dump_running_loops(answer: float = _ANSWER) -> str:
    """Describe every running event loop, from a thread other than theirs."""
    parts = []
    for loop in _running_loops():
        try:
            described = _ask(loop, answer)
        except RuntimeError:  # closed meanwhile
            continue
        if described is not None:
            parts.append("(written by the loop's own thread)\n" + described)
            continue
        note = (
            f"(the loop did not run a callback within {answer:g} s: it is blocked in a "
            "synchronous call, see the thread stacks; read from the timer thread)\n"
        )
        try:
            parts.append(note + describe_loop(loop))
        except Exception as exc:  # the tasks changed under us: say so, go on
            parts.append(note + f"could not read its tasks: {exc!r}\n")
    if not parts:
        return "no event loop is running\n"
    return "".join(parts)


def _logged(item: pytest.Item) -> str:
    """The records the test has logged so far (pytest captures them; a timeout drops them)."""
    try:
        from _pytest.logging import caplog_handler_key

        handler = item.stash.get(caplog_handler_key, None)
        records = list(handler.records) if handler is not None else []
    except Exception:  # a private API of pytest's: lose the records, not the dump
        return ""
    if not records:
        return ""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return "records logged by the test:\n" + "\n".join(map(formatter.format, records)) + "\n"


def _write(fd: int, text: str) -> None:
    data = text.encode("utf-8", "replace")
    while data:
        data = data[os.write(fd, data) :]


def _dump(item: pytest.Item, fd: int, limit: float, started: float, answer: float) -> None:
    try:
        header = (
            f"\n{'+' * 20} {item.nodeid} is still running after "
            f"{time.monotonic() - started:.0f} s (limit {limit:g} s): its asyncio tasks "
            f"{'+' * 20}\n"
        )
        _write(fd, header + dump_running_loops(answer) + _logged(item) + "+" * 40 + "\n")
    except Exception as exc:  # a diagnostic must never be what breaks the run
        _write(fd, f"reflow hang dump failed: {exc!r}\n")


def arm(item: pytest.Item, limit: float, fd: int) -> None:
    """Write the tasks to ``fd`` a little before ``limit`` seconds from now."""
    lead = min(DUMP_LEAD, limit / 4)
    answer = min(_ANSWER, lead / 2)  # a blocked loop's dump must still beat the limit
    timer = threading.Timer(limit - lead, _dump, (item, fd, limit, time.monotonic(), answer))
    timer.name = f"reflow task dump {item.nodeid}"
    timer.daemon = True
    timers: list[threading.Timer] = item.stash.setdefault(_KEY, [])
    timers.append(timer)
    timer.start()


def disarm(item: pytest.Item) -> None:
    """Cancel the item's pending dumps (a dump already writing finishes)."""
    for timer in item.stash.get(_KEY, []):
        timer.cancel()
    item.stash[_KEY] = []


def pytest_configure(config: pytest.Config) -> None:
    """Keep a copy of the real stderr: output capturing replaces it during tests."""
    if _FD not in config.stash:
        config.stash[_FD] = os.dup(2)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arm a dump before pytest-timeout's limit; pytest-timeout still arms its own."""
    fd = item.config.stash.get(_FD, None)
    if fd is not None and settings.timeout:
        arm(item, float(settings.timeout), fd)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    """The test ended in time: no dump."""
    disarm(item)
