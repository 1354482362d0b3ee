"""App.on validates its pattern with the events compiler at decoration time."""

from __future__ import annotations

from typing import Any

import pytest

from reflow import App
from reflow.errors import InvalidPatternError, RegistrationError


def handler(event: dict[str, Any], context: Any) -> None:
    """A handler of the right shape."""


def test_on_with_an_invalid_pattern_names_the_rule_and_the_path() -> None:
    app = App("news")
    with pytest.raises(RegistrationError) as caught:
        app.on({"detail": {"size": [{"numeric": [">", "big"]}]}}, name="render")(handler)
    assert caught.value.name == "render"
    assert "detail.size[0].numeric[1]" in str(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, InvalidPatternError)
    assert cause.path == "detail.size[0].numeric[1]"
    assert "render" not in app.rules


def test_on_with_a_valid_pattern_using_every_operator_registers() -> None:
    app = App("news")
    pattern = {
        "source": ["cms"],
        "detail": {
            "a": [{"prefix": "x"}, {"suffix": {"equals-ignore-case": ".PNG"}}],
            "b": [{"anything-but": {"wildcard": "*/lib/*"}}, {"numeric": [">", 0, "<=", 5]}],
            "c": [{"exists": False}, {"cidr": "2001:db8::/32"}],
            "$or": [{"d": [None]}, {"e": [{"equals-ignore-case": "Y"}]}],
        },
    }
    app.on(pattern, name="render")(handler)
    assert app.rules["render"].pattern == pattern
