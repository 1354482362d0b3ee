"""``reflow events``, ``reflow rules`` and ``reflow dlq``: the bus from the command line.

* ``reflow events put EVENT`` puts one event (or a JSON array of them) on a
  bus and prints the ids once they are durable; ``reflow events tail`` shows
  the newest events of a bus (``--follow`` keeps watching);
  ``reflow events replay --from --to [--rule]`` delivers archived events
  again, marked with a ``replay-name``; ``reflow events retries [--rule]
  [--bus]`` lists the deliveries parked until their next attempt.
* ``reflow rules list`` shows the app's rules and schedules;
  ``reflow rules test PATTERN EVENT`` prints ``match`` or ``no match``
  (exit 0 / 1), or the pattern's validation error (exit 2).
* ``reflow dlq list [--rule]`` and ``reflow dlq redrive [--rule] [--key]``
  inspect and empty the rules' dead-letter queues (kept until redriven);
  ``reflow dlq list|redrive --function NAME`` does the same for a function's
  dead letters (kept 14 days, then dropped).

EVENT arguments are JSON text or ``@file.json``: an EventBridge event
(``detail-type``, ``detail``), a CloudEvent, or a PutEvents entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from reflow.backends import Backend, open_backend
from reflow.cli.output import console, fail, run_guarded
from reflow.config import Settings
from reflow.events.bus import EventBus, bus_stream, to_event
from reflow.events.patterns import Pattern
from reflow.loader import load_app

__all__ = ["dlq_app", "events_app", "rules_app"]

events_app = typer.Typer(help="The event bus: put, tail and replay events.", no_args_is_help=True)
rules_app = typer.Typer(help="Event rules: list them, test a pattern.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-letter queues: list and redrive.", no_args_is_help=True)

AppOption = Annotated[
    str, typer.Option("--app", help="app.py, a module, or module:attribute (default app.py).")
]
BackendOption = Annotated[
    str | None, typer.Option("--backend", help="Backend URL (overrides REFLOW_BACKEND).")
]
BusOption = Annotated[str, typer.Option("--bus", help="The bus (default: default).")]


def _json_argument(text: str, what: str) -> Any:
    """A JSON argument, or ``@file.json``."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"{what}: cannot read {text[1:]!r}: {exc.strerror}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc.msg} at column {exc.colno}")


async def _open(backend: str | None) -> Backend:
    settings = Settings.load(backend=backend)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return await open_backend(settings.backend, data_dir=settings.data_dir)


@contextlib.asynccontextmanager
async def _opened(backend: str | None) -> AsyncIterator[Backend]:
    """The configured backend (or ``backend``), closed when the block ends."""
    opened = await _open(backend)
    try:
        yield opened
    finally:
        await opened.close()


def _moment(text: str, option: str) -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {text!r} is not an ISO 8601 time (2026-12-04T15:00:00Z)")
    if moment.tzinfo is None:
        fail(f"{option} {text!r} needs a time zone (add Z for UTC)")
    return moment.timestamp()


# --- events -------------------------------------------------------------------


@events_app.command("put")
def events_put(
    event: Annotated[str, typer.Argument(help="The event as JSON (or a JSON array), or @file.")],
    bus: BusOption = "default",
    backend: BackendOption = None,
) -> None:
    """Put events on a bus; print their ids once they are durable."""
    document = _json_argument(event, "EVENT")
    entries = document if isinstance(document, list) else [document]

    async def put() -> list[str]:
        async with _opened(backend) as opened:
            return await EventBus(opened).put(entries, bus=bus)

    with run_guarded():
        ids = asyncio.run(put())
    for event_id in ids:
        console.print(event_id, soft_wrap=True)


