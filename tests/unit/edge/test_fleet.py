"""Fleet purges in memory: membership with TTLs, acknowledged purges, timeouts, bad messages."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.app import App, FunctionConfig
from reflow.backends import Backend, memory_backend
from reflow.edge.client import activate, deactivate
from reflow.edge.fleet import (
    MEMBERS_PREFIX,
    STALE_AFTER,
    EdgeMember,
    FanOut,
    Membership,
    PurgePublisher,
    live_edges,
)
from reflow.edge.purge import (
    PURGE_CHANNEL,
    REPLY_PREFIX,
    PurgePlan,
    Purger,
    PurgeResult,
    envelope,
    parse_envelope,
)
from reflow.edge.store import Store
from reflow.errors import EdgeError, HandlerError, PermissionDeniedError
from reflow.functions import Runtime
from reflow.functions.context import Context
from reflow.testing import FakeClock
from reflow.testing.harness import RecordingCache
from tests.unit.edge.test_store import entry


async def until(condition: Callable[[], bool], turns: int = 200) -> None:
    """Run the loop until ``condition`` holds (no real time passes)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@dataclass
class Node:
    """One edge: a store, its purger and its membership."""

    id: str
    store: Store
    purger: Purger
    membership: Membership


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def backend(clock: FakeClock) -> AsyncIterator[Backend]:
    opened = memory_backend(clock)
    try:
        yield opened
    finally:
        await opened.close()


async def start_node(backend: Backend, clock: FakeClock, name: str, timeout: float = 1.0) -> Node:
    store = Store()
    for index in range(3):
        store.put(entry(f"/news/{name}/{index}", tags=("news",)))
    store.put(entry("/sport", tags=("sport",)))
    fanout = FanOut(backend.pubsub, backend.kv, sender=name, clock=clock, timeout=timeout)
    purger = Purger(store, backend.pubsub, node=name, fanout=fanout)
    membership = Membership(backend.kv, EdgeMember(name, app="site"), clock=clock)
    await purger.start()
    await membership.start()
    return Node(name, store, purger, membership)


async def stop_node(node: Node) -> None:
    await node.membership.stop()
    await node.purger.stop()
    assert node.purger.fanout is not None
    await node.purger.fanout.close()


# --- PurgeResult and the wire format -------------------------------------------


def test_a_purge_result_is_the_total_and_names_edges_and_missing() -> None:
    result = PurgeResult({"a": 2, "b": 3}, ["z", "c"])
    assert result == 5 and int(result) + 1 == 6 and result.purged == 5
    assert dict(result.edges) == {"a": 2, "b": 3}
    assert result.missing == ("c", "z") and not result.complete
    assert result.to_json() == {"purged": 5, "edges": {"a": 2, "b": 3}, "missing": ["c", "z"]}
    assert json.dumps(result) == "5"  # where an int was expected, it is one
    assert PurgeResult().complete and PurgeResult() == 0
    for copied in (copy.deepcopy(result), pickle.loads(pickle.dumps(result))):
        assert isinstance(copied, PurgeResult) and copied.to_json() == result.to_json()


