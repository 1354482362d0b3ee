"""A durable Map whose iterations wait for task tokens survives SIGKILL while they wait.

The flow: a Map over 5 items (MaxConcurrency 0) whose iteration is one
``.waitForTaskToken`` task, its function handed the token (it appends
``[item, token]`` to a file). Three processes in turn, on one backend:

1. starts the execution and SIGKILLs itself when about to hand over the
   third token (two were handed over and saved);
2. recovers, hands over the tokens still owed, answers two of them with
   ``send_task_success`` and SIGKILLs itself once both answers are saved;
3. recovers and answers the rest (one with ``send_task_failure``, caught
   inside the iteration), then runs the execution to its end.

Afterwards the execution SUCCEEDED once with every answer in item order,
each item was handed one token only (one handed over just before the first
kill possibly twice — the same token), and the children's records are gone. Run
on SQLite and on Redis (a unique key prefix per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import open_backend
from reflow.errors import ExecutionAlreadyExistsError
from reflow.flows import TaskContext
from reflow.flows.service import FlowService
from tests.functional.flows.crashing import backend_url, run_to_exit

ITEMS = 5
DEFINITION: dict[str, Any] = {
    "StartAt": "Fan",
    "States": {
        "Fan": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemProcessor": {
                "StartAt": "Approve",
                "States": {
                    "Approve": {
                        "Type": "Task",
                        "Resource": "mail.waitForTaskToken",
                        "Parameters": {"item.$": "$", "token.$": "$$.Task.Token"},
                        "Catch": [{"ErrorEquals": ["Rejected"], "Next": "Refused"}],
                        "End": True,
                    },
                    "Refused": {"Type": "Pass", "Result": "refused", "End": True},
                },
            },
            "End": True,
        }
    },
}


def tokens_of(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    return [(item, token) for item, token in map(json.loads, path.read_text().splitlines())]


def child(url: str, data_dir: str, tokens: str, name: str, step: int) -> None:
    """Process ``step`` (1, 2 or 3) of the scenario in the module doc."""
    faulthandler.dump_traceback_later(45, exit=True)
    path = Path(tokens)

    def mail(event: Any, context: TaskContext) -> Any:
        if step == 1 and len(tokens_of(path)) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        with path.open("a") as file:  # one write(): kept even if the process dies next
            file.write(json.dumps([event["item"], event["token"]]) + "\n")
        return None

    async def main() -> None:
        backend = await open_backend(url, data_dir=Path(data_dir))
        service = FlowService(
            backend, {"fan": DEFINITION}, functions={"mail": mail},
            workers=2, block=0.02, poll=0.02,
        )  # fmt: skip
        try:
            with contextlib.suppress(ExecutionAlreadyExistsError):
                await service.start_execution("fan", {"items": list(range(ITEMS))}, name=name)
            answered = False
            async with service:
                for _ in range(4000):
                    described = await service.describe(name)
                    # The children's records go right after the final save: let them.
                    ended = described["status"] != "RUNNING"
                    if ended and not await backend.kv.scan(f"flows/c/{name}/"):
                        break
                    handed = dict(tokens_of(path))
                    waiting = described["waiting_for"] == "children"
                    if len(handed) == ITEMS and waiting and not answered:
                        answered = True
                        if step == 2:
                            await service.send_task_success(handed[0], "yes-0")
                            await service.send_task_success(handed[3], "yes-3")
                            os.kill(os.getpid(), signal.SIGKILL)
                        if step == 3:
                            for item in (1, 4):
                                await service.send_task_success(handed[item], f"yes-{item}")
                            await service.send_task_failure(handed[2], error="Rejected")
                    await asyncio.sleep(0.005)
        finally:
            await backend.close()

    asyncio.run(main())


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def run_child(url: str, tmp_path: Path, tokens: Path, name: str, step: int) -> int:
    arguments = (url, str(tmp_path), str(tokens), name, step)
    return run_to_exit(_CONTEXT, child, arguments, f"step {step} of {name}")


async def outcome(url: str, tmp_path: Path, name: str) -> tuple[dict[str, Any], list[str], int]:
    backend = await open_backend(url, data_dir=tmp_path)
    try:
        service = FlowService(backend, {"fan": DEFINITION})
        described = await service.describe(name)
        types = [event["type"] for event in await service.history(name)]
        left = len(await backend.kv.scan(f"flows/c/{name}/"))
        return described, types, left
    finally:
        await backend.close()


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path, "test-flows-callbacks")


def test_sigkill_while_iterations_wait_for_tokens_keeps_the_waits_and_the_tokens(
    url: str, tmp_path: Path
) -> None:
    name, tokens = "approvals", tmp_path / "tokens"
    assert run_child(url, tmp_path, tokens, name, 1) == -signal.SIGKILL
    assert len(tokens_of(tokens)) == 2
    assert run_child(url, tmp_path, tokens, name, 2) == -signal.SIGKILL
    assert run_child(url, tmp_path, tokens, name, 3) == 0
    described, types, left = asyncio.run(outcome(url, tmp_path, name))
    assert described["status"] == "SUCCEEDED", described
    assert described["output"] == ["yes-0", "yes-1", "refused", "yes-3", "yes-4"]
    handed: dict[int, set[str]] = {}
    for item, token in tokens_of(tokens):
        handed.setdefault(item, set()).add(token)
    assert sorted(handed) == list(range(ITEMS))
    assert all(len(found) == 1 for found in handed.values()), handed  # one token per item
    # At-least-once: a token handed over before the kill, whose "handed over" save the
    # kill came before, is handed over again — the same token. At most the two of step 1.
    assert len(tokens_of(tokens)) <= ITEMS + 2
    assert types.count("TaskSucceeded") == 4 and types.count("TaskFailed") == 1
    assert types.count("MapStateEntered") == 1 and types[-1] == "ExecutionSucceeded"
    assert left == 0
