"""The edge's counters and latency histograms, and their Prometheus exposition.

Everything here is updated on the request path, so the updates are as cheap
as Python allows: counters are attributes incremented in place, and a
:class:`Histogram` is a fixed list of bucket counts chosen with
:func:`bisect.bisect_left` — an observation allocates nothing (no sample
lists, no per-request objects). The cumulative ``le`` counts Prometheus
wants are summed only when the exposition is rendered, at scrape time.

:func:`prometheus_text` renders the figures in Prometheus' text exposition
format, version 0.0.4 (``# HELP`` / ``# TYPE`` lines, counters named
``*_total``, histograms as ``_bucket{le=...}``, ``_sum`` and ``_count``);
the admin API serves it at ``GET /metrics`` together with the functions
runtime's figures (:func:`reflow.functions.metrics.prometheus_text`). Given
the edge's :class:`~reflow.edge.purge.Purger`, it also says whether the
purge feed is up (``reflow_edge_purge_feed_up``, a 0/1 gauge).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reflow.functions.metrics import label_value

if TYPE_CHECKING:
    from reflow.edge.purge import Purger
    from reflow.edge.store import Store

__all__ = ["HOOK_BUCKETS", "ORIGIN_BUCKETS", "Histogram", "Metrics", "prometheus_text"]


# Upper bounds in seconds. Inline hooks take microseconds, process hooks and
# origins milliseconds; the top bounds cover the hooks' 5 s / 30 s limits.
def _steps(first: int, last: int) -> tuple[float, ...]:
    """1, 2.5 and 5 times each power of ten from 10**first to 10**last (Prometheus' usual steps)."""
    return tuple(
        round(step * 10.0**power, 12) for power in range(first, last + 1) for step in (1, 2.5, 5)
    )


HOOK_BUCKETS = (*_steps(-5, -1), 1.0, 5.0, 30.0)
ORIGIN_BUCKETS = (*_steps(-4, 0)[2:], 10.0, 30.0)


class Histogram:
    """Observations counted into fixed buckets; one list slot per bucket, no allocation.

    ``counts[i]`` holds the observations in ``(bounds[i-1], bounds[i]]`` and the
    last slot those above every bound (Prometheus' ``+Inf`` bucket).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        # bisect_left: the first bound >= value, so value <= le as Prometheus defines it.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """How many observations were made."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` for every bound, then ``(inf, count)``."""
        out = []
        running = 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Metrics:
    """The edge's counters and histograms, for the dashboard and Prometheus."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.refresh_hits = 0
        self.origin_fetches = 0
        self.origin_errors = 0
        self.bytes_out = 0
        self.rejected = 0
        self.hook_errors = 0
        self.purges = 0
        self.purged_objects = 0
        # Purge subscriptions reopened after a loss, and the objects each marked stale.
        self.purge_feed_gaps = 0
        self.purge_gap_objects = 0
        self.origin_latency = Histogram(ORIGIN_BUCKETS)
        # (hook, function) -> its time histogram; made once per hook, not per call.
        self.hook_latency: dict[tuple[str, str], Histogram] = {}

    def hook_timer(self, hook: str, function: str) -> Histogram:
        """The time histogram of ``function`` at ``hook`` (made on first use)."""
        timer = self.hook_latency.get((hook, function))
        if timer is None:
            timer = self.hook_latency[(hook, function)] = Histogram(HOOK_BUCKETS)
        return timer

    @property
    def origin_seconds(self) -> float:
        """Seconds spent waiting for origins, over every fetch."""
        return self.origin_latency.sum

    @property
    def hook_seconds(self) -> dict[str, float]:
        """Seconds spent in hooks, per hook (summed over functions)."""
        out: dict[str, float] = {}
        for (hook, _), timer in self.hook_latency.items():
            out[hook] = out.get(hook, 0.0) + timer.sum
        return out

    def snapshot(self) -> dict[str, Any]:
        """The figures as plain JSON values (``GET /api/edge/metrics``)."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stale": self.stale,
            "refresh_hits": self.refresh_hits,
            "origin_fetches": self.origin_fetches,
            "origin_errors": self.origin_errors,
            "origin_seconds": self.origin_seconds,
            "bytes_out": self.bytes_out,
            "rejected": self.rejected,
            "hook_seconds": self.hook_seconds,
            "hook_errors": self.hook_errors,
            "purges": self.purges,
            "purged_objects": self.purged_objects,
            "purge_feed_gaps": self.purge_feed_gaps,
            "purge_gap_objects": self.purge_gap_objects,
        }


