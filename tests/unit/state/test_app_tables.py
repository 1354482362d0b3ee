"""app.table / @app.on_change register frozen configs; StateService runs them."""

from __future__ import annotations

from typing import Any

import pytest

from reflow.app import App, ChangeConfig, TableConfig
from reflow.backends import Backend
from reflow.errors import AppFrozenError, RegistrationError
from reflow.state import Table
from reflow.state.service import StateService
from reflow.testing import FakeClock


def test_table_records_a_frozen_config() -> None:
    app = App("site")
    config = app.table("articles", key="id", sort_key="rev", ttl_attribute="exp")
    assert config == TableConfig("articles", "id", "rev", "exp", True, 86400.0)
    assert app.tables["articles"] is config
    with pytest.raises(AttributeError):
        config.key = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"key": ""}, "key attribute"),
        ({"key": "id", "sort_key": "id"}, "must differ"),
        ({"retention": 0}, "retention"),
    ],
)
def test_table_refuses_bad_options(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(RegistrationError, match=problem):
        App("site").table("articles", **kwargs)


def test_table_name_twice_is_refused() -> None:
    app = App("site")
    app.table("articles")
    with pytest.raises(RegistrationError, match="already registered"):
        app.table("articles")


def test_on_change_registers_the_function_and_returns_it_unchanged() -> None:
    app = App("site")
    app.table("articles")

    def rerender(event: dict[str, Any], context: Any) -> None: ...

    assert app.on_change("articles")(rerender) is rerender
    assert app.changes["rerender.on_change.articles"] == ChangeConfig(
        "rerender.on_change.articles", "articles", "rerender", 10
    )
    assert "rerender" in app.functions


def test_on_change_needs_a_declared_streamed_table() -> None:
    app = App("site")
    with pytest.raises(RegistrationError, match="no table named"):
        app.on_change("articles")
    app.table("quiet", stream=False)
    with pytest.raises(RegistrationError, match="stream=False"):
        app.on_change("quiet")


def test_on_change_refuses_a_bad_handler_at_decoration_time() -> None:
    app = App("site")
    app.table("articles")
    with pytest.raises(RegistrationError, match="event, context"):

        @app.on_change("articles")
        def no_arguments() -> None: ...


def test_frozen_app_refuses_tables() -> None:
    app = App("site").freeze()
    with pytest.raises(AppFrozenError):
        app.table("articles")


async def test_service_delivers_changes_to_handlers_as_events(
    backend: Backend, clock: FakeClock
) -> None:
    app = App("site")
    app.table("articles")
    seen: list[dict[str, Any]] = []

    @app.on_change("articles")
    async def rerender(event: dict[str, Any], context: Any) -> None:
        seen.append(event)

    service = StateService(app, backend, clock=clock)
    try:
        articles = service.tables["articles"]
        await articles.put({"id": "a", "title": "one"})
        await articles.update("a", set={"title": "two"})
        assert await service.step() == 2
        assert await service.step() == 0
        assert [e["detail-type"] for e in seen] == ["Item Inserted", "Item Modified"]
        assert seen[1]["detail"]["newImage"] == {"id": "a", "title": "two"}
        assert (await service.limits.hit("k", "1/second")).allowed
        assert await service.counters.incr("n") == 1
    finally:
        await service.close()


async def test_install_gives_handlers_context_tables_and_limits(
    backend: Backend, clock: FakeClock
) -> None:
    from reflow.functions import context as context_module
    from reflow.functions.context import Context

    installed_before = dict(context_module._factories)  # restored: other tests see none
    app = App("site")
    app.table("articles")

    @app.function
    def handler(event: dict[str, Any], context: Any) -> None: ...

    service = StateService(app, backend, clock=clock)
    try:
        service.install()
        context = Context(app.functions["handler"])
        await context.tables["articles"].put({"id": "x"})
        assert await service.tables["articles"].get("x") == {"id": "x"}
        assert (await context.limits.hit("k", "2/second")).remaining == 1
        assert await context.limits.incr("stock", 3) == 3
        assert await context.limits.decrement_if("stock", 3) == 0
    finally:
        context_module._factories.clear()
        context_module._factories.update(installed_before)
        await service.close()


async def test_context_tables_pass_every_call_through_the_authorisation_hook(
    backend: Backend, clock: FakeClock
) -> None:
    from reflow.errors import PermissionDeniedError
    from reflow.state.clients import TablesClient

    app_tables = {"articles": Table("articles", backend.kv, clock=clock)}
    asked: list[tuple[str, str]] = []

    def read_only(action: str, resource: str) -> None:
        asked.append((action, resource))
        if action != "tables:read":
            raise PermissionDeniedError("render", action, resource)

    tables = TablesClient(app_tables, read_only)
    assert await tables["articles"].get("a") is None
    assert (await tables["articles"].scan()).items == []
    with pytest.raises(PermissionDeniedError):
        await tables["articles"].put({"id": "a"})
    assert await app_tables["articles"].get("a") is None
    assert asked == [
        ("tables:read", "articles"),
        ("tables:read", "articles"),
        ("tables:write", "articles"),
    ]
    with pytest.raises(KeyError, match="declares: articles"):
        tables["missing"]


async def test_run_keeps_delivering_until_cancelled(backend: Backend, clock: FakeClock) -> None:
    import asyncio
    import contextlib

    app = App("site")
    app.table("articles")
    seen: list[str] = []

    @app.on_change("articles")
    def rerender(event: dict[str, Any], context: Any) -> None:
        seen.append(event["detail"]["keys"]["id"])

    service = StateService(app, backend, clock=clock)
    runner = asyncio.create_task(service.run(interval=1.0))
    try:
        for name in ("a", "b"):
            await service.tables["articles"].put({"id": name})
            for _ in range(200):
                if name in seen:
                    break
                clock.advance(1.0)  # wakes the idle loop on virtual time
                await asyncio.sleep(0.005)
        assert seen == ["a", "b"]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await service.close()
