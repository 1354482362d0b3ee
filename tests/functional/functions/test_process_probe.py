"""A worker learns from the INVOKE frame which clients the runtime serves.

Reaching ``context.<client>`` in a worker must raise ``NotAvailableError``
where the client is missing, as inline, but must not cost a round trip per
invocation where it is present: the runtime names the clients it serves in
each frame and only a missing one is asked about.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reflow.errors import HandlerError, NotAvailableError
from reflow.functions import Context, Runtime, register_client
from reflow.functions.context import unregister_client
from reflow.functions.remote import PROBE, serve_call
from tests.functional.functions import clients_app, sample_app


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every platform call the runtime serves for a worker, as (client, method)."""
    seen: list[tuple[str, str]] = []

    async def counting(context: Context, body: Any) -> dict[str, Any]:
        seen.append((body["c"], body["m"]))
        return await serve_call(context, body)

    monkeypatch.setattr("reflow.functions.pools.serve_call", counting)
    return seen


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REFLOW_SECRETS_DIR", str(tmp_path))
    (tmp_path / "db").write_text("s3cret\n")
    return tmp_path


class _Bus:
    """A stand-in events client, as reflow.events would register one."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def put_events(self, entries: list[dict[str, Any]]) -> int:
        return len(entries)


def _bus(context: Context) -> _Bus:
    return _Bus(context)


@pytest.fixture
def bus() -> Iterator[None]:
    register_client("events", _bus)
    try:
        yield
    finally:
        unregister_client("events", _bus)


def _inline_message(client: str) -> str:
    """What reaching ``client`` raises in an inline handler."""
    with pytest.raises(NotAvailableError) as caught:
        getattr(Context(sample_app.app.functions["emits"]), client)
    return str(caught.value)


async def test_a_secret_read_from_a_worker_is_one_round_trip_per_invocation(
    vault: Path, calls: list[tuple[str, str]]
) -> None:
    async with Runtime(clients_app.app) as runtime:
        for _ in range(3):
            assert await runtime.invoke("secret_process", {"name": "db"}) == "s3cret"
    assert calls == [("secrets", "get")] * 3


async def test_a_registered_client_is_not_probed_from_a_warm_worker(
    bus: None, calls: list[tuple[str, str]]
) -> None:
    async with Runtime(sample_app.app) as runtime:
        for n in range(2):
            assert await runtime.invoke("emits", {"n": n}) == {"first": 1, "second": 1}
    # Two calls per invocation (async, then sync), and no probe.
    assert calls == [("events", "put_events")] * 4


async def test_an_unregistered_client_still_asks_the_runtime_and_gets_the_inline_error(
    calls: list[tuple[str, str]],
) -> None:
    async with Runtime(sample_app.app) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke("emits", {"n": 1})
    assert caught.value.error_type == "NotAvailableError"
    assert caught.value.error_message == _inline_message("events")
    assert calls == [("events", PROBE)]


async def test_a_client_unregistered_while_the_worker_lives_is_not_available_next_time(
    calls: list[tuple[str, str]],
) -> None:
    register_client("events", _bus)
    try:
        async with Runtime(sample_app.app) as runtime:
            assert await runtime.invoke("emits", {"n": 1}) == {"first": 1, "second": 1}
            unregister_client("events", _bus)
            with pytest.raises(HandlerError) as caught:
                await runtime.invoke("emits", {"n": 2})
            cold_starts = runtime.pools["emits"].metrics.cold_starts
    finally:
        unregister_client("events", _bus)
    assert caught.value.error_type == "NotAvailableError"
    assert caught.value.error_message == _inline_message("events")
    assert calls == [("events", "put_events")] * 2 + [("events", PROBE)]
    assert cold_starts == 1  # the same warm worker saw both frames


async def test_a_client_that_stops_after_the_frame_is_refused_at_its_first_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    async def stopping_first(context: Context, body: Any) -> dict[str, Any]:
        # The subsystem stops after the runtime sent the frame naming it.
        unregister_client("events", _bus)
        return await serve_call(context, body)

    monkeypatch.setattr("reflow.functions.pools.serve_call", stopping_first)
    register_client("events", _bus)
    try:
        async with Runtime(sample_app.app) as runtime:
            with pytest.raises(HandlerError) as caught:
                await runtime.invoke("emits", {"n": 1})
    finally:
        unregister_client("events", _bus)
    assert caught.value.error_type == "NotAvailableError"
    assert caught.value.error_message == _inline_message("events")


def test_the_frame_names_registered_clients_and_the_built_in_secrets() -> None:
    from reflow.functions.remote import available_clients

    assert "blobs" not in available_clients()  # its proxy does not probe
    before = available_clients()
    assert "secrets" in before and "tables" not in before

    def tables(context: Context) -> object:
        return object()

    register_client("tables", tables)
    try:
        assert "tables" in available_clients()
    finally:
        unregister_client("tables", tables)
    assert available_clients() == before


async def test_a_client_registered_while_the_worker_lives_is_served_without_a_probe(
    calls: list[tuple[str, str]],
) -> None:
    async with Runtime(sample_app.app) as runtime:
        with pytest.raises(HandlerError):
            await runtime.invoke("emits", {"n": 1})
        register_client("events", _bus)
        try:
            assert await runtime.invoke("emits", {"n": 2}) == {"first": 1, "second": 1}
            assert await runtime.invoke("emits", {"n": 3}) == {"first": 1, "second": 1}
        finally:
            unregister_client("events", _bus)
        cold_starts = runtime.pools["emits"].metrics.cold_starts
    assert calls == [("events", PROBE)] + [("events", "put_events")] * 4
    assert cold_starts == 1


async def test_a_worker_called_without_a_platform_door_raises_the_inline_error_type() -> None:
    """``Worker.call`` without ``on_call`` (no runtime behind it) answers every
    platform call with a ``NotAvailableError`` the worker can raise as such."""
    from reflow.functions import wire

    async with Runtime(sample_app.app) as runtime:
        zygote = runtime.zygote
        assert zygote is not None
        worker = await zygote.new_worker("emits")
        try:
            kind, body = await worker.call("r-1", 10.0, {"n": 1})
        finally:
            await worker.close()
    assert kind == wire.ERROR, (kind, body)
    assert body["errorType"] == "NotAvailableError", body
    assert "context.events is not available" in body["errorMessage"]
