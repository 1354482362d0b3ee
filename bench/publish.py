"""Publish to fresh content at the edge: reflow's purge against nginx with a TTL.

An editor publishes a new version of an article; how long until the readers
at the edge see it? Both sides serve the same ~1 KB page, and the same
readers (``bench/_publish_readers.py``: ``--connections`` raw HTTP/1.1
keep-alive connections, each polling the page every ``--interval``, in a
process of their own pinned to core 1) note every answer's version on the
system-wide monotonic clock.

* **reflow**: an app like ``reflow new``'s (written to a temporary folder,
  served by ``reflow run`` on SQLite in a temporary data dir, pinned to core
  0): a rule on ``ArticlePublished`` runs ``render``, which writes the page
  to the ``site`` bucket and purges ``[path, "/"]`` through
  ``context.cache``, then appends the moment its purge returned to a log;
  the edge serves the bucket with a one-hour TTL, so only the purge can make
  a page fresh. The publisher ``POST``s the event to the admin API's
  ``/api/events`` and notes the moment just before.
* **nginx** (Debian's, 1 worker, pinned to core 0): ``proxy_cache`` with
  ``proxy_cache_valid 200 TTL`` in front of a second server block of the
  same nginx that serves the page from a folder; the publisher rewrites the
  file (write and rename). A second cache in the same nginx is the
  serve-stale-then-regenerate model (``proxy_cache_use_stale updating`` and
  ``proxy_cache_background_update on``, same TTL, marked ``[swr]``);
  ``--connections`` readers poll each cache, through the same publishes. A TTL cache
  turns fresh whenever its copy expires, so each nginx publish waits a
  random share of the TTL first (the publish lands anywhere in the copy's
  life, as an editor's would).

Per publish: *first fresh* is the time from the publish to the first answer
with the new version, *all fresh* to the moment every reader has had one.
Two kinds of stale answer are counted, and must be 0 for reflow:
*stale after fresh* (a reader gets an older version after it has seen the
newer one) and, for reflow, *stale after purge* (an answer to a request
sent after the render function's purge returned that still holds an older
version). The goal (BENCHMARKS.md): reflow's p99 at most 50 ms (judged on
all-fresh, the stricter), zero stale after purge. The ratio is nginx's p99
over reflow's. To tell where reflow's time goes, the output also gives
publish -> purge returned (event put, rule, ``render``, purge), the slowest
publishes split into that and purge -> first fresh, the edge's hits, misses
and origin fetches, and how long reflow's busiest thread waited for a core.

Rounds alternate reflow and nginx after a warm-up publish on each; each
round's load average is reported, and a round is marked busy when the
machine's one-minute load per core was 0.5 or more (the figures move most
then). ``--smoke`` runs one round of two reflow publishes and one nginx
publish with a 1 s TTL (said in the output) and finishes in well under a
minute; nginx is installed from Debian when missing, as bench/edge.py does.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Comparison, machine_is_quiet, parse_args, percentile, report  # noqa: E402
from _publish_readers import load  # noqa: E402
from edge import (  # noqa: E402
    _which,
    ensure_tools,
    free_port,
    process_tree,
    run_queue_waits,
    wait_port,
)

GOAL_MS = 50.0
SLUG = "story"
PATH = f"/articles/{SLUG}"
FILLER = "<p>" + "Lorem ipsum dolor sit amet. " * 32 + "</p>"  # a ~1 KB page

APP = '''"""The publishing app of bench/publish.py, like reflow new's scaffold."""

from __future__ import annotations

import os
import time
from typing import Any

from reflow import App

app = App("publishbench")
app.bucket("site")
# An hour: only the purge can make a page fresh within a run.
app.edge_origin("*", "bucket:site", default_ttl=3600)

PURGE_LOG = os.environ["REFLOW_BENCH_PURGE_LOG"]


