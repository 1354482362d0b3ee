"""Time limits for handlers that run inline on the event loop's thread.

A synchronous edge hook runs on the thread that serves requests, so nothing
on that thread can interrupt it. A single daemon thread watches instead: a
hook *arms* the watchdog with a deadline before calling the handler and
*disarms* it afterwards. If a deadline passes while armed, the watchdog
raises :class:`Overrun` asynchronously in the hook's thread
(``PyThreadState_SetAsyncExc``), which interrupts a runaway Python loop at
its next bytecode. A handler blocked inside a C call cannot be interrupted
this way; that is what process isolation (reflow.functions) is for.

Arming is one tuple written to one attribute (thread, deadline); the tuple
itself is the token, so the watcher never sees a new call with an old
deadline. Disarming takes no lock in the usual case: the watcher announces
the call it is about to check (``_firing``) before checking it, and fires
only if that call is still armed; disarm clears the slot first and looks at
``_firing`` and ``_fired`` after, so a watcher that could still fire for
this call is always seen, and only then does disarm wait on the lock for it
(and let an exception not yet raised land inside itself). The watcher polls
every 10 ms.
(A watcher that slept until the deadline it last saw woke far less
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

_Armed = tuple[int, float]  # thread id, deadline: one object, swapped atomically; the token
_monotonic = time.monotonic
_get_ident = threading.get_ident


class Overrun(BaseException):
    """Raised inside a handler that ran past its limit.

    A BaseException on purpose: a handler's ``except Exception`` must not swallow it.
    """


class Watchdog:
    """One watcher thread for every inline time limit in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: _Armed | None = None
        self._firing: _Armed | None = None  # the call the watcher is checking now
        self._fired: _Armed | None = None  # the last call it interrupted
        self._watcher: threading.Thread | None = None

    def arm(self, seconds: float) -> _Armed:
        """Start timing the calling thread; returns the token for :meth:`disarm`."""
        return self.arm_until(_monotonic() + seconds)

    def arm_until(self, deadline: float) -> _Armed:
        """:meth:`arm` with a deadline on ``time.monotonic()``'s clock."""
        if self._watcher is None:
            self._start()
        armed = self._armed = (_get_ident(), deadline)
        return armed

    def disarm(self, token: _Armed) -> bool:
        """Stop timing; True if the limit fired for this token.

        When it returns, no exception for this token can arrive any more: if the
        limit fired and its :class:`Overrun` is still pending (the handler
        returned just before it landed), it is raised here, inside the caller's
        ``try``, rather than later in unrelated code.
        """
        self._armed = None
        if self._firing is not token and self._fired is not token:
            # The watcher is not checking this call and did not fire for it; from
            # now on it cannot (the slot no longer holds the token).
            return False
        with self._lock:  # wait until the watcher has decided
            fired = self._fired is token
        if fired:
            # A pending asynchronous exception is raised when this thread next
            # checks for one; a Python-level call does (on entry). Clearing it
            # instead with PyThreadState_SetAsyncExc(id, NULL) is not an option:
            # on CPython 3.11 that leaves the interpreter's "async exception
            # pending" flag set for good, and under a tracer (coverage) every
            # thread then livelocks over the GIL.
            _take_pending()
        return fired

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
            if armed is not None and _monotonic() >= armed[1]:
                self._fire(armed)

    def _fire(self, armed: _Armed) -> None:
        with self._lock:
            self._firing = armed  # announced before the check: disarm looks after clearing
            try:
                if self._armed is armed:
                    self._armed = None
                    self._fired = armed
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(armed[0]), ctypes.py_object(Overrun)
                    )
            finally:
                self._firing = None


def _take_pending() -> None:
    """Do nothing, in Python: entering it lets a pending asynchronous exception land."""


WATCHDOG = Watchdog()
