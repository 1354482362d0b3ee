"""``reflow run``'s Platform starts the events service for an app with rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reflow import App
from reflow.admin import AdminRequest
from reflow.backends import memory_backend
from reflow.config import Settings
from reflow.platform import Platform
from tests.functional.events.helpers import eventually


def make_app(seen: list[Any]) -> App:
    app = App("site")

    @app.on({"source": ["cms"]}, name="render")
    def render(event: dict[str, Any], context: Any) -> None:
        seen.append((event["id"], context.aws_request_id))

    return app


async def test_platform_runs_rules_and_mounts_the_events_routes(tmp_path: Path) -> None:
    seen: list[Any] = []
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(make_app(seen), settings, backend=memory_backend())
    await platform.start(admin=False)
    try:
        assert "events" in platform.services
        body = b'{"entries": [{"source": "cms", "detail-type": "Saved", "detail": {}}]}'
        reply = await platform.admin.dispatch(AdminRequest("POST", "/api/events", {}, {}, body))
        assert reply.status == 200, reply.body
        [event_id] = reply.body["ids"]
        await eventually(lambda: len(seen) == 1)
    finally:
        await platform.stop()
    assert seen == [(event_id, event_id)]


async def test_platform_without_rules_or_schedules_starts_no_events_service(
    tmp_path: Path,
) -> None:
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(App("empty"), settings, backend=memory_backend())
    await platform.start(admin=False)
    try:
        assert "events" not in platform.services
    finally:
        await platform.stop()
