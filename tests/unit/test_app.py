"""The App model: decorators record frozen configs and validate at decoration time."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from reflow import App
from reflow.errors import AppFrozenError, RegistrationError


def handler(event: Any, context: Any) -> Any:
    return event


def test_decorators_return_the_function_unchanged() -> None:
    app = App("site")

    def render(event: Any, context: Any) -> str:
        return "ok"

    assert app.on({"source": ["cms"]})(render) is render
    assert render({}, None) == "ok"


def test_function_bare_and_with_options() -> None:
    app = App("site")

    @app.function
    def plain(event: Any, context: Any) -> None: ...

    @app.function(timeout=30, memory_mb=512, permissions=["blobs:write:site/*"], retries=1)
    def heavy(event: Any, context: Any) -> None: ...

    assert app.functions["plain"].timeout == 3.0
    config = app.functions["heavy"]
    assert (config.timeout, config.memory_mb, config.retries) == (30.0, 512, 1)
    assert config.permissions == ("blobs:write:site/*",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timeout = 1  # type: ignore[misc]


def test_stacked_trigger_and_function_make_one_function_either_order() -> None:
    app = App("site")

    @app.on({"source": ["cms"]})
    @app.function(timeout=30)
    def outer_on(event: Any, context: Any) -> None: ...

    @app.function(timeout=20)
    @app.on({"source": ["cms"]})
    def outer_function(event: Any, context: Any) -> None: ...

    assert app.functions["outer_on"].timeout == 30.0
    assert app.functions["outer_function"].timeout == 20.0
    assert not app.functions["outer_function"].implicit
    targets = sorted(rule.function for rule in app.rules.values())
    assert targets == ["outer_function", "outer_on"]


def test_handler_without_event_and_context_fails_at_decoration() -> None:
    app = App("site")
    with pytest.raises(RegistrationError) as caught:

        @app.function
        def lonely(event: Any) -> None: ...

    assert caught.value.name == "lonely"
    assert "(event, context)" in str(caught.value)


def test_handler_with_extra_required_parameter_is_refused() -> None:
    app = App("site")

    def three(event: Any, context: Any, extra: Any) -> None: ...

    with pytest.raises(RegistrationError, match="three"):
        app.edge("viewer-request")(three)


def test_async_handlers_are_accepted_and_marked() -> None:
    app = App("site")

    @app.function
    async def later(event: Any, context: Any) -> None: ...

    assert app.functions["later"].is_async


def test_duplicate_function_name_names_the_first_place() -> None:
    app = App("site")
    app.function(handler)

    def other(event: Any, context: Any) -> None: ...

    with pytest.raises(RegistrationError) as caught:
        app.function(name="handler")(other)
    assert "already registered" in str(caught.value)
    assert "test_app.py" in str(caught.value)


def test_unknown_edge_hook_is_refused_with_the_known_ones() -> None:
    app = App("site")
    with pytest.raises(RegistrationError) as caught:
        app.edge("viewer-requests")
    assert "viewer-request" in str(caught.value) and "origin-response" in str(caught.value)


def test_edge_records_hook_and_path() -> None:
    app = App("site")
    app.edge("viewer-request", path="/premium/*")(handler)
    (config,) = app.edges.values()
    assert (config.hook, config.path, config.function) == (
        "viewer-request",
        "/premium/*",
        "handler",
    )


def test_routes_refuse_the_same_method_and_path_twice() -> None:
    app = App("cms")
    app.route("post", "/api/articles")(handler)
    assert next(iter(app.routes.values())).method == "POST"

    def again(event: Any, context: Any) -> None: ...

    with pytest.raises(RegistrationError, match="already served"):
        app.route("POST", "/api/articles")(again)
    with pytest.raises(RegistrationError, match="method"):
        app.route("FETCH", "/x")


@pytest.mark.parametrize("bad", ["every 5 minutes", "rate 5 minutes", ""])
def test_malformed_schedule_is_refused(bad: str) -> None:
    with pytest.raises(RegistrationError):
        App("site").schedule(bad)


def test_pattern_as_json_text_and_bad_json() -> None:
    app = App("site")
    app.on('{"source": ["cms"]}', name="from-text")(handler)
    assert app.rules["from-text"].pattern == {"source": ["cms"]}
    with pytest.raises(RegistrationError, match="not valid JSON"):
        app.on('{"source": ')
    with pytest.raises(RegistrationError, match="JSON object"):
        app.on("[1, 2]")


def test_pattern_is_copied_so_later_mutation_changes_nothing() -> None:
    app = App("site")
    pattern: dict[str, Any] = {"source": ["cms"]}
    app.on(pattern, name="r")(handler)
    pattern["source"].append("other")
    assert app.rules["r"].pattern == {"source": ["cms"]}


def test_flow_from_dict_file_and_errors(tmp_path: Path) -> None:
    definition = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "publish.asl.json").write_text(json.dumps(definition))
    (tmp_path / "broken.json").write_text('{"StartAt": ')
    app = App("site", root=tmp_path)
    app.flow("inline", definition)
    config = app.flow("publish", "flows/publish.asl.json")
    assert config.definition == definition
    assert config.source is not None and config.source.endswith("publish.asl.json")
    with pytest.raises(RegistrationError, match="does not exist"):
        app.flow("missing", "flows/nope.json")
    with pytest.raises(RegistrationError, match="line 1"):
        app.flow("broken", "broken.json")
    with pytest.raises(RegistrationError, match="already registered"):
        app.flow("inline", definition)


def test_frozen_app_refuses_registrations() -> None:
    app = App("site")
    app.function(handler)
    app.freeze()

    def late(event: Any, context: Any) -> None: ...

    with pytest.raises(AppFrozenError) as caught:
        app.on({"source": ["x"]})(late)
    assert caught.value.app == "site"
    with pytest.raises(AppFrozenError):
        app.flow("f", {"StartAt": "A", "States": {}})
    assert "late" not in app.functions


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"timeout": 0}, "timeout"),
        ({"memory_mb": 1}, "memory_mb"),
        ({"isolation": "vm"}, "isolation"),
        ({"retries": 3}, "retries"),
        ({"provisioned": 2}, "isolation='process'"),
        ({"provisioned": 4, "reserved": 2, "isolation": "process"}, "cannot exceed"),
    ],
)
def test_bad_function_options_name_the_option(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RegistrationError, match=fragment):
        App("site").function(**options)(handler)


def test_invalid_names_are_refused() -> None:
    with pytest.raises(RegistrationError):
        App("bad name")
    with pytest.raises(RegistrationError):
        App("site").function(name="has space")(handler)


def test_summary_lists_everything_by_kind() -> None:
    app = App("site")
    app.on({"source": ["cms"]}, name="r1")(handler)
    app.flow("f", {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}})
    summary = app.summary()
    assert summary["functions"] == ["handler"]
    assert summary["rules"] == ["r1"]
    assert summary["flows"] == ["f"]
    assert "1 functions" in repr(app)
