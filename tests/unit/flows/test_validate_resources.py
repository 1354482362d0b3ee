"""A Task's Resource is checked when the definition is validated, not when the task runs.

The accepted integrations and their patterns follow Step Functions' table of
optimized integrations (Lambda and EventBridge: request-response and
``.waitForTaskToken``; DynamoDB: request-response only; Step Functions:
all three patterns, ``.sync`` as ``.sync`` and ``.sync:2``; AWS SDK
integrations: request-response and ``.waitForTaskToken``), and the Lambda
function ARN's shape follows Lambda's ``FunctionName`` format.
"""

from __future__ import annotations

from typing import Any

import pytest

from reflow import App
from reflow.errors import InvalidDefinitionError
from reflow.flows import integrations, nested, parse, run
from reflow.flows.validate_resources import integrations_run, problem

ACCEPTED = [
    "double",
    "ask.waitForTaskToken",
    "reflow:function:double",
    "reflow:function:ask.waitForTaskToken",
    "reflow:cache:purge",
    "reflow:cache:purge.waitForTaskToken",
    "arn:aws:lambda:us-east-1:123456789012:function:double",
    "arn:aws:lambda:eu-west-1:123456789012:function:my_fn-2:PROD",
    "arn:aws:lambda:eu-west-1:123456789012:function:double:$LATEST",
    "arn:aws:lambda:eu-west-1:123456789012:function:double:7",
    "arn:aws:lambda:local:000000000000:function:double",
    "arn:aws:lambda:us-east-1:123456789012:function:double.waitForTaskToken",
    "arn:aws:lambda:us-east-1:123456789012:function:" + "f" * 64,
    "arn:aws:states:::lambda:invoke",
    "arn:aws:states:::lambda:invoke.waitForTaskToken",
    "arn:aws:states:::states:startExecution",
    "arn:aws:states:::states:startExecution.sync",
    "arn:aws:states:::states:startExecution.sync:2",
    "arn:aws:states:::states:startExecution.waitForTaskToken",
    "arn:aws:states:::events:putEvents",
    "arn:aws:states:::events:putEvents.waitForTaskToken",
    "arn:aws:states:::dynamodb:getItem",
    "arn:aws:states:::dynamodb:putItem",
    "arn:aws:states:::dynamodb:updateItem",
    "arn:aws:states:::dynamodb:deleteItem",
    "arn:aws:states:::aws-sdk:cloudfront:createInvalidation",
    "arn:aws:states:::aws-sdk:cloudfront:createInvalidation.waitForTaskToken",
]

