"""Pattern matching: reflow's RuleSet against LocalStack's EventBridge matcher.

Both sides get the same generated EventBridge events (about 900 bytes of
JSON each, already parsed) and the same 10 / 100 / 1,000 / 10,000 rules,
which mix every operator of the pattern language: exact strings, numbers,
booleans and null, arrays, nested objects, prefix, suffix,
equals-ignore-case (alone and with prefix / suffix), wildcard, anything-but
(values, lists, prefix, suffix, equals-ignore-case, wildcard), numeric
(one- and two-sided, ``=``), exists (true and false), cidr (IPv4 and IPv6)
and ``$or``. Like real rules, each names its ``source`` (sometimes two) and
most name a ``detail-type``.

The matched sets are compared on the sample events themselves; reflow is
timed on a stream of fresh events made from them (see ``refresh``), never
the same event twice, because it remembers the class of each recurring
value at a path (the conditions it satisfies) and replaying a few hundred
events would let that memory answer for values a real stream never
repeats. LocalStack, which keeps nothing between
events, is timed on the samples.

LocalStack runs in bench/.venv-peers through bench/_patterns_peer.py (its
own process, so neither side's imports touch the other); rounds alternate
A B A B after a warm-up. Before timing, the matched rule sets of both sides
are compared on every sample event: the script fails if they differ.

The figure is events matched per second against the whole rule set.
``flatness`` is reflow's throughput at the largest rule count divided by
its throughput at 10 rules (1.0 = flat in the rule count), from the series
above; ``flatness_alternating`` is the same quotient measured with the two
rule sets alternating round by round on one stream (the median of the
per-round quotients), which load on a shared machine disturbs far less.

Beside each throughput the script prints how many rules an event matches on
average. With these rules that number grows with the rule count (0.01 at
10 rules, about 9 at 10,000: the rules spread over a fixed universe of 100
sources and 40 detail-types, so each added rule concerns as many events as
the last), and no matcher can be flat in the size of its answer. A second,
reflow-only series therefore keeps the answer constant: the same first 10
rules at every size, the others generated alike but naming producers that
are absent from the event stream (a bus whose rules grow with its number of
producers). Its matched sets are checked equal to the 10-rule ones, and
``flatness_constant_matches`` is its throughput at the largest size over
that at 10 rules.

    python bench/patterns.py            # full run (a few minutes)
    python bench/patterns.py --smoke    # CI: tiny sizes, one round
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import Comparison, alternate, machine_is_quiet, parse_args, rate, report  # noqa: E402
from _peers import PeerProcess  # noqa: E402

from reflow.events import RuleSet  # noqa: E402

PEER_PACKAGES = ("localstack-core[base-runtime]",)
# The universe a platform with thousands of rules serves: 100 producers and
# 40 event types. Rules spread over them, as on a real bus, so the number of
# rules an event matches grows far slower than the rule count.
SOURCES = [f"com.example.{name}" for name in ("cms", "shop", "auth", "media", "search", "billing")]
SOURCES += [f"partner.feed{index}" for index in range(94)]
DETAIL_TYPES = [
    f"{thing} {verb}"
    for thing in (
        "Article",
        "Order",
        "Image",
        "User",
        "Invoice",
        "Video",
        "Comment",
        "Page",
        "Feed",
        "Tag",
    )
    for verb in ("Created", "Updated", "Deleted", "Published")
]
SECTIONS = ["news", "sport", "business", "culture", "science", "travel", "opinion", "tech"]
LANGS = ["en-GB", "en-US", "fr-FR", "de-DE", "es-ES", "pt-BR"]
STATES = ["draft", "review", "published", "archived", "deleted"]
TAGS = ["breaking", "live", "video", "gallery", "analysis", "explainer", "local", "world"]
AUTHORS = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"]
WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
]


# --- the events ---------------------------------------------------------------------------


def make_event(rng: random.Random, index: int) -> dict[str, Any]:
    """One EventBridge event of about 900 bytes."""
    section = rng.choice(SECTIONS)
    slug = "-".join(rng.choice(WORDS) for _ in range(4))
    ip = _address(rng)
    detail: dict[str, Any] = {
        "article": {
            "id": rng.randrange(100000),
            "slug": slug,
            "section": section,
            "path": f"/{section}/2026/{rng.randrange(1, 13):02d}/{slug}.html",
            "title": " ".join(rng.choice(WORDS) for _ in range(8)).title(),
            "tags": rng.sample(TAGS, rng.randrange(0, 4)),
            "words": rng.randrange(100, 5000),
            "score": round(rng.uniform(0, 100), 2),
            "lang": rng.choice(LANGS),
            "author": {
                "name": rng.choice(AUTHORS),
                "email": rng.choice(["ada", "alan", "grace", "edsger"])
                + rng.choice(["@example.com", "@news.example.org"]),
            },
        },
        "state": rng.choice(STATES),
        "breaking": rng.random() < 0.2,
        "editor": None if rng.random() < 0.3 else rng.choice(["kim", "lee", "sam"]),
        "client": {"ip": ip, "agent": rng.choice(["Mozilla/5.0", "curl/8.5", "reflow-cli/0.1"])},
        "price": rng.choice([0, 0.99, 1.5, 4.99, 9.99, 19.99, 100, 300]),
        "summary": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(20, 35))),
    }
    if rng.random() < 0.5:
        detail["revision"] = rng.randrange(1, 50)
    return {
        "version": "0",
        "id": f"{index:08d}-0000-4000-8000-{rng.randrange(16**12):012x}",
        "detail-type": rng.choice(DETAIL_TYPES),
        "source": rng.choice(SOURCES),
        "account": "123456789012",
        "time": f"2026-12-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:00:00Z",
        "region": rng.choice(["eu-west-1", "us-east-1", "ap-south-1"]),
        "resources": [f"arn:reflow:cms:::article/{rng.randrange(100000)}"],
        "detail": detail,
    }


def _address(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}"
    return f"2001:db8:{rng.randrange(4):x}::{rng.randrange(65536):x}"


def refresh(event: dict[str, Any], rng: random.Random, index: int) -> dict[str, Any]:
    """A new event like ``event`` with fresh values in its fields that rarely repeat.

    Ids, paths, word counts, scores, revisions and client addresses are drawn
    again as make_event draws them; the fields with a few values (source,
    type, state, section, language ...) are kept. Timing on such events,
    never on the same event twice, keeps any per-value memory of the matcher
    honest: a real stream does not repeat its events.
    """
    detail = event["detail"]
    article = detail["article"]
    section = article["section"]
    slug = "-".join(rng.choices(WORDS, k=4))
    fresh_article = {
        **article,
        "id": rng.randrange(100000),
        "slug": slug,
        "path": f"/{section}/2026/{rng.randrange(1, 13):02d}/{slug}.html",
        "words": rng.randrange(100, 5000),
        "score": round(rng.uniform(0, 100), 2),
    }
    fresh_detail = {
        **detail,
        "article": fresh_article,
        "client": {**detail["client"], "ip": _address(rng)},
    }
    if "revision" in detail:
        fresh_detail["revision"] = rng.randrange(1, 50)
    return {**event, "id": f"{index:08d}-0000-4000-8000-000000000000", "detail": fresh_detail}


class Stream:
    """An endless stream of events never seen before, made from the sample pool."""

    def __init__(self, pool: list[dict[str, Any]], seed: int) -> None:
        self.pool = pool
        self.rng = random.Random(seed)
        self.index = 0

    def batch(self) -> list[dict[str, Any]]:
        """The next len(pool) events."""
        start, self.index = self.index, self.index + len(self.pool)
        return [refresh(event, self.rng, start + offset) for offset, event in enumerate(self.pool)]


# --- the rules ---------------------------------------------------------------------------


def _detail_condition(rng: random.Random) -> dict[str, Any]:
    """One detail field with one operator; every operator of the language appears."""
    kind = rng.randrange(22)
    if kind == 0:
        return {"state": rng.sample(STATES, rng.randrange(1, 3))}
    if kind == 1:
        return {"article": {"section": [rng.choice(SECTIONS)]}}
    if kind == 2:
        return {"article": {"tags": [rng.choice(TAGS)]}}  # array in the event
    if kind == 3:
        return {"breaking": [True]}
    if kind == 4:
        return {"editor": [None]}
    if kind == 5:
        return {"price": [rng.choice([0, 9.99, 100, 300.0])]}  # numbers by value
    if kind == 6:
        return {"article": {"path": [{"prefix": f"/{rng.choice(SECTIONS)}/2026/"}]}}
    if kind == 7:
        return {
            "article": {"author": {"email": [{"suffix": rng.choice(["@example.com", ".org"])}]}}
        }
    if kind == 8:
        return {"article": {"lang": [{"equals-ignore-case": rng.choice(LANGS).upper()}]}}
    if kind == 9:
        return {"article": {"lang": [{"prefix": {"equals-ignore-case": rng.choice(["EN", "fr"])}}]}}
    if kind == 10:
        return {"article": {"path": [{"suffix": {"equals-ignore-case": ".HTML"}}]}}
    if kind == 11:
        # Each * here always covers at least one character: LocalStack's * needs
        # one, while EventBridge's (and reflow's) also matches none.
        return {"article": {"path": [{"wildcard": f"/{rng.choice(SECTIONS)}/*/*.html"}]}}
    if kind == 12:
        return {"state": [{"anything-but": rng.choice(STATES)}]}
    if kind == 13:
        return {"state": [{"anything-but": rng.sample(STATES, 2)}]}
    if kind == 14:
        return {"article": {"section": [{"anything-but": {"prefix": rng.choice(["s", "b", "t"])}}]}}
    if kind == 15:
        return {"article": {"lang": [{"anything-but": {"equals-ignore-case": ["EN-GB", "en-us"]}}]}}
    if kind == 16:
        return {"article": {"path": [{"anything-but": {"wildcard": f"/{rng.choice(SECTIONS)}/*"}}]}}
    if kind == 17:
        low = rng.randrange(0, 4000)
        return {
            "article": {"words": [{"numeric": [">=", low, "<", low + rng.randrange(200, 2000)]}]}
        }
    if kind == 18:
        return {
            "article": {
                "score": [{"numeric": [rng.choice([">", "<=", "="]), rng.choice([50, 75.5, 99])]}]
            }
        }
    if kind == 19:
        return {"revision": [{"exists": rng.random() < 0.5}]}
    if kind == 20:
        block = rng.choice(
            ["10.0.0.0/16", "10.2.0.0/15", "10.1.128.0/17", "2001:db8::/34", "2001:db8:2::/48"]
        )
        return {"client": {"ip": [{"cidr": block}]}}
    # $or over fields no other kind names: LocalStack lets a field inside $or
    # replace the same field outside it, where EventBridge requires both.
    return {
        "$or": [
            {"article": {"author": {"name": [rng.choice(AUTHORS)]}}},
            {"client": {"agent": [{"prefix": rng.choice(["curl/", "Mozilla/"])}]}},
        ]
    }


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "$or":
            _merge(into[key], value)
        elif key not in into:
            into[key] = value


def make_rule(rng: random.Random) -> dict[str, Any]:
    """One rule: its source(s), usually a detail-type, and one to three detail fields."""
    pattern: dict[str, Any] = {"source": rng.sample(SOURCES, 1 if rng.random() < 0.8 else 2)}
    if rng.random() < 0.7:
        pattern["detail-type"] = [rng.choice(DETAIL_TYPES)]
    detail: dict[str, Any] = {}
    for _ in range(rng.randrange(1, 4)):
        _merge(detail, _detail_condition(rng))
    pattern["detail"] = detail
    return pattern


# --- the two sides ------------------------------------------------------------------------


class Peer(PeerProcess):
    """LocalStack's matcher in bench/.venv-peers, behind bench/_patterns_peer.py."""

    def __init__(self) -> None:
        # LocalStack's events engine imports on 3.11, unlike its Step Functions.
        super().__init__(HERE / "_patterns_peer.py", PEER_PACKAGES, minimum=(3, 11))

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().ask(request)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer


