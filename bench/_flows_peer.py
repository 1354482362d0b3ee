"""Adapter that drives LocalStack's ASL interpreter for bench/flows.py.

Runs under bench/.venv-peers' interpreter (LocalStack's Step Functions code
imports only on Python >= 3.13) and speaks JSON lines on stdin/stdout:

* ``{"op": "definitions", "definitions": {name: text}}`` parses each
  definition once with ``AmazonStateLanguageParser.parse``;
* ``{"op": "run", "name": n, "input": v, "count": k}`` evaluates the parsed
  program ``k`` times, each in a fresh ``Environment`` as LocalStack's
  ``ExecutionWorker`` builds it, and answers the seconds taken, the last
  output and the status.

As BENCHMARKS.md asks, ``jsonpath_ng``'s ``parse`` is memoised in the two
modules that call it: as shipped it rebuilds its parser tables on every path
parse, which would make the comparison unfair to LocalStack.
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
import time
from typing import Any

from localstack.aws.api.stepfunctions import StateMachineType  # type: ignore[import-not-found]
from localstack.services.stepfunctions.asl.component.common.path import (  # type: ignore[import-not-found]
    result_path,
)
from localstack.services.stepfunctions.asl.eval.environment import (  # type: ignore[import-not-found]
    Environment,
)
from localstack.services.stepfunctions.asl.eval.evaluation_details import (  # type: ignore[import-not-found]
    AWSExecutionDetails,
)
from localstack.services.stepfunctions.asl.eval.event.event_manager import (  # type: ignore[import-not-found]
    EventHistoryContext,
)
from localstack.services.stepfunctions.asl.eval.program_state import (  # type: ignore[import-not-found]
    ProgramEnded,
)
from localstack.services.stepfunctions.asl.parse.asl_parser import (  # type: ignore[import-not-found]
    AmazonStateLanguageParser,
)
from localstack.services.stepfunctions.asl.utils import json_path  # type: ignore[import-not-found]

result_path.parse = functools.lru_cache(maxsize=None)(result_path.parse)
json_path.parse = functools.lru_cache(maxsize=None)(json_path.parse)

ACCOUNT, REGION = "000000000000", "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/bench"


def execute(program: Any, name: str, value: Any) -> tuple[str, Any]:
    """One execution of ``program`` on ``value``, as ExecutionWorker runs it."""
    env = Environment(
        aws_execution_details=AWSExecutionDetails(account=ACCOUNT, region=REGION, role_arn=ROLE),
        execution_type=StateMachineType.EXPRESS,
        context={
            "Execution": {
                "Id": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{name}:bench",
                "Input": value,
                "Name": "bench",
                "RoleArn": ROLE,
                "StartTime": datetime.datetime.now(datetime.UTC).isoformat(),
            },
            "StateMachine": {
                "Id": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}",
                "Name": name,
            },
        },
        event_history_context=EventHistoryContext.of_program_start(),
        cloud_watch_logging_session=None,
        activity_store={},
    )
    program.eval(env)
    status = "SUCCEEDED" if isinstance(env.program_state(), ProgramEnded) else "FAILED"
    return status, env.states.get_input()


def main() -> None:
    programs: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "definitions":
            for name, text in request["definitions"].items():
                programs[name] = AmazonStateLanguageParser.parse(text)[0]
            answer: dict[str, Any] = {"count": len(programs)}
        else:
            program = programs[request["name"]]
            status, output = "FAILED", None
            started = time.perf_counter()
            for _ in range(request["count"]):
                status, output = execute(program, request["name"], request["input"])
            answer = {"seconds": time.perf_counter() - started, "status": status, "output": output}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
