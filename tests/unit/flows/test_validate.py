"""Definition validation: every problem is reported, each with its JSON path."""

from __future__ import annotations

from typing import Any

import pytest

from reflow import App
from reflow.errors import InvalidDefinitionError
from reflow.flows import StateMachine, parse
from reflow.flows.model import MapState, TaskState


def problems_of(definition: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidDefinitionError) as caught:
        parse(definition)
    return list(caught.value.problems)


def paths_of(definition: Any) -> list[str]:
    return [path for path, _ in problems_of(definition)]


def machine(**states: Any) -> dict[str, Any]:
    return {"StartAt": next(iter(states)), "States": states}


def test_next_naming_no_state_reads_like_the_style_guide() -> None:
    found = problems_of(
        machine(
            Parse={"Type": "Pass", "Next": "Render"},
            Render={"Type": "Pass", "Next": "Purj"},
        )
    )
    assert ("States.Render.Next", 'state "Render" names "Purj", which does not exist') in found


def test_every_problem_is_listed_not_only_the_first() -> None:
    found = paths_of(
        machine(
            A={"Type": "Pass", "Next": "B", "Bogus": 1},
            B={"Type": "Task", "End": True},
            Lost={"Type": "Succeed"},
        )
    )
    assert "States.A.Bogus" in found
    assert "States.B.Resource" in found
    assert "States.Lost" in found


def test_state_without_next_or_end_is_refused() -> None:
    assert paths_of(machine(A={"Type": "Pass"})) == ["States.A"]


def test_unknown_type_and_missing_start_at() -> None:
    found = paths_of({"States": {"A": {"Type": "Nope"}}})
    assert "StartAt" in found and "States.A.Type" in found


def test_unreachable_state_is_named() -> None:
    found = problems_of(machine(A={"Type": "Succeed"}, B={"Type": "Succeed"}))
    assert found == [("States.B", "state 'B' is unreachable")]


def test_retry_rules() -> None:
    retry = [
        {"ErrorEquals": ["States.ALL", "X"], "BackoffRate": 0.5},
        {"ErrorEquals": ["Y"], "MaxAttempts": -1, "JitterStrategy": "SOME"},
    ]
    found = paths_of(machine(T={"Type": "Task", "Resource": "f", "End": True, "Retry": retry}))
    assert found.count("States.T.Retry[0].ErrorEquals") == 2  # not alone, not last
    assert "States.T.Retry[0].BackoffRate" in found
    assert "States.T.Retry[1].MaxAttempts" in found
    assert "States.T.Retry[1].JitterStrategy" in found


def test_catch_needs_an_existing_next() -> None:
    catch = [{"ErrorEquals": ["States.ALL"], "Next": "Nowhere"}]
    found = paths_of(machine(T={"Type": "Task", "Resource": "f", "End": True, "Catch": catch}))
    assert found == ["States.T.Catch[0].Next"]


def test_jsonpath_fields_in_a_jsonata_state_and_the_reverse() -> None:
    found = problems_of(
        {
            "QueryLanguage": "JSONata",
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "InputPath": "$.x", "Next": "B"},
                "B": {"Type": "Pass", "QueryLanguage": "JSONPath", "End": True},
            },
        }
    )
    assert ("States.A.InputPath", "InputPath is a JSONPath field; this state uses JSONata") in found
    assert any(path == "States.B.QueryLanguage" for path, _ in found)
    paths = paths_of(machine(A={"Type": "Pass", "Output": {}, "End": True}))
    assert paths == ["States.A.Output"]


def test_malformed_paths_intrinsics_and_jsonata_are_reported() -> None:
    found = paths_of(
        machine(
            A={
                "Type": "Pass",
                "InputPath": "$.a[",
                "ResultPath": "$.items[*]",
                "Parameters": {"x.$": "States.Format('a'", "y.$": "nope", "z.$": "$..ok"},
                "Next": "B",
            },
            B={
                "Type": "Pass",
                "QueryLanguage": "JSONata",
                "Output": "{% $states.input. %}",
                "End": True,
            },
        )
    )
    assert found == [
        "States.A.InputPath",
        "States.A.ResultPath",
        "States.A.Parameters.x.$",
        "States.A.Parameters.y.$",
        "States.B.Output",
    ]


def test_problems_inside_branches_and_processors_carry_their_full_path() -> None:
    found = paths_of(
        machine(
            P={
                "Type": "Parallel",
                "Branches": [{"StartAt": "X", "States": {"X": {"Type": "Pass", "Next": "Y"}}}],
                "Next": "M",
            },
            M={
                "Type": "Map",
                "ItemProcessor": {"StartAt": "Q", "States": {"Q": {"Type": "Wait", "End": True}}},
                "End": True,
            },
        )
    )
    assert "States.P.Branches[0].States.X.Next" in found
    assert "States.M.ItemProcessor.States.Q" in found


def test_choice_rules_are_checked() -> None:
    found = paths_of(
        machine(
            C={
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.a", "NumericEquals": "one", "Next": "D"},
                    {"Variable": "$.a", "Next": "D"},
                    {"And": [{"Variable": "$.b", "IsNull": "yes"}], "Next": "D"},
                    {"Variable": "$.a", "StringEquals": "x"},
                ],
                "Default": "Gone",
            },
            D={"Type": "Succeed"},
        )
    )
    assert "States.C.Choices[0].NumericEquals" in found
    assert "States.C.Choices[1]" in found
    assert "States.C.Choices[2].And[0].IsNull" in found
    assert "States.C.Choices[3].Next" in found
    assert "States.C.Default" in found


def test_wait_needs_exactly_one_way_to_wait() -> None:
    found = paths_of(machine(W={"Type": "Wait", "Seconds": 1, "SecondsPath": "$.s", "End": True}))
    assert found == ["States.W"]


def test_json_text_is_accepted_and_bad_json_is_a_problem() -> None:
    parsed = parse(
        '{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "f", "End": true}}}'
    )
    assert isinstance(parsed.state("T"), TaskState)
    assert paths_of("{not json") == ["$"]


def test_old_iterator_form_of_map_is_accepted() -> None:
    parsed = parse(
        machine(
            M={
                "Type": "Map",
                "Iterator": {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}},
                "Parameters": {"v.$": "$$.Map.Item.Value"},
                "End": True,
            }
        )
    )
    state = parsed.state("M")
    assert isinstance(state, MapState) and state.item_selector == {"v.$": "$$.Map.Item.Value"}


def test_app_flow_refuses_an_invalid_definition_with_every_problem() -> None:
    app = App("site")
    with pytest.raises(InvalidDefinitionError) as caught:
        app.flow("publish", machine(A={"Type": "Pass", "Next": "Purj"}))
    assert caught.value.problems[0][0] == "publish: States.A.Next"


def test_state_machine_parse_is_the_same_as_parse() -> None:
    definition = machine(A={"Type": "Succeed"})
    assert StateMachine.parse(definition) == parse(definition)
    with pytest.raises(InvalidDefinitionError):
        StateMachine.parse(machine(A={"Type": "Pass"}))
