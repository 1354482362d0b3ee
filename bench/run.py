"""Run every benchmark under bench/, or each in its smoke mode (``--smoke``).

Each benchmark is a script of its own (``python bench/edge.py``); this runner
only calls them in turn, passes ``--smoke`` through, and fails if any fails.
CI runs the smoke mode to prove the benchmarks still run; it never asserts a
speed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != "run.py" and not p.name.startswith("_")
    )
    if args.names:
        scripts = [p for p in scripts if p.stem in args.names]
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        command = [sys.executable, str(script)] + (["--smoke"] if args.smoke else [])
        print(f"== {script.name} ({'smoke' if args.smoke else 'full'})", flush=True)
        started = time.monotonic()
        result = subprocess.run(command, check=False)
        took = time.monotonic() - started
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"== {script.name}: {status} in {took:.1f} s", flush=True)
        if result.returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
