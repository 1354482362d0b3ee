"""Time limits for handlers that run inline on the event loop's thread.

A synchronous edge hook runs on the thread that serves requests, so nothing
on that thread can interrupt it. A single daemon thread watches instead: a
hook *arms* the watchdog with a deadline before calling the handler and
*disarms* it afterwards. If a deadline passes while armed, the watchdog
raises :class:`Overrun` asynchronously in the hook's thread
(``PyThreadState_SetAsyncExc``), which interrupts a runaway Python loop at
its next bytecode. A handler blocked inside a C call cannot be interrupted
this way; that is what process isolation (reflow.functions) is for.

The watcher does not poll: it sleeps until the deadline it last saw (or a
long idle period), and an arm wakes it only when its deadline is earlier
than that. Under load every hook arms with the same limit, so deadlines only
move forward and the hit path never signals the thread; the watcher wakes
about once per limit instead of a hundred times a second. (Each wake-up has
to take the GIL from the thread serving requests — on a server pinned to one
core that hand-over costs two context switches.)

No signal is used, so nothing here competes with an application's (or
pytest-timeout's) ``SIGALRM``.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time

__all__ = ["Overrun", "Watchdog", "WATCHDOG"]

_IDLE = 0.25  # seconds the watcher sleeps with nothing armed; shorter limits wake it

_Armed = tuple[int, int, float]  # token, thread id, deadline: one object, swapped atomically


class Overrun(BaseException):
    """Raised inside a handler that ran past its limit.

    A BaseException on purpose: a handler's ``except Exception`` must not swallow it.
    """


class Watchdog:
    """One watcher thread for every inline time limit in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._armed: _Armed | None = None
        self._token = 0
        self._fired = -1
        self._sleeping_until = math.inf  # when the watcher looks next, if asleep
        self._watcher: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        """Start timing the calling thread; returns a token for :meth:`disarm`."""
        if self._watcher is None:
            self._start()
        token = self._token = self._token + 1
        deadline = time.monotonic() + seconds
        # A single attribute write: the watcher never sees a new token with an old deadline.
        self._armed = (token, threading.get_ident(), deadline)
        if deadline < self._sleeping_until:
            self._wake.set()
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
            self._wake.clear()
            armed = self._armed
            now = time.monotonic()
            if armed is not None and now >= armed[2]:
                self._fire(armed)
                continue
            until = now + _IDLE if armed is None else armed[2]
            self._sleeping_until = until
            # An arm between the read above and publishing ``until`` compared its
            # deadline with a stale value: look again if it must be watched sooner.
            # (Only then: under load the hook thread re-arms constantly, and looping
            # on any change would keep this thread fighting it for the GIL.)
            current = self._armed
            if current is not None and current[2] < until:
                continue
            self._wake.wait(until - now)
            self._sleeping_until = -math.inf  # awake: arms need not signal

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