@given(
    keys=st.lists(st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True), max_size=4),
    paths=st.lists(st.from_regex(r"/[a-z/]{0,10}\*?", fullmatch=True), max_size=4),
    soft=st.booleans(),
    purge_id=st.text(min_size=1, max_size=20),
    sender=st.text(min_size=1, max_size=20),
)
def test_envelopes_round_trip(
    keys: list[str], paths: list[str], soft: bool, purge_id: str, sender: str
) -> None:
    plan = PurgePlan.of(keys, paths, soft=soft)
    received = parse_envelope(envelope(plan, sender, purge_id, REPLY_PREFIX + sender))
    assert (received.plan, received.sender, received.purge_id) == (plan, sender, purge_id)
    assert received.reply == REPLY_PREFIX + sender
    old = parse_envelope(envelope(plan, sender))  # no answer wanted: no id, no reply
    assert (old.plan, old.purge_id, old.reply) == (plan, None, None)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"from": "x"}',
        b'{"from": "x", "plan": {"keys": ["a b"], "paths": [], "soft": false}}',
        b'{"from": 3, "plan": {"keys": ["a"], "paths": [], "soft": false}}',
        b'{"plan": {"keys": ["a"], "paths": [], "soft": false}, "id": "1"}',
        b'{"plan": {"keys": ["a"], "paths": [], "soft": false}, "id": 1, "reply": "'
        + REPLY_PREFIX.encode()
        + b'x"}',
        b'{"plan": {"keys": ["a"], "paths": [], "soft": false}, "id": "1", "reply": "jobs"}',
    ],
)
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(EdgeError, match="malformed purge message"):
        parse_envelope(data)


# --- membership ------------------------------------------------------------------


async def test_membership_is_renewed_on_the_clock_and_left_on_stop(
    backend: Backend, clock: FakeClock
) -> None:
    membership = Membership(
        backend.kv, EdgeMember("e1", app="site", port=8080), clock=clock, ttl=15, refresh=5
    )
    await membership.start()
    try:
        for renewal in range(1, 7):  # 30 s: twice the TTL, kept alive by the renewals
            await until(lambda: clock.sleepers == 1)
            clock.advance(5)
            await until(lambda: membership.renewals == renewal)  # noqa: B023
        [member] = await live_edges(backend.kv)
        assert (member.id, member.app, member.port) == ("e1", "site", 8080)
    finally:
        await membership.stop()
    assert await live_edges(backend.kv) == []


async def test_an_edge_that_stops_renewing_drops_out_after_its_ttl(
    backend: Backend, clock: FakeClock
) -> None:
    membership = Membership(backend.kv, EdgeMember("dead"), clock=clock, ttl=15, refresh=5)
    await membership.start()
    assert membership._task is not None
    membership._task.cancel()  # as if SIGKILLed: no renewal, no orderly delete
    await asyncio.sleep(0)
    clock.advance(14)
    assert [m.id for m in await live_edges(backend.kv)] == ["dead"]
    clock.advance(1)
    assert await live_edges(backend.kv) == []


async def test_a_member_goes_stale_only_after_missing_three_renewals(
    backend: Backend, clock: FakeClock
) -> None:
    membership = Membership(backend.kv, EdgeMember("e"), clock=clock, ttl=15, refresh=1)
    await membership.start()
    assert membership._task is not None
    membership._task.cancel()  # stops renewing, as if SIGKILLed
    await asyncio.sleep(0)
    [member] = await live_edges(backend.kv)
    assert (member.renewed_at, member.refresh) == (clock.time(), 1)
    assert not member.stale(clock.time() + STALE_AFTER)  # a late renewal is not a death
    assert member.stale(clock.time() + STALE_AFTER + 0.001)
    assert EdgeMember.from_json(member.to_json()) == member


def test_a_member_written_without_renewal_stamps_is_never_stale() -> None:
    older = EdgeMember.from_json(b'{"id": "old"}')  # an edge from before the stamps
    assert not older.stale(1e12)


async def test_a_membership_reads_its_description_again_at_each_renewal(
    backend: Backend, clock: FakeClock
) -> None:
    ports = iter([None, None, 9001])  # the id, the registration, the first renewal
    membership = Membership(
        backend.kv, lambda: EdgeMember("e", admin_port=next(ports, 9001)), clock=clock
    )
    assert membership.id == "e"  # asked once for the id
    await membership.start()
    try:
        [member] = await live_edges(backend.kv)
        assert member.admin_port is None
        await until(lambda: clock.sleepers == 1)
        clock.advance(5)
        await until(lambda: membership.renewals == 1)
        [member] = await live_edges(backend.kv)
        assert member.admin_port == 9001
    finally:
        await membership.stop()


