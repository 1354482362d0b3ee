"""``reflow new`` then ``reflow run``, as a user does it: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REFLOW = str(Path(sys.executable).with_name("reflow"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scaffold(tmp_path: Path) -> Path:
    target = tmp_path / "site"
    subprocess.run([REFLOW, "new", str(target), "--name", "site"], check=True, capture_output=True)
    return target


def test_the_scaffolded_apps_own_tests_pass(tmp_path: Path) -> None:
    target = scaffold(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=target,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_reflow_run_serves_the_admin_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    target = scaffold(tmp_path)
    admin_port, edge_port = free_port(), free_port()
    env = dict(os.environ, REFLOW_DATA_DIR=str(tmp_path / "data"))
    env.pop("REFLOW_BACKEND", None)
    process = subprocess.Popen(
        [
            REFLOW,
            "run",
            "app.py",
            "--admin-port",
            str(admin_port),
            "--edge-port",
            str(edge_port),
        ],
        cwd=target,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{admin_port}/api/status", timeout=2
                ) as reply:
                    status = json.load(reply)
                break
            except OSError:
                time.sleep(0.1)
        assert status is not None, "reflow run never answered on the admin port"
        assert status["app"] == "site"
        assert status["backend"] == "sqlite"  # the embedded default
        assert status["registered"]["flows"] == ["publish"]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
