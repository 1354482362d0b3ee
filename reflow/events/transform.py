"""What a rule's target receives: the event, a part of it, or a rendered template.

EventBridge lets a rule's target receive, instead of the whole event:

* **InputPath** — the part of the event a JSONPath selects (``$.detail``);
* **InputTransformer** — an ``InputPathsMap`` of variables, each a JSONPath
  into the event, and an ``InputTemplate`` with ``<variable>`` placeholders;
* **Input** — a constant JSON value.

This module is the pure core of that: no I/O, plain values in and out.

The path language is EventBridge's subset of JSONPath: ``$``, dot notation
with letters, digits, dashes, underscores and slashes, array indices
(``[0]``), quoted names (``['a b']``) and wildcards (``.*``, ``[*]``). A path
that selects nothing gives ``None``; a wildcard gives the list of what it
selected.

Template placeholders are replaced by how they sit in the template, as
EventBridge does: inside a JSON string (``"state: <state>"``) a string value
goes in as its characters (escaped for JSON) and any other value as its JSON
text; outside a string (``{"state": <state>}``) the value goes in as JSON,
so a string arrives quoted. A template that is a JSON object, array or string
yields that JSON value; any other template is plain text, into which strings
go as they are (``<instance> is in state <state>``) and returned as text. Predefined
variables: ``aws.events.rule-name``, ``aws.events.rule-arn``,
``aws.events.event.ingestion-time``, ``aws.events.event`` (the event without
its ``detail``) and ``aws.events.event.json`` (the whole event); they may not
be redefined.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reflow.errors import EventError

__all__ = [
    "InputTransformer",
    "InvalidTransformError",
    "RuleInput",
    "parse_path",
    "rule_input",
    "select",
]

_PREDEFINED_PREFIX = "aws.events."
_NAME = r"[A-Za-z0-9_\-/]+"
_STEP_RE = re.compile(
    rf"\.(?P<name>{_NAME})|\.(?P<star>\*)|\[(?P<index>\d+)\]|\[(?P<all>\*)\]"
    r"|\['(?P<quoted>[^']*)'\]"
)
_PLACEHOLDER_RE = re.compile(r"<([A-Za-z0-9_.\-]+)>")
_WILDCARD = object()
MAX_VARIABLES = 100


class InvalidTransformError(EventError):
    """A rule's InputPath or InputTransformer is malformed (``.field`` names it)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"input transformation, {field}: {problem}")


Step = str | int | object


def parse_path(path: str, *, field: str = "InputPath") -> tuple[Step, ...]:
    """Parse a JSONPath of EventBridge's subset into steps (names, indices, wildcards)."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise InvalidTransformError(field, f"{path!r} must be a string starting with '$'")
    steps: list[Step] = []
    position = 1
    while position < len(path):
        match = _STEP_RE.match(path, position)
        if match is None:
            raise InvalidTransformError(
                field, f"{path!r} is not supported JSONPath at character {position}"
            )
        if match["name"] is not None:
            steps.append(match["name"])
        elif match["quoted"] is not None:
            steps.append(match["quoted"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(_WILDCARD)
        position = match.end()
    return tuple(steps)


def select(document: Any, steps: tuple[Step, ...]) -> Any:
    """The value ``steps`` select in ``document`` (``None`` when nothing is there)."""
    values = [document]
    many = False
    for step in steps:
        found: list[Any] = []
        for value in values:
            if step is _WILDCARD:
                many = True
                if isinstance(value, Mapping):
                    found.extend(value.values())
                elif isinstance(value, list):
                    found.extend(value)
            elif isinstance(step, int):
                if isinstance(value, list) and step < len(value):
                    found.append(value[step])
            elif isinstance(value, Mapping) and step in value:
                found.append(value[step])
        values = found
    if many:
        return values
    return values[0] if values else None


@dataclass(frozen=True)
class InputTransformer:
    """EventBridge's InputTransformer: variables from JSONPaths, rendered into a template."""

    template: str
    paths: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or not self.template:
            raise InvalidTransformError("InputTemplate", "must be a non-empty string")
        if not isinstance(self.paths, Mapping):
            raise InvalidTransformError("InputPathsMap", "must be an object of name: JSONPath")
        if len(self.paths) > MAX_VARIABLES:
            raise InvalidTransformError(
                "InputPathsMap", f"has {len(self.paths)} variables; at most {MAX_VARIABLES}"
            )
        for name, path in self.paths.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
                raise InvalidTransformError(f"InputPathsMap.{name}", "is not a valid name")
            if name.startswith(_PREDEFINED_PREFIX):
                raise InvalidTransformError(
                    f"InputPathsMap.{name}", "names starting with 'aws.events.' are reserved"
                )
            parse_path(path, field=f"InputPathsMap.{name}")

    def render(self, event: Mapping[str, Any], *, rule: str = "", ingested: str = "") -> Any:
        """The target's input for ``event`` (its EventBridge view)."""
        variables: dict[str, Any] = {
            name: select(event, parse_path(path)) for name, path in self.paths.items()
        }
        variables["aws.events.rule-name"] = rule
        variables["aws.events.rule-arn"] = f"arn:reflow:events:local:000000000000:rule/{rule}"
        variables["aws.events.event.ingestion-time"] = ingested or event.get("time", "")
        variables["aws.events.event"] = {k: v for k, v in event.items() if k != "detail"}
        variables["aws.events.event.json"] = dict(event)
        json_mode = self.template.strip()[:1] in ("{", "[", '"')
        text = _substitute(self.template, variables, json_mode=json_mode)
        if json_mode:
            stripped = text.strip()
            try:
                return json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise InvalidTransformError(
                    "InputTemplate", f"renders to invalid JSON: {exc.msg} at column {exc.colno}"
                ) from None
        return text