# attribute of Metrics -> (metric name, help)
_COUNTERS = (
    ("hits", "reflow_edge_hits_total", "Requests answered from the cache while fresh."),
    ("misses", "reflow_edge_misses_total", "Requests that fetched from the origin."),
    ("stale", "reflow_edge_stale_total", "Requests answered with a stale stored response."),
    ("refresh_hits", "reflow_edge_refresh_hits_total", "Revalidations answered 304."),
    ("origin_fetches", "reflow_edge_origin_fetches_total", "Requests sent to origins."),
    ("origin_errors", "reflow_edge_origin_errors_total", "Origin fetches that failed."),
    ("bytes_out", "reflow_edge_response_bytes_total", "Response bytes written to viewers."),
    ("rejected", "reflow_edge_rejected_total", "Malformed requests and refused connections."),
    ("hook_errors", "reflow_edge_hook_errors_total", "Hook runs that failed (answered 502)."),
    ("purged_objects", "reflow_edge_purged_objects_total", "Objects purged by local purges."),
    (
        "purge_feed_gaps",
        "reflow_edge_purge_feed_gaps_total",
        "Purge subscriptions reopened after a loss (each marked the whole store stale).",
    ),
    (
        "purge_gap_objects",
        "reflow_edge_purge_gap_objects_total",
        "Objects marked stale because the purge subscription had a gap.",
    ),
)


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


def _histogram(lines: list[str], name: str, labels: str, histogram: Histogram) -> None:
    prefix = labels + "," if labels else ""
    for bound, count in histogram.cumulative():
        lines.append(f'{name}_bucket{{{prefix}le="{_number(bound)}"}} {count}')
    suffix = "{" + labels + "}" if labels else ""
    lines.append(f"{name}_sum{suffix} {_number(histogram.sum)}")
    lines.append(f"{name}_count{suffix} {histogram.count}")


def prometheus_text(
    metrics: Metrics, *, store: Store | None = None, purger: Purger | None = None
) -> str:
    """The edge's figures in Prometheus' text format 0.0.4 (newline-terminated)."""
    lines: list[str] = []
    for attribute, name, text in _COUNTERS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
        lines.append(f"{name} {getattr(metrics, attribute)}")
    name = "reflow_edge_purges_total"
    lines += [f"# HELP {name} Purges applied to this edge's store.", f"# TYPE {name} counter"]
    relayed = purger.relayed if purger is not None else 0
    lines.append(f'{name}{{source="local"}} {metrics.purges}')
    lines.append(f'{name}{{source="relayed"}} {relayed}')
    if purger is not None:
        # The Purger knows: true only while its subscription is open and being read,
        # false before start, while a lost one is being reopened, and after stop.
        name = "reflow_edge_purge_feed_up"
        lines += [
            f"# HELP {name} 1 while this edge's purge subscription is open and listening, else 0.",
            f"# TYPE {name} gauge",
            f"{name} {1 if purger.listening else 0}",
        ]
    if store is not None:
        for name, kind, text, value in (
            ("reflow_edge_store_objects", "gauge", "Responses held in the cache.", len(store)),
            ("reflow_edge_store_bytes", "gauge", "Bytes charged to the budget.", store.bytes),
            (
                "reflow_edge_store_evictions_total",
                "counter",
                "Entries evicted past the byte budget.",
                store.evictions,
            ),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    name = "reflow_edge_origin_duration_seconds"
    lines += [
        f"# HELP {name} Time from sending a request to an origin to its whole response.",
        f"# TYPE {name} histogram",
    ]
    _histogram(lines, name, "", metrics.origin_latency)
    name = "reflow_edge_hook_duration_seconds"
    lines += [
        f"# HELP {name} Time spent running edge functions, by hook and function.",
        f"# TYPE {name} histogram",
    ]
    for (hook, function), timer in sorted(metrics.hook_latency.items()):
        labels = f'hook="{label_value(hook)}",function="{label_value(function)}"'
        _histogram(lines, name, labels, timer)
    return "\n".join(lines) + "\n"
