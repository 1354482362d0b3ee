"""State transitions: reflow's ASL engine against LocalStack's ASL interpreter.

Three definitions, identical on both sides (JSONPath mode, in memory):

* ``pass chain`` — 100 Pass states in a row, each writing its number with
  ``Result``/``ResultPath``;
* ``choice loop`` — a counter taken to 1,000 by a Choice state and a Pass state
  that adds one with ``States.MathAdd`` (about 2,000 transitions);
* ``map`` — an inline Map over 100 items whose processor is a Pass state with
  ``Parameters`` that reads ``$$.Map.Item``-free data (101 states entered).

reflow runs each through ``reflow.flows.run_async`` (the Express, in-memory
executor, history included) with the definition parsed once. LocalStack runs
in bench/.venv-peers through bench/_flows_peer.py: each definition parsed
once by its ``AmazonStateLanguageParser``, each execution evaluated in a fresh
``Environment`` as its ExecutionWorker does, with ``jsonpath_ng.parse``
memoised (as shipped it re-parses every path; BENCHMARKS.md asks for the
cached figure so the bar is honest). Before timing, both sides' outputs are
compared on every definition; the script fails if they differ. Rounds
alternate A B A B after a warm-up; the figure is states entered per second.

Durable rows run the same definitions as Standard executions through
``reflow.flows.service.FlowService`` on SQLite (a file in a temp dir) and on
Redis (the configured server, or a ``redis-server`` started for the run, as
bench/backends.py does): every transition is saved with a compare-and-set
write, history included; Pass, Choice, Succeed and Fail transitions are
saved write-behind (computed while the previous write commits, merged into
the next one, flushed before any Task, Wait or end; docs/flows.md). One
execution's transitions are sequential, so each round runs many executions
at once (up to 64), as a server would; their outputs are checked against the
peer's first. Map iterations and Parallel branches that hold only Pass
states run in memory inside one durable transition (children with Tasks get
records of their own), so the Map row mostly measures the in-memory engine
plus the saves around it. The peer column of a durable row is
LocalStack's in-memory figure again (the issue's goal: durable on SQLite at
least equal to it).

    python bench/flows.py            # full run
    python bench/flows.py --smoke    # CI: tiny sizes, one round
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import Comparison, alternate, machine_is_quiet, parse_args, rate, report  # noqa: E402
from _peers import PeerProcess  # noqa: E402

from reflow.backends import Backend, open_backend  # noqa: E402
from reflow.flows import StateMachine, parse, run_async  # noqa: E402
from reflow.flows.service import FlowService  # noqa: E402

PEER_PACKAGES = ("localstack-core[runtime]",)


def pass_chain(length: int) -> dict[str, Any]:
    """``length`` Pass states in a row."""
    states: dict[str, Any] = {}
    for index in range(length):
        state: dict[str, Any] = {"Type": "Pass", "Result": index, "ResultPath": "$.last"}
        if index + 1 < length:
            state["Next"] = f"S{index + 1}"
        else:
            state["End"] = True
        states[f"S{index}"] = state
    return {"StartAt": "S0", "States": states}


def choice_loop(limit: int) -> dict[str, Any]:
    """A counter taken from 0 to ``limit`` by a Choice and a Pass."""
    return {
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Result": 0, "ResultPath": "$.i", "Next": "Check"},
            "Check": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.i", "NumericLessThan": limit, "Next": "Inc"}],
                "Default": "Done",
            },
            "Inc": {
                "Type": "Pass",
                "Parameters": {"i.$": "States.MathAdd($.i, 1)"},
                "Next": "Check",
            },
            "Done": {"Type": "Succeed"},
        },
    }


def map_over_items() -> dict[str, Any]:
    """An inline Map whose processor reshapes each item with Parameters."""
    return {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {
                    "StartAt": "Shape",
                    "States": {
                        "Shape": {
                            "Type": "Pass",
                            "Parameters": {"id.$": "$.id", "seen": True},
                            "End": True,
                        }
                    },
                },
                "ResultPath": "$.shaped",
                "End": True,
            }
        },
    }


class Peer(PeerProcess):
    """LocalStack's ASL interpreter in bench/.venv-peers, behind bench/_flows_peer.py."""

    def __init__(self) -> None:
        super().__init__(HERE / "_flows_peer.py", PEER_PACKAGES)


def ours_round(machine: StateMachine, value: Any, count: int, transitions: int) -> float:
    """States entered per second over ``count`` executions."""

    async def executions() -> None:
        for _ in range(count):
            execution = await run_async(machine, value)
            assert execution.status == "SUCCEEDED", execution.error

    started = time.perf_counter()
    asyncio.run(executions())
    return rate(transitions * count, time.perf_counter() - started)