async def test_malformed_membership_keys_are_skipped(backend: Backend) -> None:
    await backend.kv.put(MEMBERS_PREFIX + "junk", b"{not json")
    await backend.kv.put(MEMBERS_PREFIX + "noid", b'{"id": ""}')
    await backend.kv.put(MEMBERS_PREFIX + "ok", EdgeMember("ok").to_json())
    assert [m.id for m in await live_edges(backend.kv)] == ["ok"]


def test_a_refresh_period_must_be_shorter_than_the_ttl(backend: Backend) -> None:
    with pytest.raises(ValueError):
        Membership(backend.kv, EdgeMember("e"), ttl=5, refresh=5)


# --- acknowledged purges -----------------------------------------------------------


async def test_a_purge_counts_every_live_edge(backend: Backend, clock: FakeClock) -> None:
    nodes = [await start_node(backend, clock, name) for name in ("a", "b", "c")]
    try:
        result = await nodes[0].purger.purge(PurgePlan.of(["news"]))
        assert result == 9 and result.complete
        assert dict(result.edges) == {"a": 3, "b": 3, "c": 3}
        for node in nodes:
            assert node.store.get("/news/b/0", []) is None
            assert node.store.get("/sport", []) is not None
        # The purging edge applied it once, before publishing; the others once each.
        assert [n.purger.purged for n in nodes] == [3, 3, 3]
    finally:
        for node in nodes:
            await stop_node(node)


async def test_a_silent_live_edge_is_missing_after_the_timeout(
    backend: Backend, clock: FakeClock
) -> None:
    nodes = [await start_node(backend, clock, name, timeout=1.0) for name in ("a", "b")]
    # A member that is registered but does not listen (hung, or its listener died).
    await backend.kv.put(MEMBERS_PREFIX + "ghost", EdgeMember("ghost").to_json(), ttl=15)
    try:
        sleepers = clock.sleepers
        task = asyncio.ensure_future(nodes[0].purger.purge(PurgePlan.of(paths=["/sport"])))
        await until(lambda: clock.sleepers > sleepers)  # waiting on the clock
        await until(lambda: nodes[1].purger.relayed == 1)
        assert not task.done()  # "b" answered, "ghost" has not
        clock.advance(0.999)
        await asyncio.sleep(0)
        assert not task.done()
        clock.advance(0.001)
        result = await task
        assert result == 2 and dict(result.edges) == {"a": 1, "b": 1}
        assert result.missing == ("ghost",)
    finally:
        for node in nodes:
            await stop_node(node)


async def test_with_no_other_live_edge_a_purge_returns_at_once(
    backend: Backend, clock: FakeClock
) -> None:
    node = await start_node(backend, clock, "only")
    try:
        result = await node.purger.purge(PurgePlan.of(["news"]))
        assert result == 3 and dict(result.edges) == {"only": 3} and result.complete
        assert node.purger.fanout is not None and node.purger.fanout._listener is None
    finally:
        await stop_node(node)


async def test_a_publisher_with_no_live_edges_returns_zero_without_waiting(
    backend: Backend, clock: FakeClock
) -> None:
    publisher = PurgePublisher(backend.pubsub, backend.kv, clock=clock)
    # An edge without membership (an older edge) still receives the purge.
    store = Store()
    store.put(entry("/a", tags=("k",)))
    unregistered = Purger(store, backend.pubsub)
    await unregistered.start()
    try:
        result = await publisher.purge(keys=["k"])
        assert result == 0 and result.complete and dict(result.edges) == {}
        assert clock.sleepers == 0 and publisher.fanout._listener is None
        await until(lambda: store.get("/a", []) is None)
    finally:
        await unregistered.stop()
        await publisher.stop()


