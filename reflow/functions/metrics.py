"""Per-function metrics: what ``reflow functions list`` and the dashboard show.

The names follow Lambda's CloudWatch metrics (Invocations, Errors, Throttles,
ConcurrentExecutions, Duration, InitDuration) so that operators read them
without a glossary. Durations keep a bounded window of recent samples for
the percentiles; counters are plain integers. Everything here is cheap
enough to update on every invocation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FunctionMetrics", "label_value", "percentile", "prometheus_text"]

WINDOW = 2048  # recent durations kept for p50/p99


def percentile(samples: list[float], fraction: float) -> float | None:
    """The ``fraction`` percentile of ``samples`` by nearest rank (None if empty)."""
    if not samples:
        return None
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class FunctionMetrics:
    """Counters and recent durations of one function."""

    name: str
    invocations: int = 0
    errors: int = 0
    throttles: int = 0
    timeouts: int = 0
    crashes: int = 0
    cold_starts: int = 0
    concurrent: int = 0
    max_concurrent: int = 0
    async_accepted: int = 0
    async_retries: int = 0
    dead_letters: int = 0
    completed: int = 0
    duration_total: float = 0.0  # seconds, over every completed invocation
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    init_durations: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def started(self) -> None:
        """An execution began."""
        self.invocations += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)

    def finished(self, seconds: float, *, error: bool) -> None:
        """An execution ended after ``seconds``."""
        self.concurrent -= 1
        self.durations.append(seconds)
        self.completed += 1
        self.duration_total += seconds
        if error:
            self.errors += 1

    def cold_start(self, init_seconds: float) -> None:
        """A new worker was initialised for an invocation."""
        self.cold_starts += 1
        self.init_durations.append(init_seconds)

    def snapshot(self) -> dict[str, Any]:
        """The figures as plain JSON values; durations in milliseconds."""
        durations = list(self.durations)
        inits = list(self.init_durations)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "name": self.name,
            "invocations": self.invocations,
            "errors": self.errors,
            "throttles": self.throttles,
            "timeouts": self.timeouts,
            "crashes": self.crashes,
            "cold_starts": self.cold_starts,
            "concurrent_executions": self.concurrent,
            "max_concurrent_executions": self.max_concurrent,
            "async_accepted": self.async_accepted,
            "async_retries": self.async_retries,
            "dead_letters": self.dead_letters,
            "duration_p50_ms": ms(percentile(durations, 0.5)),
            "duration_p99_ms": ms(percentile(durations, 0.99)),
            "init_duration_ms": ms(sum(inits) / len(inits)) if inits else None,
            "completed": self.completed,
            "duration_total_s": round(self.duration_total, 6),
        }


# name in the snapshot → (metric name, type, help)
_EXPOSED = (
    ("invocations", "reflow_function_invocations_total", "counter", "Invocations started."),
    ("errors", "reflow_function_errors_total", "counter", "Invocations that failed."),
    ("throttles", "reflow_function_throttles_total", "counter", "Calls refused over reserved."),
    ("timeouts", "reflow_function_timeouts_total", "counter", "Invocations past their timeout."),
    ("crashes", "reflow_function_crashes_total", "counter", "Worker processes that died."),
    ("cold_starts", "reflow_function_cold_starts_total", "counter", "New workers for a call."),
    ("dead_letters", "reflow_function_dead_letters_total", "counter", "Events dead-lettered."),
    ("concurrent_executions", "reflow_function_concurrent_executions", "gauge", "Running now."),
)


def label_value(value: str) -> str:
    """``value`` escaped for a Prometheus label: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(snapshots: list[dict[str, Any]]) -> str:
    """Snapshots (``FunctionMetrics.snapshot()``) in Prometheus' text format 0.0.4."""
    lines: list[str] = []
    for key, metric, kind, text in _EXPOSED:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        for row in snapshots:
            lines.append(f'{metric}{{function="{label_value(row["name"])}"}} {row[key]}')
    metric = "reflow_function_duration_seconds"
    lines += [f"# HELP {metric} Recent invocation durations.", f"# TYPE {metric} summary"]
    for row in snapshots:
        name = label_value(row["name"])
        for quantile, key in (("0.5", "duration_p50_ms"), ("0.99", "duration_p99_ms")):
            if row[key] is not None:
                seconds = row[key] / 1000
                lines.append(f'{metric}{{function="{name}",quantile="{quantile}"}} {seconds:g}')
        lines.append(f'{metric}_sum{{function="{name}"}} {row["duration_total_s"]:g}')
        lines.append(f'{metric}_count{{function="{name}"}} {row["completed"]}')
    return "\n".join(lines) + "\n"