class Durable:
    """Standard executions of the bench's machines on one backend, on one event loop."""

    def __init__(self, url: str, machines: dict[str, StateMachine]) -> None:
        self.loop = asyncio.new_event_loop()
        self.backend: Backend = self.loop.run_until_complete(open_backend(url))
        self.service = FlowService(self.backend, machines)

    def run(self, name: str, value: Any, count: int) -> tuple[float, Any]:
        """Run ``count`` executions of ``name`` (64 at a time); seconds taken, one output."""

        async def executions() -> tuple[float, Any]:
            names = [f"{name.replace(' ', '-')}-{uuid.uuid4().hex}" for _ in range(count)]
            gate = asyncio.Semaphore(64)

            async def one(execution: str) -> None:
                async with gate:
                    await self.service.start_execution(name, value, name=execution)
                    await self.service.run_execution(execution)

            started = time.perf_counter()
            await asyncio.gather(*(one(execution) for execution in names))
            seconds = time.perf_counter() - started
            described = await self.service.describe(names[0])
            assert described["status"] == "SUCCEEDED", described
            return seconds, described["output"]

        return self.loop.run_until_complete(executions())

    def close(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        self.loop.close()


@contextlib.contextmanager
def durable_sides(machines: dict[str, StateMachine]) -> Iterator[dict[str, Durable]]:
    """The SQLite and Redis sides (Redis under a unique key prefix)."""
    from backends import redis_server  # the shared Redis finder/starter of bench/backends.py

    sides: dict[str, Durable] = {}
    with tempfile.TemporaryDirectory() as folder, redis_server() as redis_url:
        separator = "&" if "?" in redis_url else "?"
        prefix = f"bench-flows-{uuid.uuid4().hex[:8]}:"
        try:
            sides["SQLite"] = Durable(f"sqlite:///{folder}/flows.db", machines)
            sides["Redis"] = Durable(f"{redis_url}{separator}prefix={prefix}", machines)
            yield sides
        finally:
            for side in sides.values():
                side.close()


def main() -> int:
    args = parse_args(__doc__ or "flows benchmark")
    smoke = args.smoke
    items = [{"id": index, "name": f"item-{index}"} for index in range(5 if smoke else 100)]
    cases: dict[str, tuple[dict[str, Any], Any, int]] = {
        "pass chain": (pass_chain(10 if smoke else 100), {"article": 7}, 2 if smoke else 60),
        "choice loop": (choice_loop(20 if smoke else 1000), {}, 2 if smoke else 3),
        "map": (map_over_items(), {"items": items}, 2 if smoke else 30),
    }
    peer_counts = {"pass chain": 2 if smoke else 10, "choice loop": 1, "map": 2 if smoke else 5}
    machines = {name: parse(definition) for name, (definition, _, _) in cases.items()}
    transitions: dict[str, int] = {}
    durable_counts = {
        "pass chain": 4 if smoke else 128,
        "choice loop": 2 if smoke else 16,
        "map": 4 if smoke else 128,
    }
    peer = Peer()
    comparisons: list[Comparison] = []
    try:
        with durable_sides(machines) as durable:
            peer.ask(
                {
                    "op": "definitions",
                    "definitions": {name: json.dumps(d) for name, (d, _, _) in cases.items()},
                }
            )
            for name, (_, value, _) in cases.items():
                ours = asyncio.run(run_async(machines[name], value))
                theirs = peer.ask({"op": "run", "name": name, "input": value, "count": 1})
                if (ours.status, ours.output) != (theirs["status"], theirs["output"]):
                    print(f"{name}: outputs differ\n ours {ours.output}\n peer {theirs['output']}")
                    return 1
                for engine, side in durable.items():
                    _, output = side.run(name, value, 1)
                    if output != theirs["output"]:
                        print(f"{name}: durable {engine} output differs\n ours {output}")
                        return 1
                transitions[name] = sum(
                    1 for event in ours.history if event.type.endswith("StateEntered")
                )
            if not machine_is_quiet():
                print("note: the machine is busy (other jobs running); figures will be noisy")
            for name, (_, value, count) in cases.items():
                states = transitions[name]

                def peer_round(name: str = name, value: Any = value, states: int = states) -> float:
                    answer = peer.ask(
                        {"op": "run", "name": name, "input": value, "count": peer_counts[name]}
                    )
                    return rate(states * peer_counts[name], answer["seconds"])

                def our_round(
                    machine: StateMachine = machines[name],
                    value: Any = value,
                    count: int = count,
                    states: int = states,
                ) -> float:
                    return ours_round(machine, value, count, states)

                comparisons.append(
                    alternate(
                        args.rounds,
                        our_round,
                        peer_round,
                        Comparison(f"{name} ({states} states)", "states/s"),
                        warmup=not smoke,
                    )
                )
                for engine, side in durable.items():
                    runs = durable_counts[name]

                    def durable_round(
                        side: Durable = side, name: str = name, value: Any = value,
                        runs: int = runs, states: int = states,
                    ) -> float:  # fmt: skip
                        seconds, _ = side.run(name, value, runs)
                        return rate(states * runs, seconds)

                    comparisons.append(
                        alternate(
                            args.rounds,
                            durable_round,
                            peer_round,
                            Comparison(f"{name}, durable {engine}", "states/s"),
                            warmup=not smoke,
                        )
                    )
    finally:
        peer.close()
    report(
        "flows",
        comparisons,
        "LocalStack ASL interpreter (jsonpath_ng.parse memoised)",
        outputs_identical=True,
        transitions=transitions,
        mode="express in memory; durable standard on SQLite and Redis",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