async def test_a_publisher_collects_every_edge_and_purges_none_itself(
    backend: Backend, clock: FakeClock
) -> None:
    nodes = [await start_node(backend, clock, name) for name in ("a", "b")]
    publisher = PurgePublisher(backend.pubsub, backend.kv, clock=clock)
    try:
        result = await publisher.purge(keys=["news"], paths=["/sport"])
        assert result == 8 and dict(result.edges) == {"a": 4, "b": 4} and result.complete
        # The reply subscription stays open for the next purge.
        again = await publisher.purge(keys=["news"])
        assert again == 0 and dict(again.edges) == {"a": 0, "b": 0}
    finally:
        await publisher.stop()
        for node in nodes:
            await stop_node(node)


async def test_an_old_format_message_is_applied_and_not_answered(
    backend: Backend, clock: FakeClock
) -> None:
    node = await start_node(backend, clock, "a")
    try:
        old = json.dumps(
            {"from": "elsewhere", "plan": {"keys": ["news"], "paths": [], "soft": False}}
        )
        await backend.pubsub.publish(PURGE_CHANNEL, old.encode())
        await until(lambda: node.purger.relayed == 1)
        assert node.store.get("/news/a/0", []) is None and node.purger.purged == 3
    finally:
        await stop_node(node)


async def test_malformed_messages_are_skipped_and_the_listener_lives_on(
    backend: Backend, clock: FakeClock
) -> None:
    node = await start_node(backend, clock, "a")
    spy = await backend.pubsub.subscribe("jobs")
    try:
        bad = [
            b"\xff\xfe",
            b'{"plan": 7}',
            # A forged reply channel: applied nowhere, answered nowhere.
            b'{"id": "1", "reply": "jobs", "plan": {"keys": ["news"], "paths": [], "soft": false}}',
        ]
        for data in bad:
            await backend.pubsub.publish(PURGE_CHANNEL, data)
        await until(lambda: node.purger.malformed == 3)
        assert node.store.get("/news/a/0", []) is not None
        await backend.pubsub.publish(PURGE_CHANNEL, envelope(PurgePlan.of(["news"]), "x"))
        await until(lambda: node.purger.relayed == 1)
        assert node.store.get("/news/a/0", []) is None
        assert await spy.get(timeout=0) is None
    finally:
        await spy.close()
        await stop_node(node)


async def test_malformed_and_late_replies_are_skipped(backend: Backend, clock: FakeClock) -> None:
    await backend.kv.put(MEMBERS_PREFIX + "slow", EdgeMember("slow").to_json(), ttl=60)
    fanout = FanOut(backend.pubsub, backend.kv, sender="p", clock=clock, timeout=1)
    requests = await backend.pubsub.subscribe(PURGE_CHANNEL)
    try:
        task = asyncio.ensure_future(fanout.publish(PurgePlan.of(["k"]), {}))
        message = await requests.get(timeout=1)
        assert message is not None
        sent = json.loads(message.data)
        assert sent["reply"] == fanout.reply_channel and sent["from"] == "p"
        for bad in (
            b"nope",
            json.dumps({"id": sent["id"], "edge": "slow", "purged": -1}).encode(),
            json.dumps({"id": sent["id"], "edge": "slow", "purged": True}).encode(),
            json.dumps({"id": sent["id"], "edge": 5, "purged": 1}).encode(),
            json.dumps({"edge": "slow", "purged": 1}).encode(),
        ):
            await backend.pubsub.publish(fanout.reply_channel, bad)
        await until(lambda: fanout.malformed == 5)
        # An edge that joined after publication answers too: counted, not awaited.
        newcomer = {"id": sent["id"], "edge": "new", "purged": 2}
        await backend.pubsub.publish(fanout.reply_channel, json.dumps(newcomer).encode())
        await asyncio.sleep(0)
        assert not task.done()
        await until(lambda: clock.sleepers == 1)
        clock.advance(1)
        result = await task
        assert result == 2 and dict(result.edges) == {"new": 2} and result.missing == ("slow",)
        late = {"id": sent["id"], "edge": "slow", "purged": 1}
        await backend.pubsub.publish(fanout.reply_channel, json.dumps(late).encode())
        await until(lambda: fanout.late == 1)
    finally:
        await requests.close()
        await fanout.close()