# (resource, words the message must hold)
REJECTED = [
    ("arn:aws:states:::events:putEvent", ["not a service integration", "events:putEvents?"]),
    ("arn:aws:states:::dynamodb:putitem", ["did you mean", ":::dynamodb:putItem?"]),
    ("arn:aws:states:::dynamodb:scan", ["not a service integration", "dynamodb:getItem"]),
    ("arn:aws:states:::sqs:sendMessage", ["not a service integration", "lambda:invoke"]),
    ("arn:aws:states:::sqs:sendMessage.waitForTaskToken", ["approval.waitForTaskToken"]),
    ("arn:aws:states:::s3:getObject", ["not a service integration"]),
    ("arn:aws:states:::", ["not a service integration"]),
    ("arn:aws:states:::lambda:invoke.wait", ["unknown integration pattern '.wait'"]),
    ("arn:aws:states:::lambda:invoke.sync", ["lambda:invoke does not support .sync"]),
    ("arn:aws:states:::events:putEvents.sync", ["events:putEvents does not support .sync"]),
    ("arn:aws:states:::events:putEvents.sync:2", ["does not support .sync:2"]),
    ("arn:aws:states:::dynamodb:getItem.waitForTaskToken", ["request-response only"]),
    ("arn:aws:states:::dynamodb:putItem.sync", ["does not support .sync"]),
    (
        "arn:aws:states:::aws-sdk:cloudfront:createInvalidation.sync",
        ["does not support .sync", "request-response and .waitForTaskToken"],
    ),
    ("arn:aws:states:::states:startExecution.sync:3", ["unknown integration pattern"]),
    ("arn:aws:states:::lambda:invoke.waitForTaskToken.sync", ["unknown integration pattern"]),
    ("arn:aws:lambda:us-east-1:123456789012:function", ["malformed Lambda", "6 fields"]),
    ("arn:aws:lambda:us-east-1:123456789012:function:f:1:2", ["9 fields"]),
    ("arn:aws:lambda:us-east-1:123456789012:layer:f", ["'layer' where 'function' belongs"]),
    ("arn:aws:lambda::123456789012:function:f", ["region ''"]),
    ("arn:aws:lambda:us-east-1:12345:function:f", ["account '12345' is not 12 digits"]),
    ("arn:aws:lambda:us-east-1:123456789012:function:my fn", ["function name 'my fn'"]),
    ("arn:aws:lambda:us-east-1:123456789012:function:" + "f" * 65, ["1 to 64"]),
    ("arn:aws:lambda:us-east-1:123456789012:function:f.x", ["function name 'f.x'"]),
    ("arn:aws:lambda:us-east-1:123456789012:function:f:v.1", ["qualifier 'v.1'"]),
    ("arn:aws:lambda:us-east-1:123456789012:function:f.sync", ["not .sync"]),
    ("arn:aws-cn:lambda:cn-north-1:123456789012:function:f", ["partition 'aws-cn'"]),
    ("arn:aws-us-gov:states:::lambda:invoke", ["partition 'aws-us-gov'"]),
    ("arn:aws:states:us-east-1:123456789012:activity:a", ["activities are not supported"]),
    ("arn:aws:sqs:us-east-1:123456789012:queue", ["does not run sqs resources"]),
    ("arn:aws", ["malformed ARN"]),
    ("arn:aws::us-east-1:123456789012:x", ["malformed ARN"]),
    ("reflow:function:", ["needs a function name"]),
    ("reflow:function:a:b", ["needs a function name"]),
    ("reflow:function:a b", ["needs a function name"]),
    ("reflow:function:f.sync", ["not .sync"]),
    ("reflow:cache:purj", ["not a reflow resource", "reflow:cache:purge"]),
    ("reflow:cache:purge.sync", ["not .sync"]),
]


def task(resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Type": "Task", "Resource": resource, **extra}


def problems_of(definition: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidDefinitionError) as caught:
        parse(definition)
    return list(caught.value.problems)


@pytest.mark.parametrize("resource", ACCEPTED)
def test_every_form_reflow_runs_is_accepted(resource: str) -> None:
    assert problem(resource) is None
    # lambda:invoke also needs the function it invokes (tested below).
    extra = {"Parameters": {"FunctionName": "double"}} if "lambda:invoke" in resource else {}
    parse({"StartAt": "T", "States": {"T": task(resource, End=True, **extra)}})


@pytest.mark.parametrize(("resource", "words"), REJECTED)
def test_a_resource_reflow_cannot_run_is_named_with_its_path(
    resource: str, words: list[str]
) -> None:
    found = problems_of({"StartAt": "T", "States": {"T": task(resource, End=True)}})
    assert [path for path, _ in found] == ["States.T.Resource"]
    message = found[0][1]
    for word in words:
        assert word in message, message


def test_the_integrations_come_from_the_modules_that_run_them() -> None:
    table = integrations_run()
    assert integrations.PUT_EVENTS in table
    assert integrations.CLOUDFRONT_INVALIDATION in table
    assert set(integrations.DYNAMODB) <= set(table)
    assert nested.START_EXECUTION in table
    # Every integration the executor keys a function by is accepted.
    for resource in integrations.integration_functions(integrations.fixed_clients()):
        assert problem(resource) is None, resource


def test_an_unknown_integration_lists_the_ones_reflow_runs() -> None:
    message = problem("arn:aws:states:::sns:publish")
    assert message is not None
    for api in ("lambda:invoke", "states:startExecution", "events:putEvents", "dynamodb:getItem"):
        assert api in message
    assert "did you mean" not in message


def test_resources_inside_parallel_branches_and_map_processors_carry_their_path() -> None:
    definition = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "A", "States": {"A": task("double", End=True)}},
                    {"StartAt": "B", "States": {"B": task("reflow:cache:purj", End=True)}},
                ],
                "Next": "Each",
            },
            "Each": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "Put",
                    "States": {"Put": task("arn:aws:states:::events:putEvents.sync", End=True)},
                },
                "End": True,
            },
        },
    }
    assert [path for path, _ in problems_of(definition)] == [
        "States.Fan.Branches[1].States.B.Resource",
        "States.Each.ItemProcessor.States.Put.Resource",
    ]


