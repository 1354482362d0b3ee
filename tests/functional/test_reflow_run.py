"""``reflow new`` then ``reflow run``, as a user does it: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


def start(target: Path, data: Path) -> tuple[subprocess.Popen[str], int, int, dict[str, str]]:
    """``reflow run app.py`` on free ports; the process, its ports and its environment."""
    admin_port, edge_port = free_port(), free_port()
    env = dict(os.environ, REFLOW_DATA_DIR=str(data))
    env.pop("REFLOW_BACKEND", None)
    process = subprocess.Popen(
        [REFLOW, "run", "app.py", "--admin-port", str(admin_port), "--edge-port", str(edge_port)],
        cwd=target,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, admin_port, edge_port, env


def wait_for_status(process: subprocess.Popen[str], admin_port: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{admin_port}/api/status", timeout=2
            ) as reply:
                status: dict[str, Any] = json.load(reply)
                return status
        except OSError:
            time.sleep(0.1)
    raise AssertionError("reflow run never answered on the admin port")


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, then the output; the exit status must be 0."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "stopped" in output
    return output


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body; 4xx/5xx are answers, not errors."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def poll(url: str, wanted: bytes) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` until its body holds ``wanted`` (at most 20 s)."""
    answer: tuple[int, dict[str, str], bytes] = (0, {}, b"")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = get(url)
        if wanted in answer[2]:
            return answer
        time.sleep(0.1)
    raise AssertionError(f"{url} never served {wanted!r}; last answer {answer}")


def published(body: str) -> dict[str, Any]:
    return {
        "source": "site.cms",
        "detail-type": "ArticlePublished",
        "detail": {"slug": "hello", "title": "Hello", "body": body},
    }


def test_reflow_run_serves_the_admin_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    target = scaffold(tmp_path)
    process, admin_port, _, _ = start(target, tmp_path / "data")
    try:
        status = wait_for_status(process, admin_port)
        assert status["app"] == "site"
        assert status["backend"] == "sqlite"  # the embedded default
        assert status["registered"]["flows"] == ["publish"]
        stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_published_article_reaches_the_edge_and_an_update_replaces_it(tmp_path: Path) -> None:
    target = scaffold(tmp_path)
    process, admin_port, edge_port, env = start(target, tmp_path / "data")
    edge = f"http://127.0.0.1:{edge_port}"
    try:
        wait_for_status(process, admin_port)
        # Nothing is published yet: the welcome hook turns the bucket's 404 into a how-to.
        status, headers, body = get(f"{edge}/")
        assert (status, headers["x-frame-options"]) == (200, "DENY")
        assert b"Nothing is published yet" in body and b"reflow events put" in body

        # The CLI puts the event in the same embedded backend the server reads.
        subprocess.run(
            [REFLOW, "events", "put", json.dumps(published("First version."))],
            cwd=target,
            env=env,
            check=True,
            capture_output=True,
            timeout=30,
        )
        status, headers, body = poll(f"{edge}/articles/hello", b"First version.")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["strict-transport-security"].startswith("max-age=")
        assert headers["x-cache"] in ("Miss", "Hit")
        # The second read comes from the edge's cache.
        assert get(f"{edge}/articles/hello")[1]["x-cache"] == "Hit"
        # The purge of "/" replaced the cached welcome page with the real home page.
        home = poll(f"{edge}/", b'href="/articles/hello"')
        assert home[0] == 200 and b"Nothing is published yet" not in home[2]

        # An update through the admin API: the purge means no stale copy is served.
        request = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/api/events",
            data=json.dumps({"entries": [published("Second version.")]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert len(json.load(reply)["ids"]) == 1
        status, headers, body = poll(f"{edge}/articles/hello", b"Second version.")
        assert b"First version." not in body
        assert headers["x-cache"] == "Miss"  # fetched afresh after the purge
        assert get(f"{edge}/articles/hello")[2] == body
        stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
