"""The worker framing and the metrics arithmetic."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.functions import wire
from reflow.functions.metrics import FunctionMetrics, percentile, prometheus_text

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values, st.sampled_from([wire.INVOKE, wire.RESULT, wire.ERROR]))
def test_any_json_value_survives_a_frame_round_trip(value: Any, kind: int) -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(wire.encode(kind, value))
        assert wire.read_frame(right) == (kind, value)


def test_frame_header_is_length_then_kind() -> None:
    frame = wire.encode(wire.RESULT, [1])
    assert frame == b"\x00\x00\x00\x03\x03[1]"


def test_end_of_stream_mid_frame_reads_as_none() -> None:
    left, right = socket.socketpair()
    with right:
        left.sendall(wire.encode(wire.RESULT, "abcdef")[:7])
        left.close()
        assert wire.read_frame(right) is None


def test_a_frame_reader_reads_frames_that_arrive_together_one_at_a_time() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(wire.encode(wire.INVOKE, {"p": 1}) + wire.encode(wire.REPLY, {"ok": "x"}))
        frames = wire.FrameReader(right)
        assert frames.read() == (wire.INVOKE, {"p": 1})
        assert frames.read() == (wire.REPLY, {"ok": "x"})


def test_a_frame_reader_joins_a_frame_that_arrives_in_pieces() -> None:
    left, right = socket.socketpair()
    big = "x" * (3 * 64 * 1024)  # more than one recv asks for
    data = wire.encode(wire.RESULT, big) + wire.encode(wire.RESULT, 7)
    with left, right:
        left.sendall(data[:3])  # part of the header
        frames = wire.FrameReader(right)
        sender = threading.Thread(target=left.sendall, args=(data[3:],))
        sender.start()
        assert frames.read() == (wire.RESULT, big)
        assert frames.read() == (wire.RESULT, 7)
        sender.join()


def test_a_frame_reader_sees_the_end_of_stream_mid_frame_as_none() -> None:
    left, right = socket.socketpair()
    with right:
        left.sendall(wire.encode(wire.RESULT, "abcdef")[:7])
        left.close()
        assert wire.FrameReader(right).read() is None


def test_a_frame_reader_refuses_a_header_past_the_limit_before_reading_the_body() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(wire.HEADER.pack(wire.MAX_FRAME + 1, wire.RESULT))
        with pytest.raises(ValueError, match="exceeds"):
            wire.FrameReader(right).read()


def test_percentile_by_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 0.5) == 51.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([], 0.5) is None


def test_metrics_track_concurrency_peaks_and_errors() -> None:
    metrics = FunctionMetrics("f")
    metrics.started()
    metrics.started()
    metrics.finished(0.002, error=False)
    metrics.finished(0.004, error=True)
    metrics.cold_start(0.003)
    snap = metrics.snapshot()
    assert snap["invocations"] == 2 and snap["errors"] == 1
    assert snap["max_concurrent_executions"] == 2 and snap["concurrent_executions"] == 0
    assert snap["cold_starts"] == 1 and snap["init_duration_ms"] == 3.0
    assert snap["duration_p99_ms"] == 4.0


def test_prometheus_text_exposes_counters_gauges_and_a_duration_summary() -> None:
    metrics = FunctionMetrics('we"ird\\name')
    metrics.started()
    metrics.finished(0.25, error=True)
    metrics.throttles = 3
    text = prometheus_text([metrics.snapshot()])
    label = 'function="we\\"ird\\\\name"'
    assert "# TYPE reflow_function_invocations_total counter" in text
    assert f"reflow_function_invocations_total{{{label}}} 1" in text.splitlines()
    assert f"reflow_function_errors_total{{{label}}} 1" in text.splitlines()
    assert f"reflow_function_throttles_total{{{label}}} 3" in text.splitlines()
    assert f"reflow_function_concurrent_executions{{{label}}} 0" in text.splitlines()
    assert "# TYPE reflow_function_duration_seconds summary" in text
    assert f'reflow_function_duration_seconds{{{label},quantile="0.99"}} 0.25' in text
    assert f"reflow_function_duration_seconds_sum{{{label}}} 0.25" in text
    assert f"reflow_function_duration_seconds_count{{{label}}} 1" in text
    assert text.endswith("\n")