@app.on({"source": ["bench.cms"], "detail-type": ["ArticlePublished"]})
@app.function(timeout=10)
def render(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Write the article's page, purge it and the home page, note when the purge returned."""
    article = event["detail"]
    path = f"/articles/{article['slug']}"
    context.blobs.sync.put(
        f"site{path}", article["html"].encode(), content_type="text/html; charset=utf-8"
    )
    context.cache.purge_sync(paths=[path, "/"])
    with open(PURGE_LOG, "a") as log:
        log.write(f"{article['version']} {time.monotonic()!r}\\n")
    return {"path": path}
'''


def page(version: int) -> str:
    """The article at ``version``; readers find the number after ``version=``."""
    return (
        f"<!doctype html><html><head><title>{SLUG}</title></head><body>"
        f"<h1>{SLUG}</h1><p>version={version};</p>{FILLER}</body></html>\n"
    )


# --- the servers ----------------------------------------------------------------------


def nginx_config(tmp: Path, origin: int, ttl: int, swr: int, ttl_s: float) -> Path:
    """One nginx: the origin serving ``tmp/files``, a TTL cache and a serve-stale cache."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    valid = f"{max(1, round(ttl_s))}s"
    common = f"""proxy_pass http://127.0.0.1:{origin};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache_valid 200 404 {valid};
            add_header X-Cache $upstream_cache_status;"""
    text = f"""{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    proxy_cache_path {tmp}/cache-ttl keys_zone=ttl:10m use_temp_path=off;
    proxy_cache_path {tmp}/cache-swr keys_zone=swr:10m use_temp_path=off;
    server {{
        listen 127.0.0.1:{origin};
        root {tmp}/files;
        default_type text/html;
    }}
    server {{
        listen 127.0.0.1:{ttl};
        location / {{
            proxy_cache ttl;
            {common}
        }}
    }}
    server {{
        listen 127.0.0.1:{swr};
        location / {{
            proxy_cache swr;
            proxy_cache_use_stale updating;
            proxy_cache_background_update on;
            {common}
        }}
    }}
}}
"""
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


def start_reflow(tmp: Path) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """``reflow run`` on the bench app, core 0, free ports; process, admin, edge, purge log."""
    folder = tmp / "app"
    folder.mkdir()
    (folder / "app.py").write_text(APP)
    purge_log = tmp / "purges.log"
    admin, edge = free_port(), free_port()
    env = dict(os.environ, REFLOW_DATA_DIR=str(tmp / "data"))
    env["REFLOW_BENCH_PURGE_LOG"] = str(purge_log)
    env.pop("REFLOW_BACKEND", None)  # the embedded default: SQLite under the data dir
    reflow = str(Path(sys.executable).with_name("reflow"))
    command = ["taskset", "-c", "0", reflow, "run", "app.py"]
    command += ["--admin-port", str(admin), "--edge-port", str(edge)]
    with open(tmp / "reflow.log", "wb") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_port(admin, 60.0)
        wait_port(edge, 60.0)
    except RuntimeError as exc:
        process.kill()
        raise RuntimeError(
            "reflow run did not start:\n" + (tmp / "reflow.log").read_text()
        ) from exc
    return process, admin, edge, purge_log


def put_event(admin: int, version: int) -> None:
    """The CMS's ``ArticlePublished`` for ``version``, through the admin API."""
    detail = {"slug": SLUG, "version": version, "html": page(version)}
    event = {"source": "bench.cms", "detail-type": "ArticlePublished", "detail": detail}
    connection = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        connection.request("POST", "/api/events", json.dumps({"entries": [event]}))
        answer = connection.getresponse()
        text = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST /api/events: {answer.status} {text!r}")
    finally:
        connection.close()


def edge_metrics(admin: int) -> dict[str, float]:
    """reflow's edge counters (``GET /api/edge/metrics``): hits, misses, origin fetches."""
    connection = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        connection.request("GET", "/api/edge/metrics")
        figures = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    names = ("hits", "misses", "origin_fetches", "origin_seconds", "purges", "purged_objects")
    return {name: float(figures.get(name, 0)) for name in names}


def write_file(folder: Path, version: int) -> None:
    """The nginx origin's page at ``version``, replaced in one rename."""
    target = folder / "articles" / SLUG
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(".tmp")
    scratch.write_text(page(version))
    scratch.rename(target)


def purge_times(log: Path) -> dict[int, float]:
    """When each version's purge returned, from the render function's log."""
    if not log.exists():
        return {}
    found = {}
    for line in log.read_text().splitlines():
        version, moment = line.split()
        found[int(version)] = float(moment)
    return found


# --- the readers ------------------------------------------------------------------------


class Readers:
    """The reader process: started, waited on (``all N``), stopped, its answers loaded."""

    def __init__(self, tmp: Path, ports: Sequence[int], connections: int, interval: float) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="readers-", dir=tmp))
        self.connections = connections * len(ports)
        self.ports = list(ports)
        command = ["taskset", "-c", "1", sys.executable, str(HERE / "_publish_readers.py")]
        command += ["--ports", ",".join(map(str, ports)), "--path", PATH]
        command += ["--connections", str(self.connections), "--interval", str(interval)]
        command += ["--out", str(self.out)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()
        self.newest = 0
        self._expect("ready", 30.0)

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.strip())
        self.lines.put("eof")

    def _expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the readers never said {prefix!r}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line == "eof":
                raise RuntimeError("the reader process ended early")
            if line.startswith("all "):
                self.newest = max(self.newest, int(line.split()[1]))
            if line.startswith(prefix):
                return line

    def wait_all(self, version: int, timeout: float) -> bool:
        """Whether every reader saw ``version`` (or newer) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.newest < version:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._expect("all ", left)
            except TimeoutError:
                return False
        return True

    def stop(self) -> list[list[tuple[float, float, int]]]:
        """Stop the readers; each connection's (sent, received, version) answers."""
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.close()
        self._expect("done", 30.0)
        self.process.wait(10)
        return load(self.out, self.connections)


# --- the figures --------------------------------------------------------------------------


@dataclass
class Side:
    """What one side's rounds gave: per publish, first and all fresh (ms); stale counts."""

    first: list[float] = field(default_factory=list)
    all: list[float] = field(default_factory=list)
    missed: int = 0
    stale_after_fresh: int = 0
    stale_after_purge: int = 0
    answers: int = 0
    purge: list[float] = field(default_factory=list)  # reflow: publish to purge returned (ms)
    edge: dict[str, float] = field(default_factory=dict)  # reflow: edge counters over rounds
    waits: list[float] = field(default_factory=list)  # reflow: share of a round spent runnable
    # reflow, per publish: (all fresh, publish to purge returned, purge to first fresh), ms
    breakdown: list[tuple[float, float, float]] = field(default_factory=list)


def analyse(
    answers: list[list[tuple[float, float, int]]],
    published: dict[int, float],
    purged: dict[int, float],
    side: Side,
) -> tuple[list[float], list[float]]:
    """Add one round's answers (of the connections watching ``side``) to it.

    Returns the round's own first/all-fresh samples (ms), for per-round figures.
    """
    firsts, alls = [], []
    for version, moment in sorted(published.items()):
        seen = []
        for connection in answers:
            fresh = next((got for _, got, v in connection if v >= version and got >= moment), None)
            if fresh is not None:
                seen.append((fresh - moment) * 1000)
        if len(seen) < len(answers) or not seen:
            side.missed += 1
            continue
        firsts.append(min(seen))
        alls.append(max(seen))
        if version in purged:
            purge = (purged[version] - moment) * 1000
            side.breakdown.append((max(seen), purge, min(seen) - purge))
    order = sorted(purged.items(), key=lambda item: item[1])
    moments = [moment for _, moment in order]
    # The newest version purged by each moment (purges of one round come in order anyway).
    newest_purged = [max(v for v, _ in order[: i + 1]) for i in range(len(order))]
    for connection in answers:
        side.answers += len(connection)
        newest = 0
        for sent, _, version in connection:
            if version < newest:
                side.stale_after_fresh += 1
            newest = max(newest, version)
            # The newest purge that had returned before this request left.
            index = bisect.bisect_left(moments, sent) - 1
            if index >= 0 and version < newest_purged[index]:
                side.stale_after_purge += 1
    side.first += firsts
    side.all += alls
    side.purge += [(purged[v] - moment) * 1000 for v, moment in published.items() if v in purged]
    return firsts, alls


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--publishes", type=int, default=20, help="reflow publishes per round (default 20)"
        )
        parser.add_argument(
            "--peer-publishes", type=int, default=2, help="nginx publishes per round (default 2)"
        )
        parser.add_argument(
            "--peer-ttl", type=float, default=60.0, help="nginx's proxy_cache_valid (default 60 s)"
        )
        parser.add_argument(
            "--connections", type=int, default=16, help="readers per side (default 16)"
        )
        parser.add_argument(
            "--interval", type=float, default=0.01, help="each reader's pause (default 0.01 s)"
        )
        parser.add_argument(
            "--seed", type=int, default=1, help="random publish moments' seed (default 1)"
        )

    args = parse_args(__doc__ or "publish", extra)
    if args.smoke:
        args.publishes, args.peer_publishes, args.peer_ttl = 2, 1, 1.0
        args.connections = min(args.connections, 4)
    chance = random.Random(args.seed)
    ensure_tools()
    tmp = Path(tempfile.mkdtemp(prefix="reflow-bench-publish-"))
    tmp.chmod(0o755)  # nginx's worker reads the origin's files
    processes: list[subprocess.Popen[bytes]] = []
    try:
        origin, ttl_port, swr_port = free_port(), free_port(), free_port()
        conf = nginx_config(tmp, origin, ttl_port, swr_port, args.peer_ttl)
        write_file(tmp / "files", 1)
        nginx = _which("nginx") or "nginx"
        processes.append(
            subprocess.Popen(["taskset", "-c", "0", nginx, "-c", str(conf), "-p", str(tmp)])
        )
        reflow, admin, edge, purge_log = start_reflow(tmp)
        processes.append(reflow)
        for port in (origin, ttl_port, swr_port):
            wait_port(port)
        # Versions rise across both sides (one counter); each side's page stays at its own
        # newest, and a reflow round first waits for every reader to have reflow's.
        version = on_reflow = 1
        put_event(admin, version)  # warm-up: the page exists and the function's pool is up
        ours, ttl, swr = Side(), Side(), Side()
        per_round: dict[str, list[tuple[list[float], list[float]]]] = {}
        loads: list[list[float]] = []
        busy = 0

        def reflow_round(publishes: int, side: Side) -> tuple[list[float], list[float]]:
            nonlocal version, on_reflow
            readers = Readers(tmp, [edge], args.connections, args.interval)
            published: dict[int, float] = {}
            pids = process_tree(reflow.pid)
            counters, waited, started = edge_metrics(admin), run_queue_waits(pids), time.monotonic()
            try:
                if not readers.wait_all(on_reflow, 10.0):
                    raise RuntimeError(f"reflow's readers never saw version {on_reflow}")
                for _ in range(publishes):
                    version += 1
                    time.sleep(chance.uniform(0.05, 0.2))  # readers settle between publishes
                    published[version] = time.monotonic()
                    put_event(admin, version)
                    on_reflow = version
                    readers.wait_all(version, 10.0)
            finally:
                answers = readers.stop()
            window = time.monotonic() - started
            after = run_queue_waits(pids)
            longest = max((after[t] - waited.get(t, 0) for t in after), default=0)
            side.waits.append(longest / 1e9 / window)
            for name, value in edge_metrics(admin).items():
                side.edge[name] = side.edge.get(name, 0) + value - counters.get(name, 0)
            return analyse(answers, published, purge_times(purge_log), side)

        def nginx_round(publishes: int, sides: tuple[Side, Side]) -> None:
            nonlocal version
            readers = Readers(tmp, [ttl_port, swr_port], args.connections, args.interval)
            published: dict[int, float] = {}
            try:
                for _ in range(publishes):
                    version += 1
                    # Anywhere in the cached copy's life, as an editor's publish would land.
                    time.sleep(chance.uniform(0, args.peer_ttl))
                    published[version] = time.monotonic()
                    write_file(tmp / "files", version)
                    readers.wait_all(version, 2 * args.peer_ttl + 10)
            finally:
                answers = readers.stop()
            # Connection I polled ports[I % 2]: even ones the TTL cache, odd ones serve-stale.
            per_round.setdefault("ttl", []).append(analyse(answers[0::2], published, {}, sides[0]))
            per_round.setdefault("swr", []).append(analyse(answers[1::2], published, {}, sides[1]))

        if not args.smoke:  # a warm-up publish on each side, not counted
            reflow_round(1, Side())
            nginx_round(1, (Side(), Side()))
            per_round.clear()
        for index in range(args.rounds):
            loads.append(list(os.getloadavg()))
            if not machine_is_quiet():
                busy += 1
            # Swap who goes first each round so that drift hits both sides alike.
            if index % 2 == 0:
                per_round.setdefault("ours", []).append(reflow_round(args.publishes, ours))
                nginx_round(args.peer_publishes, (ttl, swr))
            else:
                nginx_round(args.peer_publishes, (ttl, swr))
                per_round.setdefault("ours", []).append(reflow_round(args.publishes, ours))
            print(
                f"round {index + 1}: load {loads[-1][0]:.2f}; reflow all-fresh p99 "
                f"{percentile(per_round['ours'][-1][1], 0.99):.1f} ms, nginx "
                f"{percentile(per_round['ttl'][-1][1], 0.99):.0f} ms",
                flush=True,
            )
        finish(args, ours, ttl, swr, per_round, loads, busy)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def finish(
    args: argparse.Namespace,
    ours: Side,
    ttl: Side,
    swr: Side,
    per_round: dict[str, list[tuple[list[float], list[float]]]],
    loads: list[list[float]],
    busy: int,
) -> None:
    """The table and the JSON line."""
    comparisons = []
    for peer, suffix in (("ttl", ""), ("swr", " [swr]")):
        for which, label in ((0, "first fresh"), (1, "all fresh")):
            for fraction, name in ((0.5, "p50"), (0.99, "p99")):
                comparison = Comparison(f"{label} {name}{suffix}", "ms", higher_is_better=False)
                for mine, theirs in zip(per_round["ours"], per_round[peer], strict=True):
                    if mine[which] and theirs[which]:
                        comparison.ours.append(percentile(mine[which], fraction))
                        comparison.peer.append(percentile(theirs[which], fraction))
                comparisons.append(comparison)

    def figures(side: Side) -> dict[str, Any]:
        return {
            "publishes": len(side.all),
            "missed": side.missed,
            "answers": side.answers,
            "first_fresh_p50_ms": round(percentile(side.first, 0.5), 2),
            "first_fresh_p99_ms": round(percentile(side.first, 0.99), 2),
            "all_fresh_p50_ms": round(percentile(side.all, 0.5), 2),
            "all_fresh_p99_ms": round(percentile(side.all, 0.99), 2),
            "stale_after_fresh": side.stale_after_fresh,
        }

    reflow = figures(ours) | {
        "stale_after_purge": ours.stale_after_purge,
        "publish_to_purge_p50_ms": round(percentile(ours.purge, 0.5), 2),
        "publish_to_purge_p99_ms": round(percentile(ours.purge, 0.99), 2),
        "edge": ours.edge,
        "waited_share_median": round(statistics.median(ours.waits), 3) if ours.waits else None,
        "slowest_ms": [[round(x, 1) for x in row] for row in sorted(ours.breakdown)[-3:]],
    }
    nginx, stale = figures(ttl), figures(swr)
    p99 = reflow["all_fresh_p99_ms"]
    met = bool(p99 <= GOAL_MS and ours.stale_after_purge == 0 and ours.stale_after_fresh == 0)
    met = met and ours.missed == 0
    print(
        f"\npooled over {len(ours.all)} reflow and {len(ttl.all)} nginx publishes "
        f"(nginx TTL {args.peer_ttl:g} s{', shortened for --smoke' if args.smoke else ''}):"
    )
    for name, side in (("reflow", reflow), ("nginx ttl", nginx), ("nginx swr", stale)):
        print(
            f"  {name:10}  first fresh p50 {side['first_fresh_p50_ms']:>9,.1f} ms"
            f"  p99 {side['first_fresh_p99_ms']:>9,.1f} ms   all fresh p50"
            f" {side['all_fresh_p50_ms']:>9,.1f} ms  p99 {side['all_fresh_p99_ms']:>9,.1f} ms"
            f"   stale after fresh {side['stale_after_fresh']}"
        )
    print(f"  reflow stale after purge: {ours.stale_after_purge} of {ours.answers} answers")
    print(
        "  reflow publish -> purge returned (event put, rule, render, purge): p50 "
        f"{reflow['publish_to_purge_p50_ms']:.1f} ms, "
        f"p99 {reflow['publish_to_purge_p99_ms']:.1f} ms"
    )
    slowest = sorted(ours.breakdown, reverse=True)[:3]
    print(
        "  reflow's slowest publishes (all fresh = publish -> purge returned + purge -> first "
        "fresh + the other readers): "
        + "; ".join(f"{a:.1f} = {p:.1f} + {f:.1f} + {a - p - f:.1f} ms" for a, p, f in slowest)
    )
    edge = ours.edge
    print(
        f"  reflow edge over the rounds: {edge.get('hits', 0):.0f} hits, "
        f"{edge.get('misses', 0):.0f} misses, {edge.get('origin_fetches', 0):.0f} origin fetches "
        f"({1000 * edge.get('origin_seconds', 0) / max(1, edge.get('origin_fetches', 0)):.1f} ms "
        "each on average), "
        f"{edge.get('purges', 0):.0f} purges; reflow's busiest thread waited for a core "
        f"{reflow['waited_share_median'] or 0:.0%} of a round (median)"
    )
    print(f"  goal: reflow all-fresh p99 <= {GOAL_MS:g} ms, 0 stale: {'met' if met else 'NOT met'}")
    report(
        "publish",
        comparisons,
        f"nginx proxy_cache_valid {args.peer_ttl:g}s (1 worker); [swr]: + use_stale updating",
        reflow=reflow,
        nginx_ttl=nginx,
        nginx_swr=stale,
        ratio_p99=round(nginx["all_fresh_p99_ms"] / p99, 1) if p99 > 0 else None,
        goal_ms=GOAL_MS,
        goal_met=met,
        peer_ttl_s=args.peer_ttl,
        connections_per_side=args.connections,
        interval_s=args.interval,
        rounds=args.rounds,
        busy_rounds=busy,
        loadavg=loads,
        pinning="servers on core 0 (taskset -c 0), readers on core 1",
        smoke=bool(args.smoke),
    )


if __name__ == "__main__":
    main()
