"""The hand-off between the event loop and a synchronous inline handler's thread.

One :class:`Handoff` links the loop (the *caller*) with one handler thread
(the *worker*), one call at a time:

* caller: ``call(item, spin, timeout)`` hands ``item`` over and waits for the
  worker's result at most ``timeout`` seconds; past that it returns
  :data:`PENDING` and the call is *detached*. ``send(item)`` hands an item
  over detached from the start.
* worker: ``wait(spin)`` returns the next item (None once closed);
  ``finish(result, spin)`` gives the result to the waiting caller and waits
  for the next item, or returns :data:`PENDING` at once when the call was
  detached (the result must then reach the caller another way).

Whether a call is answered through the hand-off or detached is decided once,
atomically: never both, never neither.

The C implementation (``reflow._handoff``, built with the package when a
compiler is there) spins for ``spin`` seconds with the GIL released before it
parks, and publishes with the GIL already released, so a fast call costs no
kernel wake-up at all. :class:`PyHandoff` is the pure-Python fallback: a
queue and a lock, two wake-ups per call; it ignores ``spin``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Protocol

__all__ = ["PENDING", "Handoff", "PyHandoff", "available", "new_handoff"]


class Handoff(Protocol):
    """What both implementations offer (see the module docstring)."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        ...

    def call(self, item: object, spin: float, timeout: float, /) -> Any:
        """Hand ``item`` over; its result, or PENDING after ``timeout`` (detached)."""
        ...

    def send(self, item: object, /) -> None:
        """Hand ``item`` over detached: nobody waits for it here."""
        ...

    def wait(self, spin: float, /) -> Any:
        """The next item (worker side); None once closed."""
        ...

    def finish(self, result: object, spin: float, /) -> Any:
        """Answer the call and wait for the next item, or PENDING if detached."""
        ...

    def close(self) -> None:
        """Make the worker's waits return None from now on."""
        ...


_c_handoff: Callable[[], Handoff] | None
try:
    from reflow._handoff import PENDING as _C_PENDING
    from reflow._handoff import Handoff as _CHandoff
except ImportError:  # built without a C compiler
    _c_handoff = None
    PENDING: object = object()
else:
    _c_handoff = _CHandoff
    PENDING = _C_PENDING

_EMPTY, _POSTED, _DETACHED, _DONE = range(4)


class PyHandoff:
    """The hand-off in pure Python: items through a queue, the result through a lock.

    The states are simpler than the C ones (the worker taking an item
    changes nothing): ``_state`` moves EMPTY → POSTED (→ DETACHED) → DONE →
    EMPTY, and the POSTED → DONE / POSTED → DETACHED race is settled under
    ``_lock``.
    """

    def __init__(self) -> None:
        self._items: SimpleQueue[object] = SimpleQueue()
        self._done = threading.Lock()  # held except between DONE and the caller's take
        self._done.acquire()
        self._lock = threading.Lock()
        self._state = _EMPTY
        self._result: object = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _post(self, item: object, state: int) -> None:
        if self._state != _EMPTY:
            raise RuntimeError("a call is already in progress")
        if self._closed:
            raise RuntimeError("the hand-off is closed")
        self._state = state
        self._items.put(item)

    def call(self, item: object, spin: float, timeout: float, /) -> Any:
        """Hand ``item`` over; its result, or PENDING after ``timeout`` (detached)."""
        self._post(item, _POSTED)
        if not self._done.acquire(timeout=timeout):
            with self._lock:
                if self._state != _DONE:
                    self._state = _DETACHED
                    return PENDING
            self._done.acquire()  # DONE just now: released, or about to be
        result, self._result = self._result, None
        self._state = _EMPTY
        return result

    def send(self, item: object, /) -> None:
        """Hand ``item`` over detached: nobody waits for it here."""
        self._post(item, _DETACHED)

    def wait(self, spin: float, /) -> Any:
        """The next item (worker side); None once closed."""
        item = self._items.get()
        return None if self._closed else item

    def finish(self, result: object, spin: float, /) -> Any:
        """Answer the call and wait for the next item, or PENDING if detached."""
        with self._lock:
            if self._state not in (_POSTED, _DETACHED):
                raise RuntimeError("no call is running")
            if self._state == _DETACHED:
                self._state = _EMPTY
                return PENDING
            self._result = result
            self._state = _DONE
        self._done.release()
        return self.wait(spin)

    def close(self) -> None:
        """Make the worker's waits return None from now on."""
        self._closed = True
        self._items.put(None)


def available() -> bool:
    """Whether the C hand-off was built."""
    return _c_handoff is not None


def new_handoff(*, pure: bool = False) -> Handoff:
    """A hand-off: the C one if it was built (and not ``pure``), else :class:`PyHandoff`."""
    if pure or _c_handoff is None:
        return PyHandoff()
    return _c_handoff()
