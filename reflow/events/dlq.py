"""Each rule's dead-letter queue: events that ran out of attempts, kept until redriven.

A dead letter holds the original event, the last error, the number of
attempts and when it failed. They live in the ``KV`` primitive under
``events.dlq.<rule>.<failed-ms>-<event id>``, so a listing is in the order
they failed and one letter can be removed on its own. A redrive appends a
fresh delivery record (attempt 1, its age counted from the redrive) to the
rule's delivery stream and only then deletes the letter, so a crash in
between gives a duplicate delivery, never a lost event.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reflow.backends.protocols import KV, Log
from reflow.clock import Clock
from reflow.events.delivery import encode_record, rule_stream
from reflow.events.model import Event

__all__ = ["DeadLetter", "DeadLetters", "dlq_prefix"]


def dlq_prefix(rule: str | None = None) -> str:
    """The KV prefix of one rule's dead letters (or of all of them)."""
    return "events.dlq." if rule is None else f"events.dlq.{rule}."


@dataclass(frozen=True)
class DeadLetter:
    """An event a rule could not deliver."""

    key: str
    rule: str
    event: Event
    error: dict[str, str]
    attempts: int
    failed_at: float
    first: float
    replay: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (for the CLI and the admin API)."""
        return {
            "key": self.key,
            "rule": self.rule,
            "event": self.event.to_cloudevent(),
            "error": self.error,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
            "replay": self.replay,
        }


class DeadLetters:
    """Add, list and redrive dead letters over a ``KV`` and a ``Log``."""

    def __init__(self, kv: KV, log: Log, clock: Clock) -> None:
        self.kv = kv
        self.log = log
        self.clock = clock

    async def add(
        self,
        rule: str,
        event: Event,
        *,
        error: dict[str, str],
        attempts: int,
        first: float,
        replay: str | None = None,
    ) -> str:
        """Keep ``event`` as a dead letter of ``rule``; durable when this returns."""
        now = self.clock.time()
        key = f"{dlq_prefix(rule)}{int(now * 1000):015d}-{event.id}"
        letter = {
            "rule": rule,
            "event": event.to_cloudevent(),
            "error": error,
            "attempts": attempts,
            "failed_at": now,
            "first": first,
            "replay": replay,
        }
        await self.kv.put(key, json.dumps(letter, separators=(",", ":")).encode())
        return key

    async def list(self, rule: str | None = None, *, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters of ``rule`` (all rules when ``None``), oldest failure first per rule."""
        items = await self.kv.scan(dlq_prefix(rule), limit=limit)
        letters = []
        for item in items:
            data = json.loads(item.value)
            letters.append(
                DeadLetter(
                    key=item.key,
                    rule=data["rule"],
                    # Counted when it was put: not encoded again to count it.
                    event=Event.from_cloudevent(data["event"], check_size=False),
                    error=data["error"],
                    attempts=int(data["attempts"]),
                    failed_at=float(data["failed_at"]),
                    first=float(data["first"]),
                    replay=data.get("replay"),
                )
            )
        return letters

    async def redrive(
        self, rule: str | None = None, *, keys: Sequence[str] | None = None
    ) -> builtins.list[str]:
        """Send dead letters back to their rule's delivery stream; return the event ids.

        ``keys`` picks letters by key; otherwise every letter of ``rule``
        (of every rule when ``rule`` is ``None``) goes back.
        """
        letters = await self.list(rule)
        if keys is not None:
            wanted = set(keys)
            letters = [letter for letter in letters if letter.key in wanted]
        now = self.clock.time()
        redriven = []
        for letter in letters:
            record = encode_record(
                letter.event, letter.rule, attempt=1, first=now, replay=letter.replay
            )
            await self.log.append(rule_stream(letter.rule), record)
            await self.kv.delete(letter.key)
            redriven.append(letter.event.id)
        return redriven
