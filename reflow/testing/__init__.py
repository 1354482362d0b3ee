"""What users test their reflow apps with: a fake clock and a handler harness."""

from __future__ import annotations

from reflow.testing.clock import FakeClock
from reflow.testing.harness import Harness, RecordingCache

__all__ = ["FakeClock", "Harness", "RecordingCache"]
