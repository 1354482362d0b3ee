"""Time limits for handlers that run inline on the event loop's thread.

A synchronous edge hook runs on the thread that serves requests, so nothing
on that thread can interrupt it. A single daemon thread watches instead: a
hook *arms* the watchdog with a deadline before calling the handler and
*disarms* it afterwards. If a deadline passes while armed, the watchdog
raises :class:`Overrun` asynchronously in the hook's thread
(``PyThreadState_SetAsyncExc``), which interrupts a runaway Python loop at
its next bytecode. A handler blocked inside a C call cannot be interrupted
this way; that is what process isolation (reflow.functions) is for.

Arming is one tuple written to one attribute (token, thread, deadline), so
the watcher never sees a new token with an old deadline and the hook path
pays two calls and no allocation beyond that tuple. The watcher polls every
10 ms. (A watcher that slept until the deadline it last saw woke far less
often and cost less CPU per request, but served *fewer* hooked requests per
second in every alternating run on the shared benchmark machine, so the
simple poll stays; see bench/RESULTS.md "## edge".)

No signal is used, so nothing here competes with an application's (or
pytest-timeout's) ``SIGALRM``.
"""

from __future__ import annotations

import ctypes
import threading
import time

__all__ = ["Overrun", "Watchdog", "WATCHDOG"]

_POLL = 0.01  # seconds between checks: the resolution of every limit

_Armed = tuple[int, int, float]  # token, thread id, deadline: one object, swapped atomically


class Overrun(BaseException):
    """Raised inside a handler that ran past its limit.

    A BaseException on purpose: a handler's ``except Exception`` must not swallow it.
    """


class Watchdog:
    """One watcher thread for every inline time limit in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: _Armed | None = None
        self._token = 0
        self._fired = -1
        self._watcher: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        """Start timing the calling thread; returns a token for :meth:`disarm`."""
        if self._watcher is None:
            self._start()
        token = self._token = self._token + 1
        deadline = time.monotonic() + seconds
        # A single attribute write: the watcher never sees a new token with an old deadline.
        self._armed = (token, threading.get_ident(), deadline)
        return token

    def disarm(self, token: int) -> bool:
        """Stop timing; True if the limit fired for this token."""
        with self._lock:
            self._armed = None
            return self._fired == token

    def _start(self) -> None:
        with self._lock:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, name="reflow-edge-watchdog", daemon=True
                )
                self._watcher.start()

    def _watch(self) -> None:
        while True:
            time.sleep(_POLL)
            armed = self._armed
            if armed is not None and time.monotonic() >= armed[2]:
                self._fire(armed)

    def _fire(self, armed: _Armed) -> None:
        with self._lock:
            # Re-checked under the lock: a disarm in between means the handler finished.
            if self._armed is armed:
                self._armed = None
                self._fired = armed[0]
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(armed[1]), ctypes.py_object(Overrun)
                )


WATCHDOG = Watchdog()
