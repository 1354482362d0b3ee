"""``App.rule`` bus, function and webhook targets under the Platform on every engine.

The same rules run over memory, SQLite and Redis: a bus target forwards the
event keeping its id, a function target invokes the function by name, and a
webhook POSTs with its declared headers — credentials read from the
environment and from a secret file at delivery time — and within its
declared timeout.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow import App
from reflow.backends import Backend, open_backend
from reflow.config import Settings
from reflow.platform import Platform
from tests.conftest import REDIS_URL, require_server
from tests.functional.events.helpers import eventually

SAVED = {"source": "cms", "detail-type": "Saved", "detail": {"title": "hello"}}


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'reflow.db'}"
    else:
        require_server(REDIS_URL, "Redis")
        url = f"{REDIS_URL}?prefix=test-bustargets-{uuid.uuid4().hex[:8]}:"
    opened = await open_backend(url, data_dir=tmp_path)
    yield opened
    await opened.close()


async def started(app: App, backend: Backend, tmp_path: Path) -> Platform:
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(app, settings, backend=backend)
    await platform.start(admin=False)
    return platform


class Hook:
    """A small HTTP endpoint recording each request; it may hold its reply back."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.delay = 0.0
        self.url = ""
        self.handlers: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._answer(reader, writer)
        finally:
            self.handlers.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        body = await reader.readexactly(int(headers["content-length"]))
        self.received.append({"headers": headers, "body": json.loads(body)})
        await asyncio.sleep(self.delay)
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    endpoint = Hook()
    server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0)
    endpoint.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks/cms"
    try:
        yield endpoint
    finally:
        server.close()
        for task in list(endpoint.handlers):  # a reply still held back
            task.cancel()
        await asyncio.gather(*endpoint.handlers, return_exceptions=True)
        await server.wait_closed()


async def test_a_bus_target_forwards_the_event_with_its_id(
    backend: Backend, tmp_path: Path
) -> None:
    seen: list[tuple[str, str]] = []
    app = App("news")
    app.rule("to-audit", {"source": ["cms"]}, target="bus:audit")

    @app.on({"source": ["cms"]}, bus="audit", name="audit-log")
    def audit(event: dict[str, Any], context: Any) -> None:
        seen.append((event["id"], context.aws_request_id))

    platform = await started(app, backend, tmp_path)
    try:
        [event_id] = await app.events.put(SAVED)
        await eventually(lambda: len(seen) == 1, timeout=20)
    finally:
        await platform.stop()
    assert seen == [(event_id, event_id)]


async def test_a_function_target_invokes_the_function_by_name(
    backend: Backend, tmp_path: Path
) -> None:
    seen: list[Any] = []
    app = App("news")

    @app.function()
    def render(event: Any, context: Any) -> None:
        seen.append((event, context.aws_request_id))

    app.rule(
        "render-saved",
        {"detail-type": ["Saved"]},
        target="function:render",
        input_template={"InputPathsMap": {"t": "$.detail.title"}, "InputTemplate": '{"t": <t>}'},
    )
    platform = await started(app, backend, tmp_path)
    try:
        [event_id] = await app.events.put(SAVED)
        await eventually(lambda: len(seen) == 1, timeout=20)
    finally:
        await platform.stop()
    assert seen == [({"t": "hello"}, event_id)]


async def test_a_webhook_sends_its_declared_headers_from_the_environment_and_a_secret(
    backend: Backend, tmp_path: Path, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "cms-key").write_text("key-from-file\n")
    monkeypatch.setenv("CMS_HOOK_TOKEN", "Bearer token-from-env")
    monkeypatch.setenv("REFLOW_SECRETS_DIR", str(secrets))
    app = App("news")
    app.rule(
        "notify",
        {"source": ["cms"]},
        target=hook.url,
        input_path="$.detail",
        timeout=5,
        headers={
            "Authorization": "env:CMS_HOOK_TOKEN",
            "X-Api-Key": "secret:cms-key",
            "X-Team": "newsroom",
        },
    )
    platform = await started(app, backend, tmp_path)
    try:
        [event_id] = await app.events.put(SAVED)
        await eventually(lambda: len(hook.received) == 1, timeout=20)
        # A rotated credential is used by the next delivery.
        monkeypatch.setenv("CMS_HOOK_TOKEN", "Bearer rotated")
        await app.events.put(SAVED)
        await eventually(lambda: len(hook.received) == 2, timeout=20)
    finally:
        await platform.stop()
    first, second = (request["headers"] for request in hook.received)
    assert first["authorization"] == "Bearer token-from-env"
    assert first["x-api-key"] == "key-from-file"
    assert first["x-team"] == "newsroom"
    assert first["x-reflow-event-id"] == event_id
    assert second["authorization"] == "Bearer rotated"
    assert hook.received[0]["body"] == {"title": "hello"}


async def test_a_webhook_whose_credential_is_missing_fails_into_the_dead_letter_queue(
    backend: Backend, tmp_path: Path, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CMS_HOOK_TOKEN", raising=False)
    app = App("news")
    app.rule(
        "notify",
        {"source": ["cms"]},
        target=hook.url,
        max_attempts=1,
        headers={"Authorization": "env:CMS_HOOK_TOKEN"},
    )
    platform = await started(app, backend, tmp_path)
    try:
        events: Any = platform.service("events")
        [event_id] = await app.events.put(SAVED)
        letters: list[Any] = []

        async def dead() -> bool:
            letters[:] = await events.bus.dead_letters.list("notify")
            return bool(letters)

        for _ in range(1000):
            if await dead():
                break
            await asyncio.sleep(0.02)
    finally:
        await platform.stop()
    assert hook.received == []  # nothing was sent without the credential
    [letter] = letters
    assert letter.event.id == event_id
    assert "environment variable CMS_HOOK_TOKEN is not set" in letter.error["message"]


async def test_a_webhook_slower_than_its_declared_timeout_fails(
    backend: Backend, tmp_path: Path, hook: Hook
) -> None:
    hook.delay = 2.0
    app = App("news")
    app.rule("notify", {"source": ["cms"]}, target=hook.url, max_attempts=1, timeout=0.2)
    platform = await started(app, backend, tmp_path)
    try:
        events: Any = platform.service("events")
        await app.events.put(SAVED)
        letters: list[Any] = []
        loop = asyncio.get_running_loop()
        began = loop.time()
        while not letters and loop.time() - began < 20:
            letters = await events.bus.dead_letters.list("notify")
            await asyncio.sleep(0.02)
        waited = loop.time() - began
    finally:
        await platform.stop()
    [letter] = letters
    assert letter.error["message"].endswith("no reply within 0.2 s")
    assert waited < 1.5  # the 0.2 s timeout ended it, not the 2 s reply
