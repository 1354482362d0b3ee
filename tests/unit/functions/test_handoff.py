"""The loop ↔ handler-thread hand-off, C and pure Python (reflow.functions.handoff)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reflow.functions import handoff
from reflow.functions.handoff import PENDING, Handoff


@pytest.fixture(params=["c", "python"])
def kind(request: pytest.FixtureRequest) -> str:
    kind = str(request.param)
    if kind == "c" and not handoff.available():
        message = "reflow._handoff was not built (no C compiler at install time)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return kind


@pytest.fixture
def pair(kind: str) -> Iterator[tuple[Handoff, list[Any], threading.Thread]]:
    """A hand-off, and a worker thread that answers item ``x`` with ``x(...)`` or ``x + 1``.

    Results of detached calls go to the list (the worker's other path).
    """
    h = handoff.new_handoff(pure=kind == "python")
    detached: list[Any] = []

    def answer(item: Any) -> Any:
        return item() if callable(item) else item + 1

    def work() -> None:
        item = h.wait(100e-6)
        while item is not None:
            result = answer(item)
            item = h.finish(result, 100e-6)
            if item is PENDING:
                detached.append(result)
                item = h.wait(0.0)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    yield h, detached, worker
    h.close()
    worker.join(2.0)
    assert not worker.is_alive()


def test_the_c_hand_off_is_built_here() -> None:
    # `make install` compiles it; the fallback exists for machines without a compiler.
    if not handoff.available() and os.environ.get("CI") != "true":
        pytest.skip("reflow._handoff was not built")
    assert handoff.available()
    assert type(handoff.new_handoff()).__module__ == "reflow._handoff"
    assert isinstance(handoff.new_handoff(pure=True), handoff.PyHandoff)


def test_calls_come_back_in_order_through_the_wait(
    pair: tuple[Handoff, list[Any], threading.Thread],
) -> None:
    h, detached, _ = pair
    assert h.call(0, 0.0, 2.0) == 1  # the first one may find the worker still starting
    answered = [h.call(n, 60e-6, 2.0) for n in range(2000)]
    assert answered == [n + 1 for n in range(2000)] and detached == []


def test_a_call_past_its_wait_is_detached_and_its_result_goes_the_other_way(
    pair: tuple[Handoff, list[Any], threading.Thread],
) -> None:
    h, detached, _ = pair
    release = threading.Event()
    assert h.call(lambda: release.wait(2.0) and "late", 0.0, 0.01) is PENDING
    with pytest.raises(RuntimeError):
        h.call(1, 0.0, 0.01)  # one call at a time
    release.set()
    _eventually(lambda: detached == ["late"])
    assert h.call(5, 0.0, 2.0) == 6  # and the hand-off is usable again


def test_send_is_detached_from_the_start(
    pair: tuple[Handoff, list[Any], threading.Thread],
) -> None:
    h, detached, _ = pair
    h.send(41)
    _eventually(lambda: detached == [42])
    assert h.call(1, 0.0, 2.0) == 2


def test_each_result_arrives_exactly_once_when_the_deadline_races_the_worker(
    pair: tuple[Handoff, list[Any], threading.Thread],
) -> None:
    # Waits about as long as the work takes: some calls are answered, some
    # detached, and the detach-or-answer decision must never lose or double one.
    h, detached, _ = pair
    answered: list[Any] = []
    for n in range(400):

        def job(n: int = n) -> int:
            _busy((n % 5) * 15e-6)  # 0 to 60 µs, around the 30 µs wait
            return n

        got = h.call(job, 30e-6, 30e-6)
        if got is PENDING:
            _eventually(lambda n=n: n in detached)  # type: ignore[misc]
        else:
            answered.append(got)
    assert sorted(answered + detached) == list(range(400))


def test_close_wakes_a_parked_worker(pair: tuple[Handoff, list[Any], threading.Thread]) -> None:
    h, _, worker = pair
    assert h.call(1, 0.0, 2.0) == 2
    time.sleep(0.05)  # long past its spin: parked
    h.close()
    worker.join(2.0)
    assert not worker.is_alive() and h.closed
    with pytest.raises(RuntimeError):
        h.call(1, 0.0, 0.01)


def test_an_idle_worker_costs_no_cpu_after_its_spin(
    pair: tuple[Handoff, list[Any], threading.Thread],
) -> None:
    h, _, _ = pair
    for n in range(100):
        assert h.call(n, 60e-6, 2.0) == n + 1
    time.sleep(0.01)  # past the worker's 100 µs spin
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(1.0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert used < 0.1  # a thread that kept spinning would use about 1 s


def test_references_are_handed_over_not_leaked(kind: str) -> None:
    h = handoff.new_handoff(pure=kind == "python")
    item, result = object(), object()
    counts = sys.getrefcount(item), sys.getrefcount(result)

    def work() -> None:
        got = h.wait(0.0)
        while got is not None:
            got = h.finish(result, 0.0)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    for _ in range(200):
        assert h.call(item, 0.0, 2.0) is result
    h.close()
    worker.join(2.0)
    assert (sys.getrefcount(item), sys.getrefcount(result)) == counts


def test_c_waits_end_spinning_or_parked_and_are_counted(kind: str) -> None:
    if kind != "c":
        pytest.skip("the pure-Python hand-off does not spin")
    from reflow._handoff import Handoff as CHandoff

    h = CHandoff()

    def work() -> None:
        got = h.wait(200e-6)
        while got is not None:
            got = h.finish(got, 200e-6)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        for n in range(200):
            assert h.call(n, 200e-6, 2.0) == n
        time.sleep(0.02)
        assert h.call(0, 200e-6, 2.0) == 0
        figures = h.stats()
        # The worker parked at least before the first call and during the sleep.
        assert figures["worker_parked"] >= 2
        assert figures["caller_spun"] + figures["caller_parked"] >= 1
        # Each wait counted once it ends (the last one may be spinning still).
        assert figures["worker_spun"] + figures["worker_parked"] in (201, 202)
    finally:
        h.close()
        worker.join(2.0)


def test_bad_arguments_are_refused(kind: str) -> None:
    h = handoff.new_handoff(pure=kind == "python")
    if kind == "c":
        with pytest.raises(ValueError):
            h.call(1, -1.0, 1.0)
        with pytest.raises(TypeError):
            h.call(1, "soon", 1.0)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        h.finish(1, 0.0)  # no call running
    h.close()


def _busy(seconds: float) -> None:
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:
        pass


def _eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    ends = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < ends, "not within the timeout"
        time.sleep(0.001)


def test_without_the_extension_the_pure_python_hand_off_is_chosen_and_works() -> None:
    # As on a machine that had no C compiler at install time.
    script = """
import sys
sys.modules["reflow._handoff"] = None  # makes the import fail
from reflow import App
from reflow.functions import handoff, pools
app = App("fallback", root=".")

@app.function
def double(event, context):
    return event * 2

assert not handoff.available()
assert isinstance(pools._HandlerThread().handoff, handoff.PyHandoff)
assert app.invoke("double", 21) == 42
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
