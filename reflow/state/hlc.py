"""Hybrid logical clocks: timestamps that order writes across regions.

A hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014)
pairs the wall clock in milliseconds with a counter. :meth:`HybridClock.now`
never goes backwards and always exceeds every timestamp the clock has
:meth:`~HybridClock.observe`-d, so a write made after a region saw another
region's write is stamped later than it, even when the wall clocks disagree.
Ties between regions are broken by the region id, which makes the order
total: two distinct writes never compare equal.

The text form ``"<ms:015d>.<counter:06d>.<region>"`` sorts exactly as the
timestamps do, so a global table stores it in an attribute and compares it
with the ordinary condition builder (``attr("_hlc") < stamp``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.errors import InvalidItemError

__all__ = ["HLC", "HybridClock"]

_TEXT = re.compile(r"^(\d{15})\.(\d{6})\.([a-z0-9][a-z0-9-]*)$")
_MAX_COUNTER = 999_999


@dataclass(frozen=True, order=True)
class HLC:
    """One hybrid-logical-clock timestamp; fields compare in this order."""

    wall_ms: int
    counter: int
    region: str

    def __str__(self) -> str:
        return f"{self.wall_ms:015d}.{self.counter:06d}.{self.region}"

    @property
    def seconds(self) -> float:
        """The wall-clock part, in seconds since the epoch (for lag measurement)."""
        return self.wall_ms / 1000.0

    @classmethod
    def parse(cls, text: str) -> HLC:
        """Read what ``str()`` wrote; anything else is an :class:`InvalidItemError`."""
        match = _TEXT.match(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidItemError("<global table>", "_hlc", f"{text!r} is not an HLC timestamp")
        return cls(int(match.group(1)), int(match.group(2)), match.group(3))


class HybridClock:
    """A region's hybrid logical clock, reading wall time from the injected ``Clock``."""

    def __init__(self, region: str, clock: Clock = SYSTEM_CLOCK) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", region):
            raise InvalidItemError("<global table>", "region", f"{region!r} is not a region id")
        self.region = region
        self._clock = clock
        self._wall = 0
        self._counter = 0

    def now(self) -> HLC:
        """A fresh timestamp for a local write: later than any issued or observed."""
        physical = int(self._clock.time() * 1000)
        if physical > self._wall:
            self._wall, self._counter = physical, 0
        else:
            self._tick()
        return HLC(self._wall, self._counter, self.region)

    def observe(self, remote: HLC) -> None:
        """Merge a timestamp seen on a replicated write, so later local ones exceed it."""
        physical = int(self._clock.time() * 1000)
        if physical > self._wall and physical > remote.wall_ms:
            self._wall, self._counter = physical, 0
        elif remote.wall_ms > self._wall:
            self._wall, self._counter = remote.wall_ms, remote.counter
        elif remote.wall_ms == self._wall:
            self._counter = max(self._counter, remote.counter)
        # else: our own time line is ahead; nothing to merge.

    def _tick(self) -> None:
        if self._counter >= _MAX_COUNTER:
            # A million stamps in one millisecond: borrow the next millisecond
            # rather than overflow the fixed-width text form.
            self._wall, self._counter = self._wall + 1, 0
        else:
            self._counter += 1

    def __repr__(self) -> str:
        return f"HybridClock({self.region!r}, wall_ms={self._wall}, counter={self._counter})"