def _substitute(template: str, variables: Mapping[str, Any], *, json_mode: bool) -> str:
    """Replace each known ``<name>``, by whether it sits inside a JSON string.

    A template that is not JSON is plain text: strings go in as they are.
    """
    out: list[str] = []
    in_string = False
    position = 0
    while position < len(template):
        char = template[position]
        if json_mode and char == "\\" and in_string:
            out.append(template[position : position + 2])
            position += 2
            continue
        if json_mode and char == '"':
            in_string = not in_string
        elif char == "<":
            match = _PLACEHOLDER_RE.match(template, position)
            if match is not None and match[1] in variables:
                value = variables[match[1]]
                if not json_mode:
                    out.append(value if isinstance(value, str) else _render_value(value, False))
                else:
                    out.append(_render_value(value, in_string))
                position = match.end()
                continue
        out.append(char)
        position += 1
    return "".join(out)


def _render_value(value: Any, in_string: bool) -> str:
    if not in_string:
        return json.dumps(value, separators=(",", ":"))
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    # Inside a JSON string the characters must stay a valid string body.
    return json.dumps(text)[1:-1]


@dataclass(frozen=True)
class RuleInput:
    """How one rule turns an event into its target's input."""

    input_path: tuple[Step, ...] | None = None
    transformer: InputTransformer | None = None
    constant: Any = None
    has_constant: bool = False

    def apply(self, event: Mapping[str, Any], *, rule: str = "", ingested: str = "") -> Any:
        """The input the target receives for ``event`` (its EventBridge view)."""
        if self.has_constant:
            return self.constant
        if self.transformer is not None:
            base = event if self.input_path is None else select(event, self.input_path)
            return self.transformer.render(
                base if isinstance(base, Mapping) else {}, rule=rule, ingested=ingested
            )
        if self.input_path is not None:
            return select(event, self.input_path)
        return dict(event)


def rule_input(input_path: str | None, input_template: Any) -> RuleInput:
    """Build a :class:`RuleInput` from ``@app.on``'s ``input_path`` and ``input_template``.

    ``input_template`` is EventBridge's InputTransformer object
    (``{"InputPathsMap": {...}, "InputTemplate": "..."}``), a template string
    using only the predefined variables, or any other JSON value, which is
    sent as a constant input (EventBridge's ``Input``).
    """
    steps = parse_path(input_path) if input_path is not None else None
    if input_template is None:
        return RuleInput(input_path=steps)
    if isinstance(input_template, Mapping) and "InputTemplate" in input_template:
        unknown = set(input_template) - {"InputTemplate", "InputPathsMap"}
        if unknown:
            raise InvalidTransformError(
                sorted(unknown)[0], "unknown key; expected InputPathsMap and InputTemplate"
            )
        transformer = InputTransformer(
            template=input_template["InputTemplate"],
            paths=dict(input_template.get("InputPathsMap") or {}),
        )
        return RuleInput(input_path=steps, transformer=transformer)
    if isinstance(input_template, str):
        return RuleInput(input_path=steps, transformer=InputTransformer(template=input_template))
    return RuleInput(constant=input_template, has_constant=True)
