"""``app.events.put`` outside handlers: to the running platform, or to a backend."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from reflow import App, Event
from reflow.backends import memory_backend, open_backend
from reflow.config import Settings
from reflow.errors import InvalidEventError, NotAvailableError
from reflow.platform import Platform
from tests.functional.events.helpers import eventually


def recording_app(seen: list[Any]) -> App:
    app = App("scripted")

    @app.on({"source": ["script"]}, name="record")
    def record(event: dict[str, Any], context: Any) -> None:
        seen.append(event["id"])

    return app


async def test_put_goes_to_the_running_platform_of_the_app(tmp_path: Path) -> None:
    seen: list[Any] = []
    app = recording_app(seen)
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(app, settings, backend=memory_backend())
    await platform.start(admin=False)
    try:
        ids = await app.events.put(
            [
                {"source": "script", "detail-type": "Ran", "detail": {}},
                Event(source="script", type="Ran", data={}),
            ]
        )
        await eventually(lambda: len(seen) == 2)
        # From a thread beside the running loop, synchronously.
        sync_ids = await asyncio.to_thread(
            app.events.put_sync, {"source": "script", "detail-type": "Ran", "detail": {}}
        )
        await eventually(lambda: len(seen) == 3)
    finally:
        await platform.stop()
    assert sorted(seen) == sorted(ids + sync_ids)


async def test_without_a_running_platform_or_backend_put_is_not_available() -> None:
    app = recording_app([])
    with pytest.raises(NotAvailableError, match="no events service of app 'scripted'"):
        await app.events.put({"source": "script", "detail-type": "Ran", "detail": {}})


async def test_another_apps_running_service_is_not_used(tmp_path: Path) -> None:
    other = recording_app([])
    settings = Settings.load(env={}, backend="memory://", data_dir=str(tmp_path))
    platform = Platform(other, settings, backend=memory_backend())
    await platform.start(admin=False)
    try:
        with pytest.raises(NotAvailableError):
            await recording_app([]).events.put({"source": "script", "detail": {}})
    finally:
        await platform.stop()


async def test_put_with_an_open_backend_appends_to_its_bus_stream() -> None:
    backend = memory_backend()
    ids = await recording_app([]).events.put(
        {"source": "script", "detail-type": "Ran", "detail": {}}, bus="audit", backend=backend
    )
    assert len(ids) == 1
    assert await backend.log.length("events.bus.audit") == 1
    assert await backend.log.length("events.bus.default") == 0


async def test_put_validates_every_entry_before_storing_any() -> None:
    backend = memory_backend()
    good = {"source": "script", "detail-type": "Ran", "detail": {}}
    with pytest.raises(InvalidEventError, match=r"entries\[1\]"):
        await recording_app([]).events.put([good, {"detail": {}}], backend=backend)
    assert await backend.log.length("events.bus.default") == 0


def test_put_sync_with_a_backend_url_from_a_script(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    ids = recording_app([]).events.put_sync(
        {"source": "script", "detail-type": "Ran", "detail": {"n": 1}}, backend=url
    )

    async def stored() -> int:
        backend = await open_backend(url)
        try:
            return await backend.log.length("events.bus.default")
        finally:
            await backend.close()

    assert len(ids) == 1 and asyncio.run(stored()) == 1


async def test_a_platform_over_the_same_backend_delivers_what_a_script_put(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    seen: list[Any] = []
    app = recording_app(seen)
    [event_id] = await app.events.put(
        {"source": "script", "detail-type": "Ran", "detail": {}}, backend=url
    )
    settings = Settings.load(env={}, backend=url, data_dir=str(tmp_path))
    platform = Platform(app, settings)
    await platform.start(admin=False)
    try:
        await eventually(lambda: len(seen) == 1)
    finally:
        await platform.stop()
    assert seen == [event_id]