def idle_rules(rules: list[dict[str, Any]], size: int) -> dict[str, dict[str, Any]]:
    """The constant-matches series: rules past the first 10 name producers no event has."""
    named: dict[str, dict[str, Any]] = {}
    for index, pattern in enumerate(rules[:size]):
        if index >= 10:
            sources = [f"idle.producer{index}-{n}" for n in range(len(pattern["source"]))]
            pattern = {**pattern, "source": sources}
        named[f"rule-{index:05d}"] = pattern
    return named


def ours_round(rules: RuleSet, stream: Stream, seconds: float) -> float:
    """Events per second over at least ``seconds`` of matching fresh events.

    Only the matching is timed: each batch is made before its clock starts.
    """
    done, spent = 0, 0.0
    while spent < seconds:
        events = stream.batch()
        started = time.perf_counter()
        for event in events:
            rules.match(event)
        spent += time.perf_counter() - started
        done += len(events)
    return rate(done, spent)


def main() -> int:
    args = parse_args(__doc__ or "patterns benchmark")
    rng = random.Random(20261204)
    sizes = [10, 100] if args.smoke else [10, 100, 1_000, 10_000]
    pool = [make_event(rng, index) for index in range(50 if args.smoke else 400)]
    sizes_bytes = [len(json.dumps(event)) for event in pool]
    all_rules = [make_rule(rng) for _ in range(max(sizes))]
    # How many events the peer matches per round, so a round takes about a second.
    peer_batch = {10: 2000, 100: 400, 1_000: 60, 10_000: 8}
    check_count = {10: len(pool), 100: len(pool), 1_000: min(len(pool), 200), 10_000: 40}
    ours_seconds = 0.05 if args.smoke else 0.3
    stream = Stream(pool, seed=7)

    peer = Peer()
    comparisons: list[Comparison] = []
    flat: dict[int, float] = {}
    matchers: dict[int, RuleSet] = {}
    per_event: dict[int, float] = {}
    mismatches = 0
    try:
        peer.ask({"op": "events", "events": pool})
        for size in sizes:
            named = {f"rule-{index:05d}": all_rules[index] for index in range(size)}
            rules = RuleSet()
            started = time.perf_counter()
            for name, pattern in named.items():
                rules.add(name, pattern)
            ours_compile = time.perf_counter() - started
            peer_compile = peer.ask(
                {"op": "rules", "rules": {n: json.dumps(p) for n, p in named.items()}}
            )["seconds"]
            count = min(check_count[size], len(pool))
            theirs = peer.ask({"op": "matches", "count": count})["matches"]
            matched = 0
            for event, expected in zip(pool[:count], theirs, strict=True):
                got = rules.match(event)
                matched += len(got)
                if sorted(got) != sorted(expected):
                    mismatches += 1
                    if mismatches <= 3:
                        print(
                            f"MISMATCH at {size} rules, event {event['id']}: "
                            f"reflow {got}, LocalStack {expected}"
                        )
            per_event[size] = sum(len(rules.match(event)) for event in pool) / len(pool)
            print(
                f"{size:>6} rules: compile reflow {ours_compile * 1000:.1f} ms, LocalStack "
                f"{peer_compile * 1000:.1f} ms; {per_event[size]:.2f} rules match per event "
                f"on average; matched sets checked on {count} events",
                flush=True,
            )
            batch = min(peer_batch[size], len(pool)) if not args.smoke else min(20, len(pool))

            def peer_round(batch: int = batch) -> float:
                answer = peer.ask({"op": "run", "count": batch})
                return rate(answer["count"], answer["seconds"])

            def our_round(rules: RuleSet = rules) -> float:
                return ours_round(rules, stream, ours_seconds)

            if not args.smoke and not machine_is_quiet():
                print("note: the machine is busy (load average above 0.5 per core)", flush=True)
            comparison = alternate(
                args.rounds,
                our_round,
                peer_round,
                Comparison(f"match @ {size:,} rules", "events/s"),
                warmup=not args.smoke,
            )
            comparisons.append(comparison)
            flat[size] = comparison.summary()["ours"]
            matchers[size] = rules
    finally:
        peer.close()

    # The constant-matches series (reflow only; see the module docstring).
    constant: dict[int, float] = {}
    baseline: list[list[str]] = []
    for size in sizes:
        rules = RuleSet()
        for name, pattern in idle_rules(all_rules, size).items():
            rules.add(name, pattern)
        answers = [rules.match(event) for event in pool]
        if not baseline:
            baseline = answers
        elif answers != baseline:
            mismatches += 1
            print(f"MISMATCH in the constant-matches series at {size} rules")
        comparison = Comparison(f"match @ {size:,} rules, constant matches", "events/s")
        if not args.smoke:
            ours_round(rules, stream, ours_seconds)  # warm-up
        for _ in range(args.rounds):
            comparison.ours.append(ours_round(rules, stream, ours_seconds))
        comparisons.append(comparison)
        constant[size] = comparison.summary()["ours"]
        average = sum(map(len, answers)) / len(pool)
        print(f"{size:>6} rules, constant matches: {average:.3f} rules match per event", flush=True)

    # Flatness measured the way BENCHMARKS.md measures against a peer: the
    # largest rule set against the smallest, alternating round by round on
    # the same stream, so that load which comes and goes on a shared machine
    # hits both (the series above measures the sizes one after another).
    largest, smallest = matchers[max(sizes)], matchers[min(sizes)]
    interleaved = alternate(
        args.rounds * 2 if not args.smoke else 1,
        lambda: ours_round(largest, stream, ours_seconds),
        lambda: ours_round(smallest, stream, ours_seconds),
        Comparison(f"match @ {max(sizes):,} against @ {min(sizes)} rules, alternating", "events/s"),
        warmup=not args.smoke,
    )
    comparisons.append(interleaved)
    flatness_alternating = interleaved.summary()["ratio"]
    flatness = flat[max(sizes)] / flat[min(sizes)]
    flatness_constant = constant[max(sizes)] / constant[min(sizes)]
    print(f"\nevents: {len(pool)}, median {sorted(sizes_bytes)[len(pool) // 2]} bytes of JSON")
    print(f"reflow at {max(sizes):,} rules runs at {flatness:.2f}x its speed at {min(sizes)} rules")
    print(
        f"alternating round by round: {flatness_alternating:.3f}x (median of the per-round ratios)"
    )
    print(
        f"constant matches: reflow at {max(sizes):,} rules runs at {flatness_constant:.2f}x "
        f"its speed at {min(sizes)} rules"
    )
    print(f"matched-set mismatches (against LocalStack, and in the constant series): {mismatches}")
    report(
        "patterns",
        comparisons,
        "LocalStack event_rule_engine",
        flatness=flatness,
        flatness_alternating=flatness_alternating,
        flatness_constant_matches=flatness_constant,
        matched_per_event={str(size): round(value, 4) for size, value in per_event.items()},
        mismatches=mismatches,
        smoke=args.smoke,
        event_bytes=sorted(sizes_bytes)[len(pool) // 2],
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
