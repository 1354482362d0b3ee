"""Purges: by surrogate key, exact path or path prefix, hard or soft, fanned out by PubSub.

A purge is first a :class:`PurgePlan`, a frozen value you can print or send
before it runs (``reflow cache purge --dry-run`` shows it). :class:`Purger`
applies a plan to the local store at once — so when ``purge()`` returns,
this edge serves no purged body — and publishes it on the backend's
``PubSub`` channel, where every other edge's purger applies it too.

Hard purges remove entries; soft purges mark them stale, so the next request
is answered from the old copy while one background refresh runs (Fastly's
soft purge). Each purge returns a :class:`PurgeResult`: an ``int``, the
objects purged on every edge that answered, carrying the per-edge counts
and the live edges that did not answer in time (``missing``).

On the channel a purge travels as ``{"id", "from", "plan", "reply"}``; an
edge that applies one with a ``reply`` channel answers there with
``{"id", "edge", "purged"}`` (see :mod:`reflow.edge.fleet`, which knows
which edges are live and collects the answers). A message without ``id``
and ``reply`` (an older edge's) is applied and not answered.

PubSub is fire-and-forget, so a purge published while this edge's
subscription is down never reaches it. The purger therefore keeps its
subscription open for as long as it runs: when the subscription ends or
fails it reopens it, backing off on the clock (:data:`RETRY_FIRST` doubling
to :data:`RETRY_MAX`, with jitter), and once it is back it soft-purges the
whole store — every object stored before it was restored may have missed a
purge — before it reports itself listening again (``on_listening``; the
service's fleet membership says so, see :mod:`reflow.edge.fleet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from reflow.backends.protocols import PubSub, Subscription
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.edge.store import Store
from reflow.errors import EdgeError

if TYPE_CHECKING:
    from reflow.edge.fleet import FanOut
    from reflow.edge.metrics import Metrics

__all__ = [
    "PURGE_CHANNEL",
    "REPLY_PREFIX",
    "RETRY_FIRST",
    "RETRY_MAX",
    "PurgePlan",
    "PurgeResult",
    "Purger",
    "Received",
    "envelope",
    "parse_envelope",
]

PURGE_CHANNEL = "reflow.edge.purge"
# Answers go only to channels under this prefix: a forged message cannot make
# every edge publish wherever it likes.
REPLY_PREFIX = "reflow.edge.purge.reply."
# Back-off between attempts to reopen a lost purge subscription (seconds): each
# wait is drawn between half and all of the current delay, which doubles.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0

_log = logging.getLogger("reflow.edge")


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


class PurgeResult(int):
    """What a purge did across the fleet; as an ``int``, the objects purged in all.

    ``edges`` maps each edge that purged (this one included) to its count;
    ``missing`` names the edges that were live when the purge was published
    and did not answer in time — they may still serve the old body. A result
    is ``complete`` when nothing is missing. It stays an ``int`` so that code
    written when a purge returned this edge's count keeps working.
    """

    edges: Mapping[str, int]
    missing: tuple[str, ...]

    def __new__(
        cls, edges: Mapping[str, int] | None = None, missing: Sequence[str] = ()
    ) -> PurgeResult:
        counts = dict(edges or {})
        result = super().__new__(cls, sum(counts.values()))
        result.edges = MappingProxyType(counts)
        result.missing = tuple(sorted(missing))
        return result

    @property
    def purged(self) -> int:
        """Objects purged on every edge that answered."""
        return int(self)

    @property
    def complete(self) -> bool:
        """Whether every edge live at publication answered."""
        return not self.missing

    def to_json(self) -> dict[str, Any]:
        """``{"purged": n, "edges": {id: n}, "missing": [id]}`` (the admin API's shape)."""
        return {"purged": int(self), "edges": dict(self.edges), "missing": list(self.missing)}

    def __reduce__(self) -> tuple[type[PurgeResult], tuple[dict[str, int], tuple[str, ...]]]:
        # int's own reduction would rebuild it from the total alone, losing the edges.
        return PurgeResult, (dict(self.edges), self.missing)

    def __repr__(self) -> str:
        return f"PurgeResult(purged={int(self)}, edges={dict(self.edges)}, missing={self.missing})"


def envelope(
    plan: PurgePlan, sender: str, purge_id: str | None = None, reply: str | None = None
) -> bytes:
    """A plan as it travels on the purge channel (with ``reply``: answers wanted)."""
    message: dict[str, Any] = {"from": sender, "plan": json.loads(plan.to_json())}
    if purge_id is not None and reply is not None:
        message.update(id=purge_id, reply=reply)
    return json.dumps(message).encode()


@dataclass(frozen=True)
class Received:
    """A purge read off the channel: who sent it, the plan, and where to answer."""

    sender: str | None
    plan: PurgePlan
    purge_id: str | None
    reply: str | None


def parse_envelope(data: bytes) -> Received:
    """A channel message; EdgeError when it is not a purge this edge can apply."""
    try:
        raw = json.loads(data)
        plan = PurgePlan.from_json(json.dumps(raw["plan"]))
        sender, purge_id, reply = raw.get("from"), raw.get("id"), raw.get("reply")
    except (ValueError, KeyError, TypeError, AttributeError, EdgeError) as exc:
        raise EdgeError(f"malformed purge message: {exc}") from None
    if sender is not None and not isinstance(sender, str):
        raise EdgeError("malformed purge message: 'from' is not a string")
    if reply is not None or purge_id is not None:
        if not isinstance(purge_id, str) or not isinstance(reply, str):
            raise EdgeError("malformed purge message: 'id' and 'reply' must be strings")
        if not reply.startswith(REPLY_PREFIX):
            raise EdgeError(f"malformed purge message: reply channel {reply[:80]!r}")
    return Received(sender, plan, purge_id, reply)


class Purger:
    """Applies plans locally and relays them to every other edge over PubSub.

    With a ``fanout`` (:class:`reflow.edge.fleet.FanOut`) a purge also waits
    for the other live edges' answers; without one it publishes and returns
    this edge's count at once.

    The listener reopens a lost subscription (see the module's docstring).
    ``listening`` says whether it is subscribed now; ``on_listening`` is
    called with the new value whenever that changes (after the whole-store
    soft purge when it comes back); ``gaps`` and ``gap_marked`` count the
    restored subscriptions and the objects they marked stale, also in
    ``metrics`` when the service gives the edge's.
    """

    def __init__(
        self,
        store: Store,
        pubsub: PubSub | None = None,
        *,
        channel: str = PURGE_CHANNEL,
        node: str | None = None,
        fanout: FanOut | None = None,
        clock: Clock = SYSTEM_CLOCK,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
    ) -> None:
        if not 0 < retry_first <= retry_max:
            raise ValueError("the retry delays must be positive, the first no longer than the cap")
        self.store = store
        self.pubsub = pubsub
        self.channel = channel
        self.node = node or uuid.uuid4().hex
        self.fanout = fanout
        self.clock = clock
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.applied = 0  # plans applied here, local and relayed
        self.relayed = 0  # of which came from other edges over PubSub
        self.purged = 0
        self.malformed = 0  # channel messages skipped as unreadable
        self.listening = False  # subscribed to the channel right now
        self.gaps = 0  # subscriptions reopened after a loss
        self.gap_marked = 0  # objects those reopenings marked stale
        self.metrics: Metrics | None = None
        self.on_listening: Callable[[bool], None] | None = None
        self._random = random.Random()
        self._subscription: Subscription | None = None
        self._listener: asyncio.Task[None] | None = None

    async def purge(self, plan: PurgePlan) -> PurgeResult:
        """Purge here now, then tell the other edges (and, with a fan-out, hear back)."""
        count = self._apply(plan)
        if self.fanout is not None:
            return await self.fanout.publish(plan, {self.node: count})
        if self.pubsub is not None:
            await self.pubsub.publish(self.channel, envelope(plan, self.node))
        return PurgeResult({self.node: count})

    def _apply(self, plan: PurgePlan) -> int:
        count = plan.apply(self.store)
        self.applied += 1
        self.purged += count
        return count

    async def start(self) -> None:
        """Subscribe to the purge channel (no-op without PubSub); errors propagate."""
        if self.pubsub is None or self._listener is not None:
            return
        self._subscription = await self.pubsub.subscribe(self.channel)
        self.listening = True
        self._listener = asyncio.get_running_loop().create_task(
            self._run(), name=f"reflow-edge-purges-{self.node[:8]}"
        )

    async def _run(self) -> None:
        delay = self.retry_first
        while True:
            opened = self.clock.monotonic()
            cause = await self._listen()
            self._set_listening(False)
            await self._close_subscription()
            if self.clock.monotonic() - opened >= self.retry_max:
                delay = self.retry_first  # it held: a new outage, not the same one flapping
            _log.warning(
                "edge %s lost its purge subscription (%s); purges published until it is"
                " back are missed here; reopening it",
                self.node[:8],
                cause,
            )
            lost = self.clock.monotonic()
            attempts, delay = await self._reopen(delay)
            # Every object stored until now may have missed a purge published in the gap.
            marked = self.store.purge_all(soft=True)
            self.gaps += 1
            self.gap_marked += marked
            if self.metrics is not None:
                self.metrics.purge_feed_gaps += 1
                self.metrics.purge_gap_objects += marked
            _log.info(
                "edge %s reopened its purge subscription after %.2f s (%d attempt%s);"
                " marked %d stored object%s stale",
                self.node[:8],
                self.clock.monotonic() - lost,
                attempts,
                "" if attempts == 1 else "s",
                marked,
                "" if marked == 1 else "s",
            )
            self._set_listening(True)

    async def _listen(self) -> str:
        """Apply purges until the subscription ends; why it ended."""
        subscription = self._subscription
        assert subscription is not None
        messages = aiter(subscription)
        while True:
            try:
                message = await anext(messages)
            except StopAsyncIteration:
                error = getattr(subscription, "error", None)  # the Redis engine keeps it
                if isinstance(error, BaseException):
                    return f"the subscription ended: {type(error).__name__}: {error}"
                return "the subscription ended"
            except Exception as exc:  # the backend's connection failed
                return f"{type(exc).__name__}: {exc}"
            try:
                await self._receive(message.data)
            except Exception:  # a bug here must not stop purges from being heard
                _log.exception("edge %s failed to apply a purge message", self.node[:8])

    async def _reopen(self, delay: float) -> tuple[int, float]:
        """Subscribe again, backing off; the attempts it took and the next delay."""
        assert self.pubsub is not None
        attempts = 0
        while True:
            # Jitter: edges that lost the same server do not all come back at once.
            await self.clock.sleep(delay * (0.5 + 0.5 * self._random.random()))
            delay = min(delay * 2, self.retry_max)
            attempts += 1
            try:
                self._subscription = await self.pubsub.subscribe(self.channel)
            except Exception as exc:
                _log.debug("edge %s could not resubscribe: %r", self.node[:8], exc)
                continue
            return attempts, delay

    async def _receive(self, data: bytes) -> None:
        try:
            received = parse_envelope(data)
        except EdgeError as exc:
            # A malformed message must not stop the listener.
            self.malformed += 1
            _log.warning("edge %s skipped a purge message: %s", self.node[:8], exc)
            return
        if received.sender == self.node:
            return  # our own purge, applied before it was published
        self.relayed += 1
        count = self._apply(received.plan)
        if received.reply is not None and self.pubsub is not None:
            answer = {"id": received.purge_id, "edge": self.node, "purged": count}
            try:
                await self.pubsub.publish(received.reply, json.dumps(answer).encode())
            except Exception as exc:  # the backend failed; the purge itself is done
                _log.warning("edge %s could not answer purge: %r", self.node[:8], exc)

    def _set_listening(self, listening: bool) -> None:
        self.listening = listening
        if self.on_listening is not None:
            try:
                self.on_listening(listening)
            except Exception:
                _log.exception("edge %s: on_listening failed", self.node[:8])

    async def _close_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.close()
            except Exception as exc:  # already broken: nothing more to release
                _log.debug("edge %s: closing a lost subscription: %r", self.node[:8], exc)

    async def stop(self) -> None:
        """Stop listening (also while reopening) and unsubscribe."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # Cancelled first: closing the subscription under a running listener
            # would look like a lost subscription to reopen.
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await self._close_subscription()
        self.listening = False
