"""An app whose functions reach ``context.flows`` and ``context.secrets``, inline and
in ``process`` workers (the zygote imports this module, so the app lives at module
level)."""

from __future__ import annotations

from typing import Any

from reflow import App

app = App("clients")

_TASK = "reflow:function:"


@app.function()
def shout(event: Any, context: Any) -> Any:
    """The greet flow's task."""
    return {"text": str(event["text"]).upper()}


# -- starting executions: sync and async, inline and in workers ----------------------


def _start_sync(event: Any, context: Any) -> Any:
    return context.flows.sync.start_execution(event["flow"], event.get("input"), event.get("name"))


async def _start_async(event: Any, context: Any) -> Any:
    return await context.flows.start_execution(
        event["flow"], event.get("input"), name=event.get("name")
    )


start_inline = app.function(name="start_inline")(_start_sync)
start_inline_async = app.function(name="start_inline_async")(_start_async)
start_process = app.function(name="start_process", isolation="process", timeout=10)(_start_sync)
start_process_async = app.function(name="start_process_async", isolation="process", timeout=10)(
    _start_async
)


# -- any call of context.flows, by name: what the authorisation tests drive ---------------


async def _call(event: Any, context: Any) -> Any:
    method = getattr(context.flows, event["op"])
    return await method(*event.get("args", []), **event.get("kwargs", {}))


call_inline = app.function(name="call_inline")(_call)
call_process = app.function(name="call_process", isolation="process", timeout=10)(_call)


@app.function(name="blocking_in_async")
async def blocking_in_async(event: Any, context: Any) -> Any:
    """The mistake: a blocking call from a coroutine on the loop the client runs on."""
    return context.flows.sync.describe_execution("p1")


# -- answering a callback task from the function the task calls ----------------------


def _approve(event: Any, context: Any) -> Any:
    context.flows.sync.send_task_success(event["token"], {"approved_by": event["who"]})
    return "answered"


approve_inline = app.function(name="approve_inline")(_approve)
approve_process = app.function(name="approve_process", isolation="process", timeout=10)(_approve)


# -- secrets ---------------------------------------------------------------------------


def _secret_sync(event: Any, context: Any) -> Any:
    return context.secrets.sync.get(event["name"])


async def _secret_async(event: Any, context: Any) -> Any:
    return await context.secrets.get(event["name"])


secret_inline = app.function(name="secret_inline")(_secret_sync)
secret_inline_async = app.function(name="secret_inline_async")(_secret_async)
secret_process = app.function(name="secret_process", isolation="process", timeout=10)(_secret_sync)
secret_process_async = app.function(name="secret_process_async", isolation="process", timeout=10)(
    _secret_async
)


# -- flows -----------------------------------------------------------------------------

app.flow(
    "greet",
    {
        "StartAt": "Shout",
        "States": {"Shout": {"Type": "Task", "Resource": _TASK + "shout", "End": True}},
    },
)
for _who in ("inline", "process"):
    app.flow(
        f"approval_{_who}",
        {
            "StartAt": "Ask",
            "States": {
                "Ask": {
                    "Type": "Task",
                    "Resource": f"{_TASK}approve_{_who}.waitForTaskToken",
                    "Parameters": {"token.$": "$$.Task.Token", "who": _who},
                    "End": True,
                }
            },
        },
    )
app.flow(
    "waiting",
    {
        "StartAt": "Ask",
        "States": {
            "Ask": {
                "Type": "Task",
                "Resource": "nobody.waitForTaskToken",  # no function: it only waits
                "Parameters": {"token.$": "$$.Task.Token"},
                "HeartbeatSeconds": 600,
                "End": True,
            }
        },
    },
)
app.flow(
    "parked",
    {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": True}}},
)
