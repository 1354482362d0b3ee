"""JSONPath payload templates: .$ keys resolved, everything else kept."""

from __future__ import annotations

from typing import Any

import pytest

from reflow.flows import templates
from reflow.flows.errors import StatesError


def test_dollar_keys_resolve_and_lose_their_suffix() -> None:
    template = {
        "static": {"deep": [1, {"k.$": "$.a"}]},
        "path.$": "$.b[0]",
        "context.$": "$$.State.Name",
        "variable.$": "$v",
        "call.$": "States.Format('{}-{}', $.a, $v)",
    }
    data = {"a": "x", "b": [7]}
    rendered = templates.render(template, data, {"State": {"Name": "S"}}, {"v": "y"})
    assert rendered == {
        "static": {"deep": [1, {"k": "x"}]},
        "path": 7,
        "context": "S",
        "variable": "y",
        "call": "x-y",
    }


def test_a_key_with_the_suffix_but_a_non_string_value_is_static() -> None:
    assert templates.render({"n.$": 5}, {}, None, None) == {"n.$": 5}


def test_the_compiled_form_is_reused_and_sees_new_data_each_time() -> None:
    template: dict[str, Any] = {"v.$": "$.v"}
    assert templates.render(template, {"v": 1}, None, None) == {"v": 1}
    assert templates.render(template, {"v": 2}, None, None) == {"v": 2}


def test_a_missing_path_fails_at_render_time() -> None:
    with pytest.raises(StatesError):
        templates.render({"v.$": "$.missing"}, {}, None, None)
