"""Purges: by surrogate key, exact path or path prefix, hard or soft, fanned out by PubSub.

A purge is first a :class:`PurgePlan`, a frozen value you can print or send
before it runs (``reflow cache purge --dry-run`` shows it). :class:`Purger`
applies a plan to the local store at once — so when ``purge()`` returns,
this edge serves no purged body — and publishes it on the backend's
``PubSub`` channel, where every other edge's purger applies it too.

Hard purges remove entries; soft purges mark them stale, so the next request
is answered from the old copy while one background refresh runs (Fastly's
soft purge). Each purge returns how many objects it purged on this edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from reflow.backends.protocols import PubSub, Subscription
from reflow.edge.store import Store
from reflow.errors import EdgeError

__all__ = ["PURGE_CHANNEL", "PurgePlan", "Purger"]

PURGE_CHANNEL = "reflow.edge.purge"


@dataclass(frozen=True)
class PurgePlan:
    """What to purge: surrogate keys, paths (``/a`` exact, ``/blog/*`` prefix), hard or soft."""

    keys: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    soft: bool = False

    def __post_init__(self) -> None:
        for path in self.paths:
            if not path.startswith("/"):
                raise EdgeError(f"purge path {path!r} must start with '/'")
            if "*" in path[:-1]:
                raise EdgeError(f"purge path {path!r}: '*' is allowed only at the end")
        for key in self.keys:
            if not key or any(c.isspace() for c in key):
                raise EdgeError(f"surrogate key {key!r} must be one non-empty word")

    @classmethod
    def of(
        cls, keys: Sequence[str] = (), paths: Sequence[str] = (), *, soft: bool = False
    ) -> PurgePlan:
        """A plan from any sequences (a lone string counts as one item)."""
        return cls(
            tuple([keys] if isinstance(keys, str) else keys),
            tuple([paths] if isinstance(paths, str) else paths),
            soft,
        )

    def describe(self) -> str:
        """One line saying what this plan will do."""
        kind = "soft" if self.soft else "hard"
        parts = [f"keys {', '.join(self.keys)}"] if self.keys else []
        if self.paths:
            parts.append(f"paths {', '.join(self.paths)}")
        return f"{kind} purge of " + ("; ".join(parts) or "nothing")

    def to_json(self) -> bytes:
        """The plan as JSON bytes (what travels on the PubSub channel)."""
        return json.dumps({"keys": self.keys, "paths": self.paths, "soft": self.soft}).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> PurgePlan:
        """A plan from :meth:`to_json`'s output; EdgeError when malformed."""
        try:
            raw = json.loads(data)
            return cls(tuple(raw["keys"]), tuple(raw["paths"]), bool(raw["soft"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise EdgeError(f"malformed purge message: {exc}") from None

    def apply(self, store: Store) -> int:
        """Run the plan against one store; return the objects purged."""
        count = store.purge_keys(self.keys, soft=self.soft) if self.keys else 0
        for path in self.paths:
            if path.endswith("*"):
                count += store.purge_prefix(path[:-1], soft=self.soft)
            else:
                count += store.purge_path(path, soft=self.soft)
        return count


class Purger:
    """Applies plans locally and relays them to every other edge over PubSub."""

    def __init__(
        self, store: Store, pubsub: PubSub | None = None, *, channel: str = PURGE_CHANNEL
    ) -> None:
        self.store = store
        self.pubsub = pubsub
        self.channel = channel
        self.node = uuid.uuid4().hex
        self.applied = 0  # plans applied here, local and relayed
        self.relayed = 0  # of which came from other edges over PubSub
        self.purged = 0
        self._subscription: Subscription | None = None
        self._listener: asyncio.Task[None] | None = None

    async def purge(self, plan: PurgePlan) -> int:
        """Purge here now, then tell the other edges; the count is this edge's."""
        count = self._apply(plan)
        if self.pubsub is not None:
            envelope = json.dumps({"from": self.node, "plan": json.loads(plan.to_json())})
            await self.pubsub.publish(self.channel, envelope.encode())
        return count

    def _apply(self, plan: PurgePlan) -> int:
        count = plan.apply(self.store)
        self.applied += 1
        self.purged += count
        return count

    async def start(self) -> None:
        """Subscribe to the purge channel (no-op without PubSub)."""
        if self.pubsub is None or self._listener is not None:
            return
        self._subscription = await self.pubsub.subscribe(self.channel)
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        assert self._subscription is not None
        async for message in self._subscription:
            try:
                envelope = json.loads(message.data)
                if envelope.get("from") == self.node:
                    continue  # our own purge, applied before it was published
                plan = PurgePlan.from_json(json.dumps(envelope["plan"]))
            except (ValueError, KeyError, TypeError, AttributeError, EdgeError):
                continue  # a malformed message must not stop the listener
            self.relayed += 1
            self._apply(plan)

    async def stop(self) -> None:
        """Unsubscribe and stop listening."""
        if self._subscription is not None:
            await self._subscription.close()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        self._subscription = None
        self._listener = None