async def test_purges_in_flight_together_are_answered_separately(
    backend: Backend, clock: FakeClock
) -> None:
    nodes = [await start_node(backend, clock, name) for name in ("a", "b")]
    try:
        first, second = await asyncio.gather(
            nodes[0].purger.purge(PurgePlan.of(["news"])),
            nodes[0].purger.purge(PurgePlan.of(["sport"])),
        )
        assert dict(first.edges) == {"a": 3, "b": 3} and dict(second.edges) == {"a": 1, "b": 1}
    finally:
        for node in nodes:
            await stop_node(node)


def test_a_negative_timeout_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError):
        FanOut(backend.pubsub, backend.kv, timeout=-1)


# --- context.cache without an edge in the process -------------------------------------

site = App("fleet-site")


@site.function(timeout=5)
async def purge_news(event: dict[str, Any], context: Any) -> Any:
    """Purge what the event names; report the fleet's answer."""
    result = await context.cache.purge(keys=event.get("keys", []), paths=event.get("paths", []))
    return {"total": int(result), "edges": dict(result.edges), "missing": list(result.missing)}


@site.function(timeout=5)
def purge_news_sync(event: dict[str, Any], context: Any) -> Any:
    """The same from a synchronous handler."""
    return int(context.cache.purge_sync(keys=event["keys"]))


async def test_context_cache_purges_the_fleet_from_a_process_without_an_edge(
    backend: Backend, clock: FakeClock
) -> None:
    nodes = [await start_node(backend, clock, name) for name in ("a", "b")]
    publisher = PurgePublisher(backend.pubsub, backend.kv, clock=clock)
    await publisher.start()
    try:
        async with Runtime(site, backend=backend, serve=False) as runtime:
            answer = await runtime.invoke("purge_news", {"keys": ["news"]})
            assert answer == {"total": 6, "edges": {"a": 3, "b": 3}, "missing": []}
            assert await runtime.invoke("purge_news_sync", {"keys": ["sport"]}) == 2
        assert all(n.store.get("/news/a/0", []) is None for n in nodes)
    finally:
        await publisher.stop()
        for node in nodes:
            await stop_node(node)
    async with Runtime(site, backend=backend, serve=False) as runtime:
        with pytest.raises(HandlerError) as caught:  # stopped: nothing serves context.cache
            await runtime.invoke("purge_news", {"keys": ["news"]})
    assert caught.value.error_type == "NotAvailableError"


async def test_the_publish_only_client_authorises_every_key_and_path_first(
    backend: Backend, clock: FakeClock
) -> None:
    node = await start_node(backend, clock, "a")
    publisher = PurgePublisher(backend.pubsub, backend.kv, clock=clock)
    await publisher.start()
    asked: list[tuple[str, str]] = []

    def refuse_sport(function: FunctionConfig, action: str, resource: str) -> None:
        asked.append((action, resource))
        if resource == "key/sport":
            raise PermissionDeniedError(function.name, action, resource)

    try:
        async with Runtime(site, backend=backend, serve=False, authorizer=refuse_sport) as runtime:
            with pytest.raises(HandlerError) as caught:
                await runtime.invoke("purge_news", {"keys": ["news", "sport"], "paths": ["/x"]})
            assert caught.value.error_type == "PermissionDeniedError"
            assert asked == [("cache:purge", "key/news"), ("cache:purge", "key/sport")]
            assert node.store.get("/news/a/0", []) is not None  # nothing was purged
            await runtime.invoke("purge_news", {"paths": ["/news/*"]})
            assert asked[-1] == ("cache:purge", "path/news/*")
        assert node.store.get("/news/a/0", []) is None
    finally:
        await publisher.stop()
        await stop_node(node)