@events_app.command("tail")
def events_tail(
    bus: BusOption = "default",
    count: Annotated[int, typer.Option("--count", "-n", help="How many to show.")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep watching.")] = False,
    backend: BackendOption = None,
) -> None:
    """Print the newest events of a bus as JSON lines (CloudEvents)."""

    async def tail() -> None:
        stream = bus_stream(bus)
        async with _opened(backend) as opened:
            entries = await opened.log.range(stream)
            last = "0-0"
            for entry in entries[-count:] if count > 0 else []:
                console.print_json(json.dumps(json.loads(entry.data)["event"]))
            if entries:
                last = entries[-1].id
            while follow:
                await asyncio.sleep(0.5)
                ms, _, seq = last.partition("-")
                newer = await opened.log.range(stream, start=f"{ms}-{int(seq) + 1}")
                for entry in newer:
                    console.print_json(json.dumps(json.loads(entry.data)["event"]))
                    last = entry.id

    with run_guarded():
        asyncio.run(tail())


@events_app.command("replay")
def events_replay(
    start: Annotated[str, typer.Option("--from", help="Start of the window (ISO 8601).")],
    end: Annotated[str, typer.Option("--to", help="End of the window (ISO 8601).")],
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The replay's name.")] = None,
    bus: BusOption = "default",
    app_target: AppOption = "app.py",
    backend: BackendOption = None,
) -> None:
    """Deliver the archived events of a time window again, marked as a replay."""
    from reflow.events.service import build_bus
    from reflow.functions.runtime import Runtime

    since, until = _moment(start, "--from"), _moment(end, "--to")
    if until < since:
        fail("--to is before --from")
    with run_guarded():
        loaded = load_app(app_target)
        if rule is not None and rule not in loaded.rules:
            fail(f"--rule: the app has no rule named {rule!r}")

        async def replay() -> tuple[str, int]:
            async with _opened(backend) as opened:
                # The runtime is never started: replay only queues deliveries,
                # which a running `reflow run` then makes.
                runtime = Runtime(loaded, backend=opened, serve=False)
                replaying = build_bus(loaded, opened, runtime)
                return await replaying.replay(bus, since, until, rule=rule, name=name)

        replay_name, queued = asyncio.run(replay())
    console.print(f"replay [bold]{replay_name}[/]: {queued} deliveries queued")


@events_app.command("retries")
def events_retries(
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule.")] = None,
    bus: Annotated[
        str | None, typer.Option("--bus", help="Only the rules on this bus (reads --app).")
    ] = None,
    app_target: AppOption = "app.py",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    backend: BackendOption = None,
) -> None:
    """Deliveries waiting out their back-off before the next attempt, soonest first."""
    from reflow.events.delivery import rule_stream
    from reflow.events.retries import parked

    streams: set[str] | None = None
    if bus is not None:
        # The parked record names its rule, not its bus: the app says which rules are on it.
        with run_guarded():
            loaded = load_app(app_target)
        names = {r.name for r in loaded.rules.values() if r.bus == bus}
        if bus == "default":
            names |= {f"schedule.{name}" for name in loaded.schedules}
        streams = {rule_stream(name) for name in names}
    if rule is not None:
        streams = {rule_stream(rule)} if streams is None else streams & {rule_stream(rule)}

    async def listing() -> list[dict[str, Any]]:
        async with _opened(backend) as opened:
            return [retry.to_json() for retry in await parked(opened.kv, streams=streams)]

    with run_guarded():
        retries = asyncio.run(listing())
    if as_json:
        for retry in retries:
            console.print(json.dumps(retry), soft_wrap=True, markup=False)
        return
    table = Table(box=box.SIMPLE)
    for column in ("due", "rule", "event id", "attempt", "last error"):
        table.add_column(column, overflow="fold")
    for retry in retries:
        error = retry["error"]
        table.add_row(
            retry["due"],
            retry["rule"] or retry["stream"],
            retry["event_id"] or "",
            str(retry["attempt"] or ""),
            f"{error.get('type', '')}: {error.get('message', '')}" if error else "",
        )
    console.print(table)
    console.print(f"{len(retries)} parked retr{'ies' if len(retries) != 1 else 'y'}")


# --- rules --------------------------------------------------------------------


def _target_text(rule: Any) -> str:
    """A rule's target; for a webhook with its timeout and headers (sources, never values)."""
    target = str(rule.target or rule.function)
    if not target.startswith(("http://", "https://")):
        return target
    shown = []
    for name, value in rule.headers.items():
        source, sep, _ = value.partition(":")
        shown.append(f"{name}={value}" if sep and source in ("env", "secret") else name)
    extra = f"timeout {rule.timeout:g} s"
    if shown:
        extra += "; headers " + ", ".join(shown)
    return f"{target} ({extra})"


@rules_app.command("list")
def rules_list(app_target: AppOption = "app.py") -> None:
    """The app's rules (pattern, bus, target, retry policy) and schedules."""
    with run_guarded():
        loaded = load_app(app_target)
    table = Table(box=box.SIMPLE)
    for column in ("rule", "bus", "pattern", "target", "attempts", "max age"):
        table.add_column(column, overflow="fold")
    for rule in sorted(loaded.rules.values(), key=lambda r: r.name):
        table.add_row(
            rule.name,
            rule.bus,
            json.dumps(rule.pattern, separators=(",", ":")),
            _target_text(rule),
            str(rule.max_attempts),
            f"{rule.max_event_age:g}",
        )
    for schedule in sorted(loaded.schedules.values(), key=lambda s: s.name):
        table.add_row(
            f"schedule.{schedule.name}", "default", schedule.expression, schedule.function, "", ""
        )
    console.print(table)


@rules_app.command("test")
def rules_test(
    pattern: Annotated[str, typer.Argument(help="The EventBridge pattern as JSON, or @file.")],
    event: Annotated[str, typer.Argument(help="The event as JSON, or @file.")],
) -> None:
    """Print ``match`` (exit 0), ``no match`` (exit 1) or the pattern's error (exit 2)."""
    pattern_document = _json_argument(pattern, "PATTERN")
    event_document = _json_argument(event, "EVENT")
    with run_guarded():
        compiled = Pattern(pattern_document)
        if isinstance(event_document, dict) and (
            "specversion" in event_document or "DetailType" in event_document
        ):
            event_document = to_event(event_document).to_eventbridge()
        matched = compiled.matches(event_document)
    console.print("match" if matched else "no match")
    if not matched:
        raise typer.Exit(1)


# --- dead-letter queues -----------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule.")] = None,
    function: Annotated[
        str | None,
        typer.Option("--function", help="A function's dead letters instead of the rules'."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    backend: BackendOption = None,
) -> None:
    """Dead letters: the event, the last error and the number of attempts."""
    if function is not None:
        if rule is not None:
            fail("--rule and --function exclude each other")
        _function_letters(function, as_json, backend)
        return

    async def listing() -> list[dict[str, Any]]:
        async with _opened(backend) as opened:
            letters = await EventBus(opened).dead_letters.list(rule)
            return [letter.to_json() for letter in letters]

    with run_guarded():
        letters = asyncio.run(listing())
    if as_json:
        for letter in letters:
            console.print(json.dumps(letter), soft_wrap=True, markup=False)
        return
    table = Table(box=box.SIMPLE)
    for column in ("key", "rule", "event id", "attempts", "error"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        error = f"{letter['error']['type']}: {letter['error']['message']}"
        table.add_row(
            letter["key"], letter["rule"], letter["event"]["id"], str(letter["attempts"]), error
        )
    console.print(table)
    console.print(
        f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''} "
        "(a rule's letters are kept until redriven)"
    )


def _function_letters(function: str, as_json: bool, backend: str | None) -> None:
    """``reflow dlq list --function NAME``: the letters of ``functions.NAME.dlq``."""
    from reflow.functions.invocations import DLQ_RETENTION, dead_letters

    async def listing() -> list[dict[str, Any]]:
        async with _opened(backend) as opened:
            return await dead_letters(opened.log, function, kv=opened.kv)

    with run_guarded():
        letters = asyncio.run(listing())
    if as_json:
        for letter in letters:
            console.print(json.dumps(letter), soft_wrap=True, markup=False)
        return
    table = Table(box=box.SIMPLE)
    for column in ("key", "request id", "failed", "attempts", "condition", "error"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        error = letter.get("error", {})
        failed = datetime.fromtimestamp(float(letter.get("failed", 0.0)), UTC)
        table.add_row(
            letter["key"],
            str(letter.get("requestId", "")),
            failed.isoformat(timespec="seconds").replace("+00:00", "Z"),
            str(letter.get("attempts", "")),
            str(letter.get("condition", "")),
            f"{error.get('errorType', '')}: {error.get('errorMessage', '')}",
        )
    console.print(table)
    days = DLQ_RETENTION / 86400
    console.print(
        f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''} of function "
        f"{function}; letters are kept {days:g} days (the runtime's dlq_retention), "
        "then dropped"
    )


@dlq_app.command("redrive")
def dlq_redrive(
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule.")] = None,
    key: Annotated[list[str] | None, typer.Option("--key", help="Only these letters.")] = None,
    function: Annotated[
        str | None,
        typer.Option("--function", help="A function's dead letters instead of the rules'."),
    ] = None,
    backend: BackendOption = None,
) -> None:
    """Send dead letters back to their rule (or function) (a running server delivers them)."""
    if function is not None and rule is not None:
        fail("--rule and --function exclude each other")

    async def redrive() -> list[str]:
        async with _opened(backend) as opened:
            if function is not None:
                from reflow.functions.invocations import redrive_dead_letters

                return await redrive_dead_letters(
                    opened.log, opened.kv, function, opened.clock, keys=key
                )
            return await EventBus(opened).dead_letters.redrive(rule, keys=key)

    with run_guarded():
        ids = asyncio.run(redrive())
    what = "invocation" if function is not None else "event"
    console.print(f"redrove {len(ids)} {what}{'s' if len(ids) != 1 else ''}")
