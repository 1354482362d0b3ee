"""Adapter that drives LocalStack's EventBridge matcher for bench/patterns.py.

Runs under bench/.venv-peers' interpreter (never reflow's), and speaks JSON
lines on stdin/stdout so that the benchmark can alternate rounds between
reflow (in its own process) and this peer without restarting either:

* ``{"op": "rules", "rules": {name: pattern_text}}`` compiles every pattern
  with ``EventPatternCompiler().compile_event_pattern(text)``;
* ``{"op": "events", "events": [...]}`` stores the (already parsed) events;
* ``{"op": "run", "count": n}`` matches the first ``n`` events against every
  rule with ``EventRuleEngine().evaluate_pattern_on_event`` and answers the
  seconds taken;
* ``{"op": "matches", "count": n}`` answers the matched rule names per event,
  so the benchmark can check both sides agree.

This is how LocalStack itself evaluates rules on a bus: every rule against
every event.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from localstack.services.events.event_rule_engine import (  # type: ignore[import-not-found]
    EventPatternCompiler,
    EventRuleEngine,
)


def main() -> None:
    compiler = EventPatternCompiler()
    engine = EventRuleEngine()
    rules: list[tuple[str, Any]] = []
    events: list[dict[str, Any]] = []

    def match(event: dict[str, Any]) -> list[str]:
        return [
            name for name, compiled in rules if engine.evaluate_pattern_on_event(compiled, event)
        ]

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "rules":
            started = time.perf_counter()
            rules = [
                (name, compiler.compile_event_pattern(text))
                for name, text in request["rules"].items()
            ]
            answer: dict[str, Any] = {"seconds": time.perf_counter() - started}
        elif op == "events":
            events = request["events"]
            answer = {"count": len(events)}
        elif op == "run":
            batch = events[: request["count"]]
            started = time.perf_counter()
            for event in batch:
                match(event)
            answer = {"seconds": time.perf_counter() - started, "count": len(batch)}
        elif op == "matches":
            answer = {"matches": [match(event) for event in events[: request["count"]]]}
        else:
            answer = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