async def test_an_edge_in_the_process_is_preferred_to_the_publisher() -> None:
    calls: list[str] = []

    async def edge(*_: Any, **__: Any) -> PurgeResult:
        calls.append("edge")
        return PurgeResult({"here": 1})

    async def publisher(*_: Any, **__: Any) -> PurgeResult:
        calls.append("publisher")
        return PurgeResult()

    context = Context(FunctionConfig(name="f", handler=lambda e, c: None))
    activate(publisher, edge=False)
    try:
        assert await context.cache.purge(keys=["k"]) == 0
        activate(edge)
        try:
            assert (
                await Context(FunctionConfig(name="f", handler=lambda e, c: None)).cache.purge(
                    keys=["k"]
                )
                == 1
            )
        finally:
            deactivate(edge)
    finally:
        deactivate(publisher)
    assert calls == ["publisher", "edge"]


async def test_a_lost_reply_subscription_is_opened_again(
    backend: Backend, clock: FakeClock
) -> None:
    nodes = [await start_node(backend, clock, name) for name in ("a", "b")]
    publisher = PurgePublisher(backend.pubsub, backend.kv, clock=clock)
    try:
        assert (await publisher.purge(keys=["news"])).complete
        subscription, listener = publisher.fanout._subscription, publisher.fanout._listener
        assert subscription is not None and listener is not None
        await subscription.close()  # as when the backend's connection drops
        await until(listener.done)
        async with asyncio.timeout(5):  # the fake clock never moves: no answers would hang
            result = await publisher.purge(paths=["/sport"])
        assert result == 2 and result.complete and publisher.fanout._listener is not listener
    finally:
        await publisher.stop()
        for node in nodes:
            await stop_node(node)


def test_the_test_harness_recorder_answers_like_the_real_client() -> None:
    result = RecordingCache().purge_sync(keys=["k"])
    assert isinstance(result, PurgeResult) and result == 0
    assert result.complete and dict(result.edges) == {}


@settings(max_examples=40)
@given(
    holdings=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=5),
    silent=st.sets(st.integers(min_value=0, max_value=4), max_size=3),
    via_publisher=st.booleans(),
)
def test_a_purge_hears_exactly_the_listening_edges_and_misses_exactly_the_silent(
    holdings: list[int], silent: set[int], via_publisher: bool
) -> None:
    """Any fleet: answers from every listening edge, ``missing`` = the silent members."""

    async def scenario() -> None:
        clock = FakeClock()
        backend = memory_backend(clock)
        nodes = []
        for index, count in enumerate(holdings):
            name = f"e{index}"
            if index in silent and index > 0:  # registered, never listening
                await backend.kv.put(MEMBERS_PREFIX + name, EdgeMember(name).to_json(), ttl=60)
                continue
            node = await start_node(backend, clock, name)
            node.store.purge_keys(["news"])
            for item in range(count):
                node.store.put(entry(f"/n/{name}/{item}", tags=("news",)))
            nodes.append(node)
        publisher = PurgePublisher(backend.pubsub, backend.kv, clock=clock)
        try:
            purge = (
                publisher.purge(keys=["news"])
                if via_publisher
                else nodes[0].purger.purge(PurgePlan.of(["news"]))
            )
            task = asyncio.ensure_future(purge)
            expected_silent = sorted(f"e{i}" for i in silent if 0 < i < len(holdings))
            if expected_silent:
                await until(lambda: clock.sleepers > len(nodes))
                clock.advance(1)
            result = await task
            assert result.missing == tuple(expected_silent)
            assert dict(result.edges) == {n.id: holdings[int(n.id[1:])] for n in nodes}
            assert result == sum(holdings[int(n.id[1:])] for n in nodes)
        finally:
            await publisher.stop()
            for node in nodes:
                await stop_node(node)
            await backend.close()

    asyncio.run(scenario())
