"""The worker answers the availability probe from its invocation frame.

Drives :func:`reflow.functions.worker.serve` over a socket pair, playing the
runtime's side by hand, to see which frames a handler's first use of a
client puts on the wire.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from reflow.app import FunctionConfig
from reflow.functions import wire
from reflow.functions.remote import PROBE
from reflow.functions.worker import serve


def _reads_a_table(event: Any, context: Any) -> Any:
    return context.tables.sync.get(event)


CONFIG = FunctionConfig(name="reader", handler=_reads_a_table)


@pytest.fixture
def runtime_side() -> Iterator[socket.socket]:
    """The runtime's end of a socket pair whose other end a worker serves."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5.0)  # a test never waits unboundedly for the worker
    worker = threading.Thread(target=serve, args=(theirs, CONFIG), daemon=True)
    worker.start()
    try:
        yield ours
    finally:
        ours.close()  # the worker sees end of stream and returns
        worker.join(timeout=5.0)
        theirs.close()
    assert not worker.is_alive()


def _invoke(sock: socket.socket, frame: dict[str, Any], replies: dict[str, Any]) -> list[Any]:
    """Send one INVOKE; answer each CALL from ``replies`` by method; the CALLs, then the result."""
    sock.sendall(wire.encode(wire.INVOKE, frame))
    seen: list[Any] = []
    while True:
        got = wire.read_frame(sock)
        assert got is not None
        kind, body = got
        if kind != wire.CALL:
            seen.append((kind, body))
            return seen
        seen.append((body["c"], body["m"]))
        sock.sendall(wire.encode(wire.REPLY, replies[body["m"]]))


def test_a_client_the_frame_names_is_called_without_a_probe(runtime_side: socket.socket) -> None:
    frame = {"r": "r1", "t": 5.0, "p": "k1", "k": ["secrets", "tables"]}
    seen = _invoke(runtime_side, frame, {"get": {"ok": {"v": 1}}})
    assert seen == [("tables", "get"), (wire.RESULT, {"v": 1})]


def test_a_client_the_frame_does_not_name_is_probed_and_refused_as_the_runtime_says(
    runtime_side: socket.socket,
) -> None:
    refusal = {
        "error": {
            "type": "NotAvailableError",
            "message": "m",
            "fields": {"client": "tables", "reason": "it arrives with the tables service"},
        }
    }
    seen = _invoke(
        runtime_side, {"r": "r1", "t": 5.0, "p": "k1", "k": ["secrets"]}, {PROBE: refusal}
    )
    assert seen[0] == ("tables", PROBE)
    kind, error = seen[1]
    assert kind == wire.ERROR and error["errorType"] == "NotAvailableError"
    assert "it arrives with the tables service" in error["errorMessage"]


def test_a_frame_without_a_list_keeps_the_last_one_and_a_new_list_replaces_it(
    runtime_side: socket.socket,
) -> None:
    replies = {PROBE: {"ok": None}, "get": {"ok": 2}}
    first = {"r": "r1", "t": 5.0, "p": "k1", "k": ["tables"]}
    assert _invoke(runtime_side, first, replies) == [("tables", "get"), (wire.RESULT, 2)]
    # The runtime sends the list only when it changed: the last one holds.
    same = {"r": "r2", "t": 5.0, "p": "k2"}
    assert _invoke(runtime_side, same, replies) == [("tables", "get"), (wire.RESULT, 2)]
    # The client stopped: the next frame says so, and the worker asks again.
    gone = {"r": "r3", "t": 5.0, "p": "k3", "k": ["secrets"]}
    assert _invoke(runtime_side, gone, replies) == [
        ("tables", PROBE),
        ("tables", "get"),
        (wire.RESULT, 2),
    ]


def test_a_worker_never_told_asks(runtime_side: socket.socket) -> None:
    replies = {PROBE: {"ok": None}, "get": {"ok": 3}}
    bare = {"r": "r1", "t": 5.0, "p": "k1"}
    assert _invoke(runtime_side, bare, replies) == [
        ("tables", PROBE),
        ("tables", "get"),
        (wire.RESULT, 3),
    ]
