"""Lambda@Edge header conversion and its checks (reflow.edge.triggers)."""

from __future__ import annotations

import pytest

from reflow.edge.triggers import compile_path_pattern, headers_from_cf, headers_to_cf
from reflow.errors import HookError


def test_headers_round_trip_through_the_lambda_at_edge_shape() -> None:
    headers = [("Host", "a"), ("Accept", "x"), ("accept", "y")]
    shaped = headers_to_cf(headers)
    assert shaped == {
        "host": [{"key": "Host", "value": "a"}],
        "accept": [{"key": "Accept", "value": "x"}, {"key": "accept", "value": "y"}],
    }
    assert headers_from_cf("h", "w", shaped) == headers
    assert headers_from_cf("h", "w", shaped, lowercase=True)[0] == ("host", "a")


@pytest.mark.parametrize("value", ["a\r\nb", "a\nb", "a\rb", "a\x00b"])
def test_values_with_cr_lf_or_nul_are_refused(value: str) -> None:
    with pytest.raises(HookError, match="CR, LF or NUL"):
        headers_from_cf("viewer-response", "response.headers", {"x": [{"value": value}]})


def test_tab_and_obs_text_are_allowed_in_values() -> None:
    assert headers_from_cf("h", "w", {"x": [{"value": "a\tb\xa0c"}]}) == [("x", "a\tb\xa0c")]


def test_a_key_that_disagrees_with_its_name_or_an_uppercase_name_is_refused() -> None:
    with pytest.raises(HookError, match="does not match"):
        headers_from_cf("h", "w", {"x-a": [{"key": "X-B", "value": "v"}]})
    with pytest.raises(HookError, match="lowercase"):
        headers_from_cf("h", "w", {"X-Upper": [{"value": "v"}]})
    with pytest.raises(HookError, match="string 'value'"):
        headers_from_cf("h", "w", {"x": [{"key": "x"}]})


def test_path_patterns_follow_cloudfront_wildcards() -> None:
    assert compile_path_pattern("/images/*.jpg").match("/images/a/b.jpg")
    assert not compile_path_pattern("/images/*.jpg").match("/images/a.png")
    assert compile_path_pattern("/v?/x").match("/v1/x")
    assert not compile_path_pattern("/v?/x").match("/v10/x")
