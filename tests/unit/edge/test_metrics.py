"""The edge's histograms and Prometheus exposition, read back with a strict parser."""

from __future__ import annotations

import math
import tracemalloc

import pytest

from reflow.backends.memory import MemoryPubSub
from reflow.edge.metrics import HOOK_BUCKETS, Histogram, Metrics, prometheus_text
from reflow.edge.purge import Purger
from reflow.edge.store import Store
from reflow.functions.metrics import FunctionMetrics
from reflow.functions.metrics import prometheus_text as function_text
from reflow.testing import FakeClock
from tests.unit.edge.exposition import ExpositionError, parse
from tests.unit.edge.test_purge_gap import FlakyPubSub, advance_until, until


def test_an_observation_on_a_bound_counts_in_that_bucket_and_above_all_in_inf() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(8.65)


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 0.5))


def test_observing_allocates_nothing_that_stays() -> None:
    histogram = Histogram(HOOK_BUCKETS)
    histogram.observe(0.001)  # warm: the first int past the small-int cache
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for index in range(20_000):
            histogram.observe((index % 97) * 1e-5)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 2048, grown  # a sample list would hold ~20,000 floats (hundreds of KB)
    assert histogram.count == 20_001


def test_the_exposition_parses_and_carries_every_figure() -> None:
    metrics = Metrics()
    metrics.hits, metrics.misses, metrics.stale, metrics.bytes_out = 7, 3, 2, 4096
    metrics.purges, metrics.purged_objects = 1, 5
    metrics.origin_latency.observe(0.004)
    metrics.origin_latency.observe(0.2)
    metrics.hook_timer("viewer-request", "ab").observe(0.00002)
    metrics.hook_timer("viewer-response", "sec").observe(3.0)
    purger = Purger(Store())
    purger.relayed = 4
    families = parse(prometheus_text(metrics, store=Store(), purger=purger))
    assert families["reflow_edge_hits_total"].type == "counter"
    assert families["reflow_edge_hits_total"].value() == 7
    assert families["reflow_edge_misses_total"].value() == 3
    assert families["reflow_edge_stale_total"].value() == 2
    assert families["reflow_edge_response_bytes_total"].value() == 4096
    purges = families["reflow_edge_purges_total"]
    assert (purges.value(source="local"), purges.value(source="relayed")) == (1, 4)
    assert families["reflow_edge_purged_objects_total"].value() == 5
    assert families["reflow_edge_store_objects"].type == "gauge"
    origin = families["reflow_edge_origin_duration_seconds"]
    assert origin.type == "histogram"
    assert origin.value("reflow_edge_origin_duration_seconds_count") == 2
    assert origin.value("reflow_edge_origin_duration_seconds_bucket", le="0.005") == 1
    assert origin.value("reflow_edge_origin_duration_seconds_bucket", le="+Inf") == 2
    hooks = families["reflow_edge_hook_duration_seconds"]
    name = "reflow_edge_hook_duration_seconds"
    assert hooks.value(f"{name}_count", hook="viewer-request", function="ab") == 1
    assert hooks.value(f"{name}_bucket", hook="viewer-request", function="ab", le="2.5e-05") == 1
    assert hooks.value(f"{name}_bucket", hook="viewer-response", function="sec", le="1.0") == 0
    assert hooks.value(f"{name}_sum", hook="viewer-response", function="sec") == 3.0
    assert all(f.help for f in families.values())


async def test_the_purge_feed_gauge_follows_the_purgers_subscription() -> None:
    clock = FakeClock()
    flaky = FlakyPubSub(MemoryPubSub(), clock)
    purger = Purger(Store(), flaky, node="edge", clock=clock)

    def feed_up() -> float:
        family = parse(prometheus_text(Metrics(), purger=purger))["reflow_edge_purge_feed_up"]
        assert family.type == "gauge" and family.help
        return family.value()

    assert feed_up() == 0  # not subscribed before start
    await purger.start()
    try:
        assert feed_up() == 1
        flaky.break_all(ConnectionResetError("reset by the test"))
        await until(lambda: not purger.listening)
        assert feed_up() == 0  # down while the subscription is being reopened
        await advance_until(clock, lambda: purger.listening)
        assert feed_up() == 1
    finally:
        await purger.stop()
    assert feed_up() == 0
    # Without a purger the edge does not know, and says nothing.
    assert "reflow_edge_purge_feed_up" not in parse(prometheus_text(Metrics()))


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    awkward = 'say "hi"\\now\nthen'
    metrics.hook_timer("viewer-request", awkward).observe(0.001)
    text = prometheus_text(metrics)
    assert "\nthen" not in text  # the raw newline never reaches the exposition
    hooks = parse(text)["reflow_edge_hook_duration_seconds"]
    labels = {label for _, ls, _ in hooks.samples for label in [ls.get("function")]}
    assert labels == {awkward}


def test_the_functions_export_and_the_edge_export_join_into_one_valid_exposition() -> None:
    row = FunctionMetrics("render")
    row.started()
    row.finished(0.012, error=False)
    text = prometheus_text(Metrics()) + function_text([row.snapshot()])
    families = parse(text)
    assert families["reflow_function_invocations_total"].value(function="render") == 1
    assert families["reflow_function_duration_seconds"].type == "summary"
    assert "reflow_edge_hits_total" in families


@pytest.mark.parametrize(
    "text",
    [
        "a_total 1",  # no final newline
        "# TYPE a_total counter\na_total -1\n",  # a counter below zero
        "# TYPE a counter\na 1\n",  # a counter not named *_total
        'a{l="x\\q"} 1\n',  # an escape the format does not have
        'a{l="x} 1\n',  # an unterminated label value
        "a 1\nb 1\na 2\n",  # one family's samples apart
        "a 1\n# TYPE a gauge\n",  # TYPE after a sample
        "a one\n",  # not a number
        "# TYPE h histogram\n"  # buckets that fall
        'h_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
        "# TYPE h histogram\n"  # +Inf disagrees with _count
        'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 2\n',
        "# TYPE h histogram\n"  # no +Inf bucket
        'h_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
        "a 1\n\nb 2\n",  # a blank line
        'a{l="1",l="2"} 1\n',  # a repeated label
        "a 1\na 2\n",  # a duplicate series
    ],
)
def test_the_strict_parser_refuses_malformed_expositions(text: str) -> None:
    with pytest.raises(ExpositionError):
        parse(text)
