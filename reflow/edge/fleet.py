"""The fleet of edges: who is live, and purges every live edge acknowledges.

**Membership.** Each running :class:`~reflow.edge.service.EdgeService` keeps
one KV key, ``reflow.edge.members/<edge id>``, holding an
:class:`EdgeMember` (id, app, host, pid, ports, start time) with a TTL
(:data:`MEMBER_TTL`, 15 s) that it renews every :data:`MEMBER_REFRESH` (1 s)
on its clock, and deletes when it stops. An edge that dies without stopping
drops out when its key expires. :func:`live_edges` lists the keys still alive.
Each write stamps the member with its time and its refresh period: a member
not renewed for :data:`STALE_AFTER` periods (3 s) is *stale* — listed until
its key expires, but presumed dead by purges.
A member also says whether its purge subscription is open (``listening``):
while it is lost, the edge keeps renewing its key with ``listening`` false
(:meth:`Membership.renew_soon` rewrites it at once when it changes).

**Acknowledged purges.** :class:`FanOut` publishes a plan on the purge
channel with an id and its own reply channel (``reflow.edge.purge.reply.
<sender>``), after reading which edges are live. Every edge that applies the
plan answers there with its id and count. ``publish`` returns when every
edge live at publication has answered, or after ``timeout`` seconds on the
clock, with the edges that had not answered in ``missing``. A live edge that
is not listening cannot hear the purge: it is not waited for and is named in
``missing`` at once (when its subscription is back it marks its whole store
stale). A stale member is treated the same way: not waited for, named in
``missing`` at once, so an edge that died without leaving delays purges only
in the first seconds after its death rather than for its whole TTL. A live
edge renews every period, however slow it is to answer, and is waited for up
to the timeout. With no other listening edge it publishes and returns at once. The
reply subscription is opened on the first purge that waits and kept until
:meth:`FanOut.close` (opened again by the next purge if it was lost).

:class:`PurgePublisher` is ``context.cache`` for a process that runs
functions but no edge: it purges no store of its own, only publishes and
collects the fleet's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from reflow.backends.protocols import KV, PubSub, Subscription
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.edge.purge import PURGE_CHANNEL, REPLY_PREFIX, PurgePlan, PurgeResult, envelope
from reflow.errors import EdgeError

if TYPE_CHECKING:
    from reflow.admin import AdminRequest, AdminResponse, AdminServer

__all__ = [
    "DEFAULT_PURGE_TIMEOUT",
    "MEMBERS_PREFIX",
    "MEMBER_REFRESH",
    "MEMBER_TTL",
    "STALE_AFTER",
    "EdgeMember",
    "FanOut",
    "Membership",
    "PurgePublisher",
    "live_edges",
    "members_json",
    "mount_routes",
]

MEMBERS_PREFIX = "reflow.edge.members/"
MEMBER_TTL = 15.0
MEMBER_REFRESH = 1.0
# Refresh periods without a renewal after which a member is presumed dead: one
# missed write (a backend hiccup) is not enough, and a dead edge is found in 3 s.
STALE_AFTER = 3
DEFAULT_PURGE_TIMEOUT = 1.0

_log = logging.getLogger("reflow.edge")


@dataclass(frozen=True)
class EdgeMember:
    """One running edge as the fleet sees it."""

    id: str
    app: str = ""
    host: str = ""
    port: int = 0
    admin_port: int | None = None
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = 0.0
    # Whether its purge subscription is open; an edge whose subscription is lost
    # stays a member (it still serves) but cannot answer purges.
    listening: bool = True
    # When the member last renewed its key (its clock) and how often it does so;
    # 0 for a member written without them (an older edge), never taken as stale.
    renewed_at: float = 0.0
    refresh: float = 0.0

    def stale(self, now: float) -> bool:
        """Whether it missed :data:`STALE_AFTER` renewals by ``now``: presumed dead."""
        return self.refresh > 0 and now - self.renewed_at > STALE_AFTER * self.refresh

    def to_json(self) -> bytes:
        """The member as JSON bytes (its KV value)."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> EdgeMember:
        """A member from :meth:`to_json`'s output; EdgeError when malformed."""
        try:
            raw = json.loads(data)
            listening = raw.get("listening", True)  # absent: an edge from before the flag
            if not isinstance(listening, bool):
                raise TypeError(f"'listening' is {listening!r}, not a boolean")
            member = cls(
                id=str(raw["id"]),
                app=str(raw.get("app", "")),
                host=str(raw.get("host", "")),
                port=int(raw.get("port", 0)),
                admin_port=None if raw.get("admin_port") is None else int(raw["admin_port"]),
                hostname=str(raw.get("hostname", "")),
                pid=int(raw.get("pid", 0)),
                started_at=float(raw.get("started_at", 0.0)),
                listening=listening,
                renewed_at=float(raw.get("renewed_at", 0.0)),
                refresh=float(raw.get("refresh", 0.0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EdgeError(f"malformed edge member: {exc!r}") from None
        if not member.id:
            raise EdgeError("malformed edge member: empty id")
        return member


async def live_edges(kv: KV) -> list[EdgeMember]:
    """The edges whose membership key has not expired, in id order."""
    members = []
    for item in await kv.scan(MEMBERS_PREFIX):
        try:
            members.append(EdgeMember.from_json(item.value))
        except EdgeError as exc:
            _log.warning("skipped edge membership key %s: %s", item.key, exc)
    return members


class Membership:
    """Keeps one edge's membership key alive on the clock; deletes it on stop."""

    def __init__(
        self,
        kv: KV,
        member: EdgeMember | Callable[[], EdgeMember],
        *,
        clock: Clock = SYSTEM_CLOCK,
        ttl: float = MEMBER_TTL,
        refresh: float = MEMBER_REFRESH,
    ) -> None:
        if not 0 < refresh < ttl:
            raise ValueError("the refresh period must be positive and shorter than the TTL")
        self.kv = kv
        # A callable is asked again at every renewal, so late facts (the admin
        # port, bound after the edge) reach the fleet.
        self._describe = member if callable(member) else (lambda: member)
        self.id = self._describe().id
        self.clock = clock
        self.ttl = ttl
        self.refresh = refresh
        self.key = MEMBERS_PREFIX + self.id
        self.renewals = 0
        self._task: asyncio.Task[None] | None = None
        self._soon: set[asyncio.Task[None]] = set()
        # One write at a time, each describing the member when it is made: a renewal
        # begun before a change cannot land after the write that announced it.
        self._writing = asyncio.Lock()

    async def _put(self) -> None:
        async with self._writing:
            member = replace(self._describe(), renewed_at=self.clock.time(), refresh=self.refresh)
            await self.kv.put(self.key, member.to_json(), ttl=self.ttl)

    async def start(self) -> None:
        """Register now (errors propagate), then renew in the background."""
        await self._put()
        self._task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await self.clock.sleep(self.refresh)
            await self._renew_once()

    async def _renew_once(self) -> None:
        try:
            await self._put()
            self.renewals += 1
        except Exception as exc:
            # A backend hiccup: try again next period; the TTL leaves two more.
            _log.warning("edge %s could not renew its membership: %r", self.id, exc)

    def renew_soon(self) -> None:
        """Rewrite the member now, in the background (its description changed).

        A no-op before :meth:`start` and after :meth:`stop`; a failure is
        logged, and the next periodic renewal writes it again.
        """
        if self._task is None:
            return
        task = asyncio.get_running_loop().create_task(self._renew_once())
        self._soon.add(task)
        task.add_done_callback(self._soon.discard)

    async def stop(self) -> None:
        """Stop renewing and leave the fleet."""
        task, self._task = self._task, None
        for pending in [*([task] if task is not None else []), *self._soon]:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        try:
            await self.kv.delete(self.key)
        except Exception as exc:
            _log.warning("edge %s could not leave the fleet: %r", self.id, exc)


@dataclass
class _Waiter:
    expected: frozenset[str]
    answers: dict[str, int] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class FanOut:
    """Publishes purges on the channel and collects every live edge's answer."""

    def __init__(
        self,
        pubsub: PubSub,
        kv: KV,
        *,
        sender: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        timeout: float = DEFAULT_PURGE_TIMEOUT,
        channel: str = PURGE_CHANNEL,
    ) -> None:
        if timeout < 0:
            raise ValueError("the purge timeout cannot be negative")
        self.pubsub = pubsub
        self.kv = kv
        self.sender = sender or uuid.uuid4().hex
        self.clock = clock
        self.timeout = timeout
        self.channel = channel
        self.reply_channel = REPLY_PREFIX + self.sender
        self.late = 0  # answers that came after their purge returned
        self.malformed = 0  # replies skipped as unreadable
        self._waiters: dict[str, _Waiter] = {}
        self._subscription: Subscription | None = None
        self._listener: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()

    async def publish(self, plan: PurgePlan, local: Mapping[str, int]) -> PurgeResult:
        """Send ``plan`` to the fleet; the result adds the answers to ``local``'s counts.

        Live edges that are not listening, and stale ones (presumed dead), are
        missing from the start: waiting for an answer they cannot give would
        only delay the sender.
        """
        now = self.clock.time()
        others = [m for m in await live_edges(self.kv) if m.id not in local]
        expected = frozenset(m.id for m in others if m.listening and not m.stale(now))
        deaf = frozenset(m.id for m in others) - expected
        if not expected:
            await self.pubsub.publish(self.channel, envelope(plan, self.sender))
            return PurgeResult(local, sorted(deaf))
        await self._open()
        purge_id = uuid.uuid4().hex
        waiter = _Waiter(expected)
        self._waiters[purge_id] = waiter
        try:
            await self.pubsub.publish(
                self.channel, envelope(plan, self.sender, purge_id, self.reply_channel)
            )
            await self._wait(waiter)
        finally:
            del self._waiters[purge_id]
        missing = (expected | deaf) - set(waiter.answers)
        return PurgeResult({**waiter.answers, **local}, sorted(missing))

    async def _wait(self, waiter: _Waiter) -> None:
        answered = asyncio.ensure_future(waiter.done.wait())
        timer = asyncio.ensure_future(self.clock.sleep(self.timeout))
        try:
            await asyncio.wait((answered, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (answered, timer):
                task.cancel()
            await asyncio.gather(answered, timer, return_exceptions=True)

    async def _open(self) -> None:
        async with self._opening:
            # Opened again if its subscription ended (a backend connection lost).
            if self._listener is None or self._listener.done():
                if self._subscription is not None:
                    with contextlib.suppress(Exception):
                        await self._subscription.close()
                self._subscription = await self.pubsub.subscribe(self.reply_channel)
                self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        assert self._subscription is not None
        try:
            async for message in self._subscription:
                self._answer(message.data)
        except Exception as exc:
            # The connection failed: the next purge reopens the subscription.
            _log.warning("the purge answer subscription failed: %r", exc)

    def _answer(self, data: bytes) -> None:
        try:
            purge_id, edge, count = _parse_reply(data)
        except EdgeError as exc:
            self.malformed += 1
            _log.warning("skipped a purge answer: %s", exc)
            return
        waiter = self._waiters.get(purge_id)
        if waiter is None:
            self.late += 1  # its purge already returned, counting this edge missing
            return
        waiter.answers[edge] = count
        if waiter.expected <= waiter.answers.keys():
            waiter.done.set()

    async def close(self) -> None:
        """Stop listening for answers."""
        subscription, self._subscription = self._subscription, None
        listener, self._listener = self._listener, None
        if subscription is not None:
            await subscription.close()
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


def _parse_reply(data: bytes) -> tuple[str, str, int]:
    try:
        raw = json.loads(data)
        purge_id, edge, count = raw["id"], raw["edge"], raw["purged"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgeError(f"malformed purge answer: {exc!r}") from None
    if not isinstance(purge_id, str) or not isinstance(edge, str) or not edge:
        raise EdgeError("malformed purge answer: 'id' and 'edge' must be strings")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise EdgeError(f"malformed purge answer: count {count!r}")
    return purge_id, edge, count


class PurgePublisher:
    """``context.cache`` where no edge runs: purges go to the fleet, answers come back.

    A service (start/stop) for the platform; :meth:`purge` has the edge's
    signature, so the same :class:`~reflow.edge.client.CacheClient` (with its
    per-key and per-path authorisation) serves it.
    """

    def __init__(
        self,
        pubsub: PubSub,
        kv: KV,
        *,
        clock: Clock = SYSTEM_CLOCK,
        timeout: float = DEFAULT_PURGE_TIMEOUT,
        admin: AdminServer | None = None,
    ) -> None:
        self.fanout = FanOut(pubsub, kv, clock=clock, timeout=timeout)
        self.kv = kv
        self.admin = admin

    async def purge(
        self, keys: Sequence[str] = (), paths: Sequence[str] = (), *, soft: bool = False
    ) -> PurgeResult:
        """Purge ``keys`` and ``paths`` on every live edge; what they purged."""
        return await self.fanout.publish(PurgePlan.of(keys, paths, soft=soft), {})

    async def start(self) -> None:
        """Serve ``context.cache`` in this process (edges running here take precedence)."""
        from reflow.edge.client import activate

        activate(self.purge, edge=False)
        if self.admin is not None:
            mount_routes(self.admin, self.purge, self.kv)

    async def stop(self) -> None:
        """Stop serving ``context.cache`` and stop listening for answers."""
        from reflow.edge.client import deactivate

        deactivate(self.purge)
        await self.fanout.close()


def members_json(members: Sequence[EdgeMember]) -> list[dict[str, Any]]:
    """Members as the admin API and ``reflow cache edges --json`` show them."""
    return [asdict(member) for member in members]


PurgeFunction = Callable[..., Awaitable[PurgeResult]]


def mount_routes(admin: AdminServer, purge: PurgeFunction, kv: KV) -> None:
    """The admin API's fleet routes (once per admin server)::

    POST /api/cache/purge  {"keys", "paths", "soft"}
                           -> {"purged", "edges", "missing", "plan"}
    GET  /api/edge/members -> {"edges": [member, ...]}
    """
    from reflow.admin import AdminResponse

    async def purge_route(request: AdminRequest) -> AdminResponse:
        try:
            body = request.json() or {}
            plan = PurgePlan.of(
                body.get("keys", []), body.get("paths", []), soft=bool(body.get("soft"))
            )
        except (ValueError, AttributeError, EdgeError) as exc:
            return AdminResponse(400, {"error": str(exc)})
        result = await purge(plan.keys, plan.paths, soft=plan.soft)
        return AdminResponse(200, {**result.to_json(), "plan": plan.describe()})

    async def members_route(_: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"edges": members_json(await live_edges(kv))})

    if not any(r.template == "/api/cache/purge" for r in admin.routes):
        admin.route("POST", "/api/cache/purge", purge_route)
        admin.route("GET", "/api/edge/members", members_route)