def test_several_bad_resources_are_reported_together_with_other_problems() -> None:
    definition = {
        "StartAt": "A",
        "States": {
            "A": task("arn:aws:states:::events:putEvent", Next="B"),
            "B": task("arn:aws:states:::dynamodb:putitem", Next="C"),
            "C": task("arn:aws:states:::lambda:invoke.wait", Next="Nowhere"),
        },
    }
    assert sorted(path for path, _ in problems_of(definition)) == [
        "States.A.Resource",
        "States.B.Resource",
        "States.C.Next",
        "States.C.Resource",
    ]


def test_jsonata_tasks_follow_the_same_rules() -> None:
    def machine(resource: str) -> dict[str, Any]:
        put = task(resource, Arguments={"Entries": "{% $states.input.entries %}"}, End=True)
        return {"QueryLanguage": "JSONata", "StartAt": "Put", "States": {"Put": put}}

    parse(machine(integrations.PUT_EVENTS))
    found = problems_of(machine("reflow:cachepurge"))
    assert [path for path, _ in found] == ["States.Put.Resource"]


def test_a_missing_or_empty_resource_is_still_required() -> None:
    for state in ({"Type": "Task", "End": True}, task("", End=True), task(7, End=True)):
        found = problems_of({"StartAt": "T", "States": {"T": state}})
        assert found == [("States.T.Resource", "is required and must be a string")]


def test_app_flow_refuses_a_misspelt_integration_at_registration() -> None:
    app = App("resources")
    with pytest.raises(InvalidDefinitionError) as caught:
        app.flow(
            "bad",
            {"StartAt": "T", "States": {"T": task("arn:aws:states:::events:putEvent", End=True)}},
        )
    assert [path for path, _ in caught.value.problems] == ["bad: States.T.Resource"]


# lambda:invoke: Lambda's Invoke API requires FunctionName.
INVOKE = "arn:aws:states:::lambda:invoke"
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:double"


def jsonata_task(state: dict[str, Any]) -> dict[str, Any]:
    return {"QueryLanguage": "JSONata", "StartAt": "T", "States": {"T": state}}


@pytest.mark.parametrize(
    ("state", "path"),
    [
        (task(INVOKE, End=True), "States.T.Parameters"),
        (task(INVOKE, Parameters={"Payload.$": "$"}, End=True), "States.T.Parameters"),
        (task(INVOKE + ".waitForTaskToken", Parameters={}, End=True), "States.T.Parameters"),
        (task(INVOKE, Parameters="double", End=True), "States.T.Parameters"),
        (task(INVOKE, Parameters={"functionName": "double"}, End=True), "States.T.Parameters"),
        (
            task(INVOKE, Parameters={"FunctionName": ""}, End=True),
            "States.T.Parameters.FunctionName",
        ),
        (
            task(INVOKE, Parameters={"FunctionName": 7}, End=True),
            "States.T.Parameters.FunctionName",
        ),
    ],
)
def test_lambda_invoke_without_a_function_name_is_refused_with_its_path(
    state: dict[str, Any], path: str
) -> None:
    found = problems_of({"StartAt": "T", "States": {"T": state}})
    assert [where for where, _ in found] == [path]
    assert "FunctionName" in found[0][1] or "function name" in found[0][1]


@pytest.mark.parametrize(
    "parameters",
    [
        {"FunctionName": "double"},
        {"FunctionName": FUNCTION_ARN, "Payload.$": "$.n"},
        {"FunctionName.$": "$.fn", "Payload.$": "$"},
        {"FunctionName.$": "States.Format('{}', $.fn)"},
    ],
)
def test_lambda_invoke_with_function_name_or_its_path_is_accepted(
    parameters: dict[str, Any],
) -> None:
    for resource in (INVOKE, INVOKE + ".waitForTaskToken"):
        parse({"StartAt": "T", "States": {"T": task(resource, Parameters=parameters, End=True)}})


