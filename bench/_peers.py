"""Peers that live outside reflow's dependencies, each in a virtual environment of its own.

LocalStack's EventBridge matcher and ASL interpreter are the peers for the
pattern and flow benchmarks; they must never enter reflow's own environment,
so they are installed under ``bench/.venv-peers`` on first use. That
environment is made with Python >= 3.13 when the machine has one
(BENCHMARKS.md: LocalStack's Step Functions modules import only there). A
peer that runs on an older Python (its events engine works on 3.11) says so
with ``minimum``; on a machine without 3.13 it gets an environment of its
own, ``bench/.venv-peers-3.11`` say, made with the newest Python found, so
the pattern benchmark does not fail for want of an interpreter only the flow
benchmark needs. Benchmarks drive a peer through a small adapter script run
with that environment's interpreter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE / ".venv-peers"
LOCALSTACK = "localstack-core"
PREFERRED = (3, 13)  # what every LocalStack module imports on


def find_python(minimum: tuple[int, int] = PREFERRED) -> str:
    """An interpreter of at least ``minimum``: pythonX.Y on PATH, or a pyenv version."""
    candidates = [
        f"python{minimum[0]}.{minor}" for minor in range(minimum[1] + 2, minimum[1] - 1, -1)
    ]
    for name in candidates:
        found = shutil.which(name)
        if found and _version_of(found) >= minimum:
            return found
    pyenv = Path.home() / ".pyenv" / "versions"
    if pyenv.is_dir():
        for version in sorted(pyenv.iterdir(), reverse=True):
            python = version / "bin" / "python3"
            if python.exists() and _version_of(str(python)) >= minimum:
                return str(python)
    if sys.version_info[:2] >= minimum:
        return sys.executable
    raise RuntimeError(f"no Python >= {minimum[0]}.{minimum[1]} found for the peer environment")


def _version_of(python: str) -> tuple[int, int]:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return (0, 0)
    major, minor = out.stdout.split()
    return int(major), int(minor)


def peer_venv(minimum: tuple[int, int] = PREFERRED) -> tuple[Path, str | None]:
    """Where a peer needing Python >= ``minimum`` lives, and the Python to create it with.

    The shared ``bench/.venv-peers`` (made with Python >= 3.13) when it exists
    or can be made; otherwise, for a peer content with less, an environment
    named after the newest Python found. The Python is ``None`` when the
    environment already exists.
    """
    if (PEERS_VENV / "bin" / "python").exists():
        return PEERS_VENV, None
    try:
        return PEERS_VENV, find_python(PREFERRED)
    except RuntimeError:
        if minimum >= PREFERRED:
            raise
    python = find_python(minimum)
    major, minor = _version_of(python)
    venv = HERE / f".venv-peers-{major}.{minor}"
    return venv, None if (venv / "bin" / "python").exists() else python


def peer_python(
    packages: tuple[str, ...] = (LOCALSTACK,), minimum: tuple[int, int] = PREFERRED
) -> str:
    """The interpreter of the peers' environment, created and filled on first use."""
    venv, creator = peer_venv(minimum)
    python = venv / "bin" / "python"
    stamp = venv / (".installed-" + "-".join(sorted(packages)).replace("/", "_"))
    if creator is None and stamp.exists():
        return str(python)
    if creator is not None:
        print(f"creating {venv} for the peers", file=sys.stderr, flush=True)
        subprocess.run([creator, "-m", "venv", str(venv)], check=True)
    print(f"installing {', '.join(packages)} into {venv}", file=sys.stderr, flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *packages],
        check=True,
    )
    stamp.touch()
    return str(python)


class PeerProcess:
    """An adapter script run with the peers' interpreter, spoken to in JSON lines.

    Each request is one JSON object on a line; each answer one line back. The
    adapter runs in bench/.venv-peers so the peer never enters reflow's own
    environment.
    """

    def __init__(
        self, script: Path, packages: tuple[str, ...], minimum: tuple[int, int] = PREFERRED
    ) -> None:
        self.script = script
        self.process = subprocess.Popen(
            [peer_python(packages, minimum), str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request; return the adapter's answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer adapter {self.script.name} exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        """End the adapter (it stops at end of input)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
