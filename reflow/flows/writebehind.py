"""Write-behind for one execution's saves: one write in flight, the ones after it merged.

A Pass, Choice, Succeed or Fail transition has no effect outside the
execution record, so the durable runner need not wait for its save before
computing the next one. :class:`SaveQueue` keeps at most one write in flight
per execution; saves prepared meanwhile (each by
:meth:`~reflow.flows.store.ExecutionStore.prepare`, in order, so the history
tail and chunk bookkeeping stay right) are merged into one — the newest
record with every history chunk the others filled — and written, at the
version the finished write returned, as soon as it lands.

Why this is safe: nothing outside the record sees an unsaved pure
transition, and before anything that does have an effect (a task call, a
timer, children, parking, the end of the execution) the runner calls
:meth:`SaveQueue.flush`. A crash loses only unsaved pure transitions; the
next worker resumes from the last written record and computes them again,
which no one can tell from a run that never crashed. A merged write is one
transaction, so a reader sees a record and its chunks together, always a
consistent prefix of the history.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from reflow.flows.store import ExecutionRecord, ExecutionStore, PreparedSave

__all__ = ["AHEAD", "AHEAD_BYTES", "PersistHook", "SaveQueue"]

PersistHook = Callable[[str, str, int], None]
"""Called as ``hook(phase, execution, seq)`` with phase ``"before"``/``"after"`` a save."""

# How far the runner may compute ahead of the durable record before it waits for the
# write in flight: a runaway pure loop is still saved regularly, and what a merged
# write carries (and what a crash makes the next worker redo) stays small.
AHEAD = 256  # transitions
AHEAD_BYTES = 1 << 20  # bytes of record and history chunks
TURN_EVERY = 8  # transitions between turns of the event loop (see pace)


class SaveQueue:
    """The saves of one execution's run: at most one in flight, the next ones merged.

    ``on_persist`` is called ``("before", name, seq)`` for every transition a
    write covers before the write is issued, and ``("after", name, seq)`` once
    it is durable.
    """

    def __init__(self, store: ExecutionStore, version: int, on_persist: PersistHook | None) -> None:
        self.store = store
        self.version = version  # of the newest record written
        self.hook = on_persist
        self._flight: asyncio.Task[int] | None = None
        self._flight_name = ""
        self._flight_seqs: list[int] = []
        self._pending: PreparedSave | None = None
        self._record: ExecutionRecord | None = None
        self._pending_seqs: list[int] = []
        self._pending_bytes = 0
        self._turns = 0

    def add(self, prepared: PreparedSave, record: ExecutionRecord | None = None) -> None:
        """Queue the next transition's save (prepared after every one queued before).

        With ``record``, ``prepared`` may come without the record's bytes (see
        :meth:`~reflow.flows.store.ExecutionStore.prepare`): the queue encodes
        ``record`` when it writes, so only the newest of a merged run is encoded.
        The caller then leaves ``record`` as it is until its next :meth:`add` or
        :meth:`flush`.
        """
        pending = self._pending
        if pending is None or not (pending.chunks or pending.timers or pending.tokens):
            self._pending = prepared  # the earlier one carries nothing the later lacks
        else:
            self._pending = pending.then(prepared)
        self._record = record
        self._pending_seqs.append(prepared.seq)
        self._pending_bytes += len(prepared.value)
        if prepared.chunks:
            self._pending_bytes += sum(len(chunk.value) for chunk in prepared.chunks)

    async def pace(self) -> None:
        """Let the queue move: issue what waits if nothing is in flight, and give the
        write in flight a chance to land; wait for it once far enough ahead.

        Raises :class:`~reflow.flows.store.FencedError` (everything queued is then
        dropped) as the write does.
        """
        flight = self._flight
        if flight is not None and flight.done():
            self._land()
            flight = None
        if flight is None:
            self._issue()
        elif len(self._pending_seqs) >= AHEAD or self._pending_bytes >= AHEAD_BYTES:
            await asyncio.wait((flight,))
            self._land()
            self._issue()
        # Every few transitions, one turn of the event loop: a write's result comes
        # back through it (and a backend that never suspends must not let a long loop
        # hold it forever). Not every one: a turn costs about as much as a fifth of
        # a transition, and noticing a landed write a few transitions late costs
        # nothing (the next write then carries a few transitions more).
        self._turns += 1
        if self._turns % TURN_EVERY:
            return
        await asyncio.sleep(0)
        flight = self._flight
        if flight is not None and flight.done():
            self._land()
            self._issue()

    async def flush(self) -> int:
        """Write everything queued and wait until it is durable; the record's version."""
        while True:
            flight = self._flight
            if flight is not None:
                await asyncio.wait((flight,))
                self._land()
            if self._pending is None:
                return self.version
            self._issue()

    def abandon(self) -> None:
        """Give up (the run failed or was cancelled): stop waiting for the write in
        flight, which lands or not like a write cut short by a crash."""
        flight, self._flight = self._flight, None
        self._pending, self._record = None, None
        if flight is None:
            return
        if flight.done():
            if not flight.cancelled():
                flight.exception()  # looked at: not reported as never retrieved
        else:
            flight.cancel()

    def _issue(self) -> None:
        pending = self._pending
        if pending is None:
            return
        seqs, record = self._pending_seqs, self._record
        self._pending, self._pending_seqs, self._pending_bytes = None, [], 0
        self._record = None
        if record is not None:
            pending = dataclasses.replace(pending, value=record.to_json())
        hook = self.hook
        if hook is not None:
            for seq in seqs:
                hook("before", pending.name, seq)
        self._flight_name, self._flight_seqs = pending.name, seqs
        self._flight = asyncio.ensure_future(self.store.write(pending, self.version))

    def _land(self) -> None:
        """Take the finished write's result (its exception drops everything queued)."""
        flight = self._flight
        assert flight is not None and flight.done()
        self._flight = None
        try:
            self.version = flight.result()
        except BaseException:
            self._pending, self._pending_seqs, self._pending_bytes = None, [], 0
            self._record = None
            raise
        hook = self.hook
        if hook is not None:
            for seq in self._flight_seqs:
                hook("after", self._flight_name, seq)