def test_jsonata_lambda_invoke_needs_function_name_in_an_arguments_object() -> None:
    found = problems_of(jsonata_task(task(INVOKE, End=True)))
    assert [path for path, _ in found] == ["States.T.Arguments"]
    found = problems_of(jsonata_task(task(INVOKE, Arguments={"Payload": 1}, End=True)))
    assert [path for path, _ in found] == ["States.T.Arguments"]
    # FunctionName.$ means nothing in JSONata: the literal key is not the field.
    found = problems_of(jsonata_task(task(INVOKE, Arguments={"FunctionName.$": "$"}, End=True)))
    assert "States.T.Arguments" in [path for path, _ in found]
    parse(jsonata_task(task(INVOKE, Arguments={"FunctionName": "double"}, End=True)))
    dynamic = {"FunctionName": "{% $states.input.fn %}", "Payload": "{% $states.input %}"}
    parse(jsonata_task(task(INVOKE, Arguments=dynamic, End=True)))


def test_jsonata_arguments_as_one_expression_is_left_to_run_time() -> None:
    whole = "{% {'FunctionName': $states.input.fn, 'Payload': $states.input.n} %}"
    parse(jsonata_task(task(INVOKE, Arguments=whole, End=True)))
    # Even one that yields no FunctionName: only running it tells (TaskFailed then).
    lacking = jsonata_task(task(INVOKE, Arguments="{% {'Payload': 1} %}", End=True))
    execution = run(lacking, {}, functions={"double": lambda n, c: n * 2})
    assert execution.status == "FAILED"
    assert execution.error == "States.TaskFailed"
    # Arguments neither an object nor an expression: reported once, by the JSONata checks.
    found = problems_of(jsonata_task(task(INVOKE, Arguments=5, End=True)))
    assert found == [("States.T.Arguments", "must be an object or a JSONata expression")]


def test_a_state_level_jsonata_task_in_a_jsonpath_flow_uses_arguments() -> None:
    state = task(INVOKE, QueryLanguage="JSONata", Arguments={"Payload": 1}, End=True)
    found = problems_of({"StartAt": "T", "States": {"T": state}})
    assert [path for path, _ in found] == ["States.T.Arguments"]


def test_a_refused_invoke_resource_is_not_also_asked_for_a_function_name() -> None:
    for resource in (INVOKE + ".sync", INVOKE + ".wait"):
        found = problems_of({"StartAt": "T", "States": {"T": task(resource, End=True)}})
        assert [path for path, _ in found] == ["States.T.Resource"]


def test_other_resources_need_no_function_name() -> None:
    for resource in ("double", FUNCTION_ARN, integrations.PUT_EVENTS, "reflow:function:double"):
        parse({"StartAt": "T", "States": {"T": task(resource, End=True)}})


def test_lambda_invoke_problems_are_reported_inside_branches_and_together() -> None:
    definition = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Parallel",
                "Branches": [{"StartAt": "A", "States": {"A": task(INVOKE, End=True)}}],
                "Next": "Each",
            },
            "Each": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "B",
                    "States": {"B": task(INVOKE, Parameters={"Payload.$": "$"}, Next="Gone")},
                },
                "End": True,
            },
        },
    }
    assert sorted(path for path, _ in problems_of(definition)) == [
        "States.Each.ItemProcessor.States.B.Next",
        "States.Each.ItemProcessor.States.B.Parameters",
        "States.Fan.Branches[0].States.A.Parameters",
    ]


def test_app_flow_refuses_lambda_invoke_without_function_name_at_registration() -> None:
    app = App("resources")
    with pytest.raises(InvalidDefinitionError) as caught:
        app.flow("bad", {"StartAt": "T", "States": {"T": task(INVOKE, End=True)}})
    assert [path for path, _ in caught.value.problems] == ["bad: States.T.Parameters"]
