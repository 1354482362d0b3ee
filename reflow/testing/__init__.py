"""What users test their reflow apps with: a fake clock, and more as it lands."""

from __future__ import annotations

from reflow.testing.clock import FakeClock

__all__ = ["FakeClock"]
