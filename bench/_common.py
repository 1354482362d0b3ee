"""What every benchmark shares: alternating rounds, medians, the table, the JSON line.

BENCHMARKS.md's rules, in code: ours and the peer do the same work in the
same run, alternating A B A B over several rounds after a warm-up, and the
figures reported are each side's median and the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def parse_args(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """The common flags: ``--smoke`` (tiny sizes, one round) and ``--rounds``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round (CI)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 1
    return args


@dataclass
class Comparison:
    """One measured quantity, ours against the peer's, over alternating rounds.

    ``higher_is_better`` is True for throughputs (ops/s) and False for
    latencies; the ratio is always "how many times better reflow is".
    """

    name: str
    unit: str
    higher_is_better: bool = True
    ours: list[float] = field(default_factory=list)
    peer: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        pairs = zip(self.ours, self.peer, strict=False)
        if self.higher_is_better:
            return [o / p for o, p in pairs if p > 0]
        return [p / o for o, p in pairs if o > 0]

    def summary(self) -> dict[str, Any]:
        ratios = self.ratios()
        return {
            "name": self.name,
            "unit": self.unit,
            "ours": statistics.median(self.ours) if self.ours else None,
            "peer": statistics.median(self.peer) if self.peer else None,
            "ratio": statistics.median(ratios) if ratios else None,
            "rounds": len(ratios),
        }


def alternate(
    rounds: int,
    ours: Callable[[], float],
    peer: Callable[[], float],
    comparison: Comparison,
    *,
    warmup: bool = True,
) -> Comparison:
    """Run ``ours`` and ``peer`` alternately; each returns its figure for one round."""
    if warmup:
        ours()
        peer()
    for index in range(rounds):
        # Swap who goes first each round so that drift hits both sides alike.
        if index % 2 == 0:
            comparison.ours.append(ours())
            comparison.peer.append(peer())
        else:
            comparison.peer.append(peer())
            comparison.ours.append(ours())
    return comparison


def rate(operations: int, seconds: float) -> float:
    """Operations per second."""
    return operations / seconds if seconds > 0 else float("inf")


def timed(work: Callable[[], Any]) -> float:
    """Seconds taken by ``work()`` on the monotonic clock."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile (0.5, 0.99) by nearest rank."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def git_commit() -> str:
    """The short commit the benchmark ran at (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def machine_is_quiet(threshold: float = 0.5) -> bool:
    """Whether the 1-minute load average per core is below ``threshold``."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return True
    return load / (os.cpu_count() or 1) < threshold


def report(benchmark: str, comparisons: Sequence[Comparison], peer_name: str, **extra: Any) -> None:
    """Print the table, then the JSON line (always the script's last line)."""
    rows = [c.summary() for c in comparisons]
    width = max([len(r["name"]) for r in rows] + [10])
    print(f"\n{benchmark}: reflow vs {peer_name}  (commit {git_commit()})")
    print(f"{'measure'.ljust(width)}  {'unit':>10}  {'reflow':>14}  {'peer':>14}  {'ratio':>8}")
    for r in rows:
        ours = "-" if r["ours"] is None else f"{r['ours']:,.1f}"
        peer = "-" if r["peer"] is None else f"{r['peer']:,.1f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        print(f"{r['name'].ljust(width)}  {r['unit']:>10}  {ours:>14}  {peer:>14}  {ratio:>8}")
    print("(ratio > 1 means reflow is better: higher throughput or lower latency)")
    line = {"benchmark": benchmark, "peer": peer_name, "commit": git_commit(), "results": rows}
    line.update(extra)
    print(json.dumps(line, sort_keys=True))
