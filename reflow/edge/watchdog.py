"""Time limits for handlers that run inline on the event loop's thread.

A synchronous edge hook runs on the thread that serves requests, so nothing
on that thread can interrupt it. A single daemon thread watches instead: a
hook *arms* the watchdog with a deadline before calling the handler and
*disarms* it afterwards (two attribute writes, no system call — the hit
path pays almost nothing). If a deadline passes while armed, the watchdog
raises :class:`Overrun` asynchronously in the hook's thread
(``PyThreadState_SetAsyncExc``), which interrupts a runaway Python loop at
its next bytecode. A handler blocked inside a C call cannot be interrupted
this way; that is what process isolation (reflow.functions) is for.

No signal is used, so nothing here competes with an application's (or
pytest-timeout's) ``SIGALRM``.
"""

from __future__ import annotations

import ctypes
import threading
import time

__all__ = ["Overrun", "Watchdog", "WATCHDOG"]

_POLL = 0.01  # seconds between checks: the resolution of every limit


class Overrun(BaseException):
    """Raised inside a handler that ran past its limit.

    A BaseException on purpose: a handler's ``except Exception`` must not swallow it.
    """


class Watchdog:
    """One watcher thread for every inline time limit in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadline = 0.0
        self._thread_id = 0
        self._token = 0
        self._fired = -1
        self._watcher: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        """Start timing the calling thread; returns a token for :meth:`disarm`."""
        if self._watcher is None:
            self._start()
        self._token += 1
        self._thread_id = threading.get_ident()
        self._deadline = time.monotonic() + seconds
        return self._token

    def disarm(self, token: int) -> bool:
        """Stop timing; True if the limit fired for this token."""
        with self._lock:
            self._deadline = 0.0
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
            if not self._deadline or time.monotonic() < self._deadline:
                continue
            with self._lock:
                # Re-checked under the lock: a disarm in between means the handler finished.
                if self._deadline and time.monotonic() >= self._deadline:
                    self._deadline = 0.0
                    self._fired = self._token
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(self._thread_id), ctypes.py_object(Overrun)
                    )


WATCHDOG = Watchdog()
