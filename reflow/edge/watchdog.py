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
(and let an exception not yet raised land inside itself).

The watcher does not poll. It sleeps until the deadline of the call it last
saw armed, or, with nothing armed, for about the shortest limit it has been
woken for (1 s at first); an arm signals it only when its deadline is
earlier than the watcher's wake-up time. Under
load every hook arms with the same limit, so deadlines only move forward:
the hit path never signals, and the watcher wakes about once per limit (a
few times in 5 s) instead of polling. The 10 ms poll it replaces cost a
hooked server on one core 250-350 extra voluntary context switches a second
under wrk (GIL hand-overs between the watcher and the thread serving
requests) and woke an idle process a hundred times a second; see
bench/RESULTS.md "## edge".

No signal is used, so nothing here competes with an application's (or
pytest-timeout's) ``SIGALRM``.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Overrun", "Watchdog", "WATCHDOG"]

_IDLE = 1.0  # seconds the watcher first sleeps with nothing armed
_FLOOR = 0.01  # ... and never less: the old poll's period

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
        self._reset()
        # A forked child has no watcher thread, and a lock or event the parent's
        # watcher held at the fork stays held there: start over in the child.
        _watchdogs.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._armed: _Armed | None = None
        self._firing: _Armed | None = None  # the call the watcher is checking now
        self._fired: _Armed | None = None  # the last call it interrupted
        self._watcher: threading.Thread | None = None
        self._wakeup = threading.Event()
        # When the watcher looks next if it is waiting, or -inf while it is awake and
        # about to look anyway: an arm with an earlier deadline must wake it.
        self._wake_at = -math.inf
        self._signalled: float | None = None  # the deadline of the last arm that woke it
        self.wakeups = 0  # times the watcher woke up (for tests and benchmarks)

    def arm(self, seconds: float) -> _Armed:
        """Start timing the calling thread; returns the token for :meth:`disarm`."""
        return self.arm_until(_monotonic() + seconds)

    def arm_until(self, deadline: float) -> _Armed:
        """:meth:`arm` with a deadline on ``time.monotonic()``'s clock."""
        if self._watcher is None:
            self._start()
        armed = self._armed = (_get_ident(), deadline)
        if deadline < self._wake_at:  # due before the watcher looks: wake it (rare)
            self._signalled = deadline
            self._wakeup.set()
        return armed

    def call(self, deadline: float, function: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
        """``function(a, b)``, armed until ``deadline``: :meth:`arm_until` and :meth:`disarm`
        around the call in one Python call (the hooked hit path makes two per request).

        :class:`Overrun` propagates from here when the limit fired, as from
        ``disarm``'s caller.
        """
        if self._watcher is None:
            self._start()
        armed = self._armed = (_get_ident(), deadline)
        if deadline < self._wake_at:  # as in arm_until
            self._signalled = deadline
            self._wakeup.set()
        try:
            return function(a, b)
        finally:
            # disarm(armed), inline for the usual case.
            self._armed = None
            if self._firing is armed or self._fired is armed:
                self._settle(armed)

    def _settle(self, token: _Armed) -> None:
        """disarm's slow part: the watcher fired, or may be about to, for ``token``."""
        with self._lock:
            fired = self._fired is token
        if fired:
            _take_pending()

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
        # With nothing armed the watcher sleeps ``idle`` seconds. An arm signals it
        # only when its deadline comes before the watcher's wake-up, and then ``idle``
        # shrinks to that call's limit (roughly; never below _FLOOR), so that calls
        # with the same limit do not signal again: sleeping "until woken" instead
        # made every short hook call wake the watcher for nothing under load.
        idle = _IDLE
        while True:
            self._wakeup.clear()
            armed = self._armed
            now = _monotonic()
            signalled = self._signalled
            if signalled is not None:
                self._signalled = None
                idle = min(idle, max(_FLOOR, signalled - now))
            if armed is not None and now >= armed[1]:
                self._fire(armed)
                continue
            wake_at = now + idle if armed is None else armed[1]
            self._wake_at = wake_at
            # An arm between the read above and publishing ``wake_at`` compared its
            # deadline with -inf and did not signal: look again if it is due sooner.
            # (Only then: under load calls re-arm constantly with later deadlines.)
            current = self._armed
            if current is not armed and current is not None and current[1] < wake_at:
                self._wake_at = -math.inf
                continue
            self._wakeup.wait(wake_at - now)
            self._wake_at = -math.inf  # awake: the loop reads the slot again anyway
            self.wakeups += 1

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


def _forked() -> None:
    for watchdog in list(_watchdogs):
        watchdog._reset()


_watchdogs: weakref.WeakSet[Watchdog] = weakref.WeakSet()
os.register_at_fork(after_in_child=_forked)

WATCHDOG = Watchdog()
