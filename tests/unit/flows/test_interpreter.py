"""The pure step(): plain values in, an action out, no clock and no I/O."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.flows import interpreter as core
from reflow.flows import parse, run
from reflow.flows.model import Retrier

CONTEXT: dict[str, Any] = {"Execution": {"Name": "x"}, "State": {"Name": "", "RetryCount": 0}}


def machine(**states: Any) -> Any:
    return parse({"StartAt": next(iter(states)), "States": states})


def test_task_state_asks_for_an_invocation_then_places_the_result() -> None:
    m = machine(
        T={
            "Type": "Task",
            "Resource": "f",
            "Parameters": {"v.$": "$.a"},
            "ResultPath": "$.r",
            "TimeoutSeconds": 9,
            "Next": "E",
        },
        E={"Type": "Succeed"},
    )
    cursor = core.start(m, {"a": 1})
    action = core.step(m, cursor, CONTEXT)
    assert action == core.Invoke("f", {"v": 1}, 9.0, None)
    after = core.step(m, cursor, CONTEXT, core.Result("done"))
    assert isinstance(after, core.Goto)
    assert after.cursor == core.Cursor("E", {"a": 1, "r": "done"}, {})


def test_wait_state_asks_to_sleep_and_never_reads_a_clock() -> None:
    m = machine(W={"Type": "Wait", "Timestamp": "2024-01-01T00:00:00Z", "End": True})
    action = core.step(m, core.start(m, {}), CONTEXT)
    assert action == core.Sleep(until=1704067200.0)


def test_failure_with_a_retrier_left_returns_retry_with_counted_attempts() -> None:
    m = machine(
        T={
            "Type": "Task",
            "Resource": "f",
            "End": True,
            "Retry": [{"ErrorEquals": ["A"], "MaxAttempts": 2}],
        }
    )
    cursor = core.start(m, {})
    first = core.step(m, cursor, CONTEXT, core.Failure("A", "x"))
    assert isinstance(first, core.Retry) and first.attempt == 0
    second = core.step(m, first.cursor, CONTEXT, core.Failure("A", "x"))
    assert isinstance(second, core.Retry) and second.attempt == 1
    assert second.retrier == Retrier(error_equals=("A",), max_attempts=2)
    third = core.step(m, second.cursor, CONTEXT, core.Failure("A", "x"))
    assert third == core.Fail("A", "x")


def test_catch_returns_goto_with_the_error_placed_by_result_path() -> None:
    m = machine(
        T={
            "Type": "Task",
            "Resource": "f",
            "Next": "E",
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.e", "Next": "E"}],
        },
        E={"Type": "Succeed"},
    )
    action = core.step(m, core.start(m, {"k": 1}), CONTEXT, core.Failure("Bad", "why"))
    assert isinstance(action, core.Goto)
    assert action.cursor.input == {"k": 1, "e": {"Error": "Bad", "Cause": "why"}}
    assert action.caught == core.Failure("Bad", "why")


def test_map_state_fans_out_one_child_per_item() -> None:
    m = machine(
        M={
            "Type": "Map",
            "MaxConcurrency": 3,
            "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
            "End": True,
        }
    )
    action = core.step(m, core.start(m, ["a", "b"]), CONTEXT)
    assert isinstance(action, core.Branches)
    assert [(c.input, c.index) for c in action.children] == [("a", 0), ("b", 1)]
    assert action.max_concurrency == 3


def test_gather_without_tolerance_returns_the_first_failure_in_order() -> None:
    action = core.Branches("Map", ())
    outcomes: list[core.Outcome] = [core.Result(1), core.Failure("X", "1"), core.Failure("Y", "2")]
    assert core.gather(action, outcomes) == core.Failure("X", "1")
    assert core.gather(action, [core.Result(1), core.Result(2)]) == core.Result([1, 2])


def test_step_leaves_the_cursor_it_was_given_unchanged() -> None:
    m = machine(P={"Type": "Pass", "Result": {"n": 1}, "ResultPath": "$.x.y", "End": True})
    data = {"x": {"z": 0}}
    cursor = core.start(m, data)
    action = core.step(m, cursor, CONTEXT)
    assert isinstance(action, core.Succeed)
    assert action.output == {"x": {"z": 0, "y": {"n": 1}}}
    assert data == {"x": {"z": 0}}


keys = st.sampled_from(["a", "b", "c"])
values = st.one_of(st.integers(), st.text(max_size=3), st.booleans())


@st.composite
def pass_chains(draw: st.DrawFn) -> list[tuple[str, Any, str | None]]:
    """Pass states as (result path, result, output path) triples."""
    length = draw(st.integers(1, 6))
    chain = []
    for _ in range(length):
        result_path = "$." + draw(keys)
        output_path = draw(st.one_of(st.none(), st.just("$")))
        chain.append((result_path, draw(values), output_path))
    return chain


@settings(max_examples=60, deadline=None)
@given(pass_chains(), st.dictionaries(keys, values))
def test_a_pass_chain_equals_the_composition_of_its_result_paths(
    chain: list[tuple[str, Any, str | None]], start: dict[str, Any]
) -> None:
    states: dict[str, Any] = {}
    expected: Any = dict(start)
    for index, (result_path, result, output_path) in enumerate(chain):
        state: dict[str, Any] = {"Type": "Pass", "Result": result, "ResultPath": result_path}
        if output_path is not None:
            state["OutputPath"] = output_path
        if index + 1 < len(chain):
            state["Next"] = f"S{index + 1}"
        else:
            state["End"] = True
        states[f"S{index}"] = state
        expected = {**expected, result_path[2:]: result}
    execution = run({"StartAt": "S0", "States": states}, start)
    assert execution.status == "SUCCEEDED"
    assert execution.output == expected
    assert len(execution.history) == 2 * len(chain) + 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-100, 100), max_size=8), st.integers(1, 4))
def test_map_of_a_pass_returns_its_items_in_order_whatever_the_concurrency(
    items: list[int], concurrency: int
) -> None:
    definition = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "MaxConcurrency": concurrency,
                "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
                "End": True,
            }
        },
    }
    assert run(definition, items).output == items
