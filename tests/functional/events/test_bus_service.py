"""The events service over an App: rules invoke functions, handlers put events, schedules fire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from reflow import App
from reflow.admin import AdminRequest, AdminServer
from reflow.backends import Backend, memory_backend
from reflow.errors import NotAvailableError
from reflow.events.service import EventsService
from reflow.testing.clock import FakeClock
from tests.functional.events.helpers import eventually

seen: list[tuple[str, Any]] = []


def build_app(*, schedule: bool = False) -> App:
    """The newsroom app; ``schedule`` adds a per-minute sitemap schedule.

    The schedule is left out under an autojumping clock: there every minute
    passes at once, so it would fire without end and flood the bus.
    """
    app = App("newsroom")

    @app.on({"source": ["cms"], "detail-type": ["ArticlePublished"]}, name="render")
    async def render(event: dict[str, Any], context: Any) -> None:
        seen.append(("render", event["detail"]))
        if event["detail"].get("flaky") and context.aws_request_id not in flaky_seen:
            flaky_seen.add(context.aws_request_id)
            raise RuntimeError("first try fails")
        await context.events.put(
            {
                "source": "site",
                "detail-type": "PageRendered",
                "detail": {"id": event["detail"]["id"]},
            }
        )

    @app.on(
        {"source": ["site"]},
        name="purge",
        input_template={"InputPathsMap": {"id": "$.detail.id"}, "InputTemplate": '{"page": <id>}'},
    )
    def purge(event: dict[str, Any], context: Any) -> None:
        seen.append(("purge", event))

    if schedule:

        @app.schedule("rate(1 minute)", name="sitemap", payload={"full": True})
        def sitemap(event: dict[str, Any], context: Any) -> None:
            seen.append(("sitemap", event["detail"]))

    return app


flaky_seen: set[str] = set()


@pytest.fixture
async def service() -> AsyncIterator[tuple[EventsService, FakeClock, Backend]]:
    seen.clear()
    flaky_seen.clear()
    clock = FakeClock(autojump=True)
    backend = memory_backend(clock)
    admin = AdminServer()
    events = EventsService(build_app().freeze(), backend, clock=clock, admin=admin)
    await events.start()
    yield events, clock, backend
    await events.stop()
    await backend.close()


async def test_rule_invokes_function_whose_put_reaches_a_transformed_rule(
    service: tuple[EventsService, FakeClock, Backend],
) -> None:
    events, _, _ = service
    await events.bus.put(
        [{"source": "cms", "detail-type": "ArticlePublished", "detail": {"id": 4}}]
    )
    await eventually(lambda: ("purge", {"page": 4}) in seen)
    assert ("render", {"id": 4}) in seen


async def test_failed_function_is_retried_with_the_same_request_id(
    service: tuple[EventsService, FakeClock, Backend],
) -> None:
    events, _, _ = service
    [event_id] = await events.bus.put(
        [{"source": "cms", "detail-type": "ArticlePublished", "detail": {"id": 5, "flaky": True}}]
    )
    await eventually(lambda: ("purge", {"page": 5}) in seen)
    assert [s for s in seen if s[0] == "render"] == [("render", {"id": 5, "flaky": True})] * 2
    assert flaky_seen == {event_id}


async def test_admin_routes_put_events_and_list_dead_letters(
    service: tuple[EventsService, FakeClock, Backend],
) -> None:
    events, _, _ = service
    assert events.admin is not None
    body = b'{"entries": [{"source": "site", "detail-type": "X", "detail": {"id": 1}}]}'
    reply = await events.admin.dispatch(AdminRequest("POST", "/api/events", {}, {}, body))
    assert reply.status == 200 and len(reply.body["ids"]) == 1
    await eventually(lambda: ("purge", {"page": 1}) in seen)
    listing = await events.admin.dispatch(AdminRequest("GET", "/api/dlq", {}, {}, b""))
    assert listing.status == 200 and listing.body == {"letters": []}


async def test_schedule_invokes_its_function_once_per_minute_of_the_clock() -> None:
    seen.clear()
    clock = FakeClock(1_700_000_000.0)
    backend = memory_backend(clock)
    events = EventsService(build_app(schedule=True).freeze(), backend, clock=clock)
    await events.start()
    try:
        for minute in (1, 2, 3):
            await eventually(lambda: clock.sleepers >= 1)
            clock.advance(60.0)

            def fired(m: int = minute) -> bool:
                return seen.count(("sitemap", {"full": True})) == m

            await eventually(fired)
        assert [s for s in seen if s[0] != "sitemap"] == []
    finally:
        await events.stop()
        await backend.close()


async def test_context_events_outside_a_running_service_is_not_available() -> None:
    from reflow.functions.context import Context

    app = build_app()
    context = Context(app.functions["render"])
    with pytest.raises(NotAvailableError):
        _ = context.events
