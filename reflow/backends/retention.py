"""Trimming a consumed ``Log`` stream without dropping an entry a consumer still needs.

Acknowledging an entry only clears it from the group's pending list; the entry
stays in the stream. :class:`AckedTrimmer` bounds such a stream using only the
``Log`` protocol (which does not expose a group's last-delivered position):

* a group delivers entries in id order, so once this process has been handed
  (and acknowledged) entry ``H``, every entry up to ``H`` has been delivered to
  some consumer of that group;
* a delivered entry is pending until acknowledged and never becomes
  undelivered again, so every delivered entry older than the group's oldest
  pending entry ``P`` is acknowledged for good.

Entries older than ``min(H, P)`` for every group are therefore done with. The
trimmer drops, on top of that, only entries at least ``keep`` seconds older
than that bound (``max_age`` trimming, which — unlike ``max_length`` — cannot
race with concurrent appends). ``keep`` also absorbs clock skew where entry ids
carry another clock (Redis ids carry the server's): the trim is safe while the
skew is under ``keep``, and is skipped when the ids look ahead of this
process's clock by more than half of it.

A group this process has not acknowledged anything of blocks trimming by this
process (another process that consumes it trims instead); every group that
reads the stream must be named, since the protocol cannot list them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from reflow.backends.protocols import Log, entry_id_key
from reflow.clock import Clock

__all__ = ["AckedTrimmer"]


class AckedTrimmer:
    """Remembers what this process acknowledged and trims streams up to it safely.

    Call :meth:`acked` after every acknowledgement (or whenever entries were
    handed to this process), and :meth:`trim` now and then (every ``every``
    seconds is what :meth:`due` tells).
    """

    def __init__(self, log: Log, clock: Clock, *, keep: float = 600.0, every: float = 60.0):
        self.log = log
        self.clock = clock
        self.keep = keep
        self.every = every
        self.trimmed = 0  # entries dropped so far, for metrics and tests
        self._high: dict[tuple[str, str], tuple[int, int]] = {}
        self._next = clock.time() + every

    def acked(self, stream: str, group: str, ids: Sequence[str]) -> None:
        """Note that ``ids`` of ``group`` on ``stream`` were delivered to this process."""
        if not ids:
            return
        newest = max(entry_id_key(entry_id) for entry_id in ids)
        known = self._high.get((stream, group))
        if known is None or newest > known:
            self._high[(stream, group)] = newest

    def due(self) -> bool:
        """Whether ``every`` seconds passed since the last time this said yes."""
        now = self.clock.time()
        if now < self._next:
            return False
        self._next = now + self.every
        return True

    async def bound(self, stream: str, groups: Collection[str]) -> int | None:
        """The millisecond before which every entry of ``stream`` is done with, or None."""
        bound: int | None = None
        for group in groups:
            high = self._high.get((stream, group))
            if high is None:
                return None  # nothing known delivered in this group: keep everything
            limit = high[0]
            pending = await self.log.pending(stream, group, count=1)
            if pending:
                limit = min(limit, entry_id_key(pending[0].id)[0])
            bound = limit if bound is None else min(bound, limit)
        return bound

    async def trim(self, stream: str, groups: Collection[str]) -> int:
        """Drop entries of ``stream`` every one of ``groups`` is done with, kept ``keep`` s."""
        bound = await self.bound(stream, groups)
        if bound is None:
            return 0
        now = self.clock.time()
        behind = now - bound / 1000
        if behind < -self.keep / 2:
            return 0  # the ids run far ahead of this clock: no safe cut-off on it
        # ``max_age`` cuts below (now - age); this puts the cut ``keep`` s before the bound.
        dropped = await self.log.trim(stream, max_age=max(behind, 0.0) + self.keep)
        self.trimmed += dropped
        return dropped
