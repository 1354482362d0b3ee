"""bench/edge.py stopped by SIGTERM or SIGINT leaves none of its servers running.

The benchmark starts nginx, Varnish, two reflow edges and wrk; SIGTERM's
default action ended it without its cleanup, and every server lived on. The
run here starts in a session of its own, is signalled once it measures (every
server up, caches warm, wrk running) and must leave nothing in that session.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# The tools bench/edge.py needs, and the Debian packages it installs them from.
TOOLS = {"nginx": "nginx-light", "wrk": "wrk", "varnishd": "varnish"}


def missing_tools() -> list[str]:
    return [
        package
        for tool, package in TOOLS.items()
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin"))
    ]


def session(sid: int) -> dict[int, str]:
    """The live (not zombie) processes of session ``sid``: pid -> command name."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, _pgrp, their_sid = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(their_sid) == sid and state != "Z":
            found[int(entry)] = name
    return found


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_edge_benchmark_leaves_no_server_running(signum: signal.Signals) -> None:
    missing = missing_tools()
    installs = os.environ.get("CI") == "true"
    if missing and not installs:
        pytest.skip(
            f"not installed: {', '.join(missing)} (bench/edge.py would apt-get install "
            "them, as it does under CI=true)"
        )
    bench = subprocess.Popen(
        [sys.executable, "bench/edge.py", "--smoke"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its session holds everything it starts
    )
    try:
        # wrk runs once every server is up and every cache warm.
        deadline = time.monotonic() + (300 if missing else 40)
        while "wrk" not in session(bench.pid).values():
            assert bench.poll() is None, f"the benchmark ended first ({bench.returncode})"
            assert time.monotonic() < deadline, "the benchmark never started measuring"
            time.sleep(0.02)
        running = list(session(bench.pid).values())
        # nginx, the benchmark and its two reflow edges (Varnish too, when it starts).
        assert "nginx" in running and running.count("python") >= 3, running
        bench.send_signal(signum)
        bench.wait(30)
        assert session(bench.pid) == {}
        assert bench.returncode == 128 + signum  # ended by the handler, after the cleanup
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in session(bench.pid):
            os.kill(pid, signal.SIGKILL)  # what the benchmark left behind
