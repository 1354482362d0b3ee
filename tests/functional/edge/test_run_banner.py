"""``reflow run APP --edge-port 0``: the banner names the port the edge actually bound."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REFLOW = str(Path(sys.executable).with_name("reflow"))

APP = """
from reflow import App

app = App("banner")
app.bucket("pages")
app.edge_origin("*", "bucket:pages")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_banner_shows_the_bound_edge_port_when_asked_for_port_0(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    env = dict(os.environ, REFLOW_DATA_DIR=str(tmp_path / "data"))
    env.pop("REFLOW_BACKEND", None)
    process = subprocess.Popen(
        [REFLOW, "run", "app.py", "--edge-port", "0", "--admin-port", str(free_port())],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = None
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline and port is None:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"edge on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
        assert port is not None, "".join(lines)
        assert port != 0
        # The edge answers on that port (a 404 from the empty bucket, through the edge).
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/missing", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            assert exc.headers["X-Cache"] is not None
        else:  # pragma: no cover - the bucket is empty
            raise AssertionError("expected a 404")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
