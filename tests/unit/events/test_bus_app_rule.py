"""``App.rule``: targets beyond functions, validated when the rule is declared."""

from __future__ import annotations

from typing import Any

import pytest

from reflow import App
from reflow.errors import AppFrozenError, RegistrationError

PATTERN = {"source": ["cms"]}


def test_rule_records_a_frozen_config_with_its_target() -> None:
    app = App("news")
    config = app.rule(
        "notify",
        '{"source": ["cms"]}',
        target="https://hooks.example.com/cms",
        bus="site",
        max_attempts=3,
        input_path="$.detail",
    )
    assert app.rules["notify"] is config
    assert config.pattern == PATTERN and config.bus == "site" and config.max_attempts == 3
    assert config.target_kind == ("webhook", "https://hooks.example.com/cms")
    assert config.function == ""
    with pytest.raises(AttributeError):
        config.target = "flow:x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("flow:publish", ("flow", "publish")),
        ("bus:audit", ("bus", "audit")),
        ("function:render", ("function", "render")),
        ("http://127.0.0.1:8080/x", ("webhook", "http://127.0.0.1:8080/x")),
    ],
)
def test_each_target_form_is_recognised(target: str, kind: tuple[str, str]) -> None:
    app = App("news")
    assert app.rule("r", PATTERN, target=target).target_kind == kind


def test_a_function_target_records_the_function_name() -> None:
    assert App("news").rule("r", PATTERN, target="function:render").function == "render"


def test_on_rules_keep_delivering_to_the_decorated_function() -> None:
    app = App("news")

    @app.on(PATTERN, name="r")
    def render(event: Any, context: Any) -> None: ...

    assert app.rules["r"].target_kind == ("function", "render")


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("publish", "must be 'function:<name>', 'flow:<name>', 'bus:<name>' or an http(s):// URL"),
        ("queue:jobs", "must be 'function:<name>'"),
        ("flow:", "does not name a flow"),
        ("bus:no spaces", "does not name a bus"),
        ("https://", "is not an http(s) URL with a host"),
        ("http:/relative", "is not an http(s) URL with a host"),
        ("bus:default", "is the rule's own bus"),
    ],
)
def test_a_bad_target_is_refused_naming_the_rule(target: str, problem: str) -> None:
    with pytest.raises(RegistrationError) as caught:
        App("news").rule("bad", PATTERN, target=target)
    assert caught.value.name == "bad"
    assert problem in caught.value.problem


def test_a_target_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(RegistrationError, match="must be a string"):
        App("news").rule("bad", PATTERN, target=42)  # type: ignore[arg-type]


def test_rule_validates_name_pattern_retry_and_input_path() -> None:
    app = App("news")
    app.rule("taken", PATTERN, target="bus:audit")
    with pytest.raises(RegistrationError, match="already registered"):
        app.rule("taken", PATTERN, target="bus:audit")
    with pytest.raises(RegistrationError, match="max_attempts"):
        app.rule("r1", PATTERN, target="bus:audit", max_attempts=0)
    with pytest.raises(RegistrationError, match="max_event_age"):
        app.rule("r2", PATTERN, target="bus:audit", max_event_age=0)
    with pytest.raises(RegistrationError, match="must start with '\\$'"):
        app.rule("r3", PATTERN, target="bus:audit", input_path="detail")
    with pytest.raises(RegistrationError):
        app.rule("r4", {"source": "cms"}, target="bus:audit")  # values must be arrays
    assert list(app.rules) == ["taken"]


def test_rule_after_the_app_started_is_refused() -> None:
    app = App("news").freeze()
    with pytest.raises(AppFrozenError):
        app.rule("late", PATTERN, target="bus:audit")


HOOK = "https://hooks.example.com/cms"


def test_a_webhook_rule_records_its_timeout_and_header_references() -> None:
    config = App("news").rule(
        "notify",
        PATTERN,
        target=HOOK,
        timeout=2.5,
        headers={
            "Authorization": "env:CMS_HOOK_TOKEN",
            "X-Api-Key": "secret:cms-key",
            "X-Team": "news",
        },
    )
    assert config.timeout == 2.5
    assert dict(config.headers) == {
        "Authorization": "env:CMS_HOOK_TOKEN",
        "X-Api-Key": "secret:cms-key",
        "X-Team": "news",
    }
    with pytest.raises(TypeError):
        config.headers["X-Team"] = "other"  # type: ignore[index]


def test_a_webhook_rule_without_options_takes_ten_seconds_and_no_headers() -> None:
    config = App("news").rule("notify", PATTERN, target=HOOK)
    assert config.timeout == 10.0 and dict(config.headers) == {}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": -1.0}, "timeout must be > 0"),
        ({"timeout": 301}, "<= 300"),
        ({"timeout": "5"}, "timeout must be a number"),
        ({"timeout": True}, "timeout must be a number"),
        ({"headers": ["Authorization"]}, "headers must map"),
        ({"headers": {"Bad Name": "x"}}, "not a valid HTTP field name"),
        ({"headers": {"Content-Type": "text/plain"}}, "set by the webhook target itself"),
        ({"headers": {"X-Reflow-Event-Id": "x"}}, "set by the webhook target itself"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "given twice"),
        ({"headers": {"X-A": ""}}, "non-empty string"),
        ({"headers": {"X-A": 3}}, "non-empty string"),
        ({"headers": {"X-A": "one\r\nX-B: two"}}, "line breaks"),
        ({"headers": {"X-A": "snow ☃"}}, "ISO-8859-1"),
        ({"headers": {"Authorization": "Bearer abc123"}}, "carries a credential"),
        ({"headers": {"X-Api-Key": "abc123"}}, "carries a credential"),
        ({"headers": {"X-Auth-Token": "abc123"}}, "carries a credential"),
        ({"headers": {"Authorization": "env:1BAD"}}, "not an environment variable name"),
        ({"headers": {"Authorization": "env:"}}, "not an environment variable name"),
        ({"headers": {"Authorization": "secret:../etc/passwd"}}, "not a secret name"),
        ({"headers": {"Authorization": "secret:a/b"}}, "not a secret name"),
    ],
)
def test_bad_webhook_options_are_refused_naming_the_rule(
    options: dict[str, Any], problem: str
) -> None:
    app = App("news")
    with pytest.raises(RegistrationError) as caught:
        app.rule("notify", PATTERN, target=HOOK, **options)
    assert caught.value.name == "notify"
    assert problem in str(caught.value)
    assert "notify" not in app.rules


@pytest.mark.parametrize("target", ["flow:publish", "bus:audit", "function:render"])
def test_webhook_options_on_another_target_are_refused(target: str) -> None:
    with pytest.raises(RegistrationError, match="http\\(s\\):// targets only") as caught:
        App("news").rule("r", PATTERN, target=target, timeout=5)
    assert caught.value.name == "r"
    with pytest.raises(RegistrationError, match="targets only"):
        App("news").rule("r", PATTERN, target=target, headers={"X-A": "1"})
