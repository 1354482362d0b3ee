"""JSONata mode: expressions, templates, the Step Functions functions, error wrapping."""

from __future__ import annotations

import pytest

from reflow.flows import jsonata
from reflow.flows.errors import StatesError


def test_only_wrapped_strings_are_expressions() -> None:
    assert jsonata.is_expression("{% 1 %}")
    assert not jsonata.is_expression("{%}")  # the opening and closing marks overlap
    assert not jsonata.is_expression("1 + 1")
    assert not jsonata.is_expression("{% 1")


def test_states_and_variables_are_bound() -> None:
    states = {"input": {"a": 2}, "context": {"State": {"Name": "S"}}}
    value = jsonata.evaluate(
        "{% $states.input.a * $k & $states.context.State.Name %}", states, {"k": 3}
    )
    assert value == "6S"


def test_templates_are_walked_recursively() -> None:
    template = {"a": ["{% 1 + 1 %}", {"b": "{% 'x' %}"}], "c": "literal"}
    assert jsonata.evaluate_template(template, {}, {}) == {"a": [2, {"b": "x"}], "c": "literal"}


def test_integral_floats_come_back_as_ints() -> None:
    assert jsonata.evaluate("{% 10 / 2 %}", {}, {}) == 5
    assert jsonata.evaluate("{% 1 / 4 %}", {}, {}) == 0.25


def test_added_functions() -> None:
    assert jsonata.evaluate("{% $partition([1,2,3], 2) %}", {}, {}) == [[1, 2], [3]]
    assert jsonata.evaluate("{% $range(5, 1, -2) %}", {}, {}) == [5, 3, 1]
    assert jsonata.evaluate("{% $parse('{\"a\":1}') %}", {}, {}) == {"a": 1}
    assert len(jsonata.evaluate("{% $uuid() %}", {}, {})) == 36


@pytest.mark.parametrize(
    "expression",
    ["{% $error('x') %}", "{% $states.input.( %}", "{% $range(1, 2, 0) %}", "{% $parse(1) %}"],
)
def test_failures_become_query_evaluation_errors(expression: str) -> None:
    with pytest.raises(StatesError) as caught:
        jsonata.evaluate(expression, {"input": {}}, {})
    assert caught.value.name == "States.QueryEvaluationError"
