"""Input transformation: InputPath, InputTransformer templates and constant inputs.

The cases follow EventBridge's documentation of InputTransformer: variables
from JSONPaths in ``InputPathsMap``, ``<name>`` placeholders, strings quoted
when the placeholder stands outside a JSON string and raw inside one, the
predefined ``aws.events.*`` variables, and paths that select nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.events.transform import (
    InputTransformer,
    InvalidTransformError,
    parse_path,
    rule_input,
    select,
)

EVENT: dict[str, Any] = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2015-11-11T21:29:54Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
    "detail": {
        "instance-id": "i-0123456789",
        "state": "RUNNING",
        "tags": [{"k": "a"}, {"k": "b"}],
        "count": 3,
    },
}
PATHS = {"instance": "$.detail.instance-id", "state": "$.detail.state"}


def test_input_path_selects_the_detail() -> None:
    assert rule_input("$.detail", None).apply(EVENT) == EVENT["detail"]


def test_input_path_dollar_alone_is_the_whole_event() -> None:
    assert rule_input("$", None).apply(EVENT) == EVENT


def test_input_path_with_array_index_and_quoted_name() -> None:
    assert select(EVENT, parse_path("$.detail.tags[1].k")) == "b"
    assert select(EVENT, parse_path("$['detail']['state']")) == "RUNNING"


def test_input_path_wildcard_gives_a_list() -> None:
    assert select(EVENT, parse_path("$.detail.tags[*].k")) == ["a", "b"]


def test_input_path_selecting_nothing_gives_none() -> None:
    assert select(EVENT, parse_path("$.detail.missing.deeper")) is None
    assert select(EVENT, parse_path("$.detail.tags[7]")) is None


def test_no_transformation_sends_the_whole_event() -> None:
    assert rule_input(None, None).apply(EVENT) == EVENT


def test_text_template_inserts_strings_without_quotes() -> None:
    transformer = InputTransformer("<instance> is in state <state>", PATHS)
    assert transformer.render(EVENT) == "i-0123456789 is in state RUNNING"


def test_quoted_text_template_gives_a_json_string() -> None:
    transformer = InputTransformer('"<instance> is in state <state>"', PATHS)
    assert transformer.render(EVENT) == "i-0123456789 is in state RUNNING"


def test_json_template_quotes_a_string_placed_outside_quotes() -> None:
    transformer = InputTransformer('{"instance": <instance>, "state": [9, <state>, true]}', PATHS)
    assert transformer.render(EVENT) == {"instance": "i-0123456789", "state": [9, "RUNNING", True]}


def test_json_template_inserts_a_string_inside_quotes_raw() -> None:
    template = '{"myStatus": "<instance> is in state \\"<state>\\""}'
    transformer = InputTransformer(template, PATHS)
    assert transformer.render(EVENT) == {"myStatus": 'i-0123456789 is in state "RUNNING"'}


def test_json_template_inserts_objects_and_numbers_as_json() -> None:
    transformer = InputTransformer(
        '{"tags": <tags>, "n": <n>}', {"tags": "$.detail.tags", "n": "$.detail.count"}
    )
    assert transformer.render(EVENT) == {"tags": [{"k": "a"}, {"k": "b"}], "n": 3}


def test_missing_variable_renders_as_null_outside_quotes() -> None:
    transformer = InputTransformer('{"v": <gone>}', {"gone": "$.detail.nothing"})
    assert transformer.render(EVENT) == {"v": None}


def test_predefined_variables_name_rule_and_carry_the_event() -> None:
    template = (
        '{"rule": "<aws.events.rule-name>", "event": <aws.events.event>, '
        '"whole": <aws.events.event.json>, "at": "<aws.events.event.ingestion-time>"}'
    )
    rendered = InputTransformer(template).render(EVENT, rule="render")
    assert rendered["rule"] == "render"
    assert "detail" not in rendered["event"] and rendered["event"]["id"] == EVENT["id"]
    assert rendered["whole"] == EVENT
    assert rendered["at"] == EVENT["time"]


def test_unknown_placeholder_is_left_as_text() -> None:
    assert InputTransformer("a <b> c").render(EVENT) == "a <b> c"


def test_string_value_with_quotes_stays_valid_json_inside_a_string() -> None:
    event = {"detail": {"title": 'He said "hi"\n'}}
    transformer = InputTransformer('{"t": "title: <t>"}', {"t": "$.detail.title"})
    assert transformer.render(event) == {"t": 'title: He said "hi"\n'}


@given(st.text())
def test_any_string_round_trips_through_a_quoted_placeholder(text: str) -> None:
    transformer = InputTransformer('{"t": "<t>"}', {"t": "$.v"})
    assert transformer.render({"v": text}) == {"t": text}


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists, max_leaves=8))
def test_any_json_value_round_trips_through_an_unquoted_placeholder(value: Any) -> None:
    transformer = InputTransformer('{"v": <v>}', {"v": "$.v"})
    assert transformer.render({"v": value}) == {"v": value}


def test_transformer_object_from_app_config() -> None:
    config = {"InputPathsMap": PATHS, "InputTemplate": '{"id": <instance>}'}
    assert rule_input(None, config).apply(EVENT) == {"id": "i-0123456789"}


def test_input_path_applies_before_the_transformer() -> None:
    config = {"InputPathsMap": {"s": "$.state"}, "InputTemplate": '"<s>"'}
    assert rule_input("$.detail", config).apply(EVENT) == "RUNNING"


def test_any_other_template_value_is_a_constant_input() -> None:
    assert rule_input(None, {"fixed": [1, 2]}).apply(EVENT) == {"fixed": [1, 2]}


def test_reserved_variable_name_is_refused() -> None:
    with pytest.raises(InvalidTransformError) as caught:
        InputTransformer("<x>", {"aws.events.rule-name": "$.id"})
    assert caught.value.field == "InputPathsMap.aws.events.rule-name"


def test_path_not_starting_with_dollar_is_refused_naming_the_variable() -> None:
    with pytest.raises(InvalidTransformError) as caught:
        InputTransformer("<x>", {"x": "detail.state"})
    assert caught.value.field == "InputPathsMap.x"


def test_unsupported_path_syntax_is_refused_with_its_position() -> None:
    with pytest.raises(InvalidTransformError, match="character 8"):
        parse_path("$.detail..state")


def test_more_than_100_variables_are_refused() -> None:
    paths = {f"v{n}": "$.id" for n in range(101)}
    with pytest.raises(InvalidTransformError, match="at most 100"):
        InputTransformer("<v1>", paths)


def test_template_rendering_to_broken_json_is_an_error() -> None:
    with pytest.raises(InvalidTransformError, match="invalid JSON"):
        InputTransformer('{"a": <x>', {"x": "$.id"}).render({"id": 1})


def test_unknown_key_in_transformer_object_is_refused() -> None:
    with pytest.raises(InvalidTransformError) as caught:
        rule_input(None, {"InputTemplate": "x", "Extra": 1})
    assert caught.value.field == "Extra"


def test_rendered_json_text_is_what_json_loads_gives() -> None:
    transformer = InputTransformer('[<a>, "<a>"]', {"a": "$.a"})
    assert transformer.render({"a": {"x": 1}}) == [
        {"x": 1},
        json.dumps({"x": 1}, separators=(",", ":")),
    ]
