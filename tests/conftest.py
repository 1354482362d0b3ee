"""Shared fixtures: where the real servers are, and how to insist on them in CI."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, settings

# The machine is shared and noisy: a per-example deadline measures the
# neighbours, not the code. Property tests bound their own sizes instead.
settings.register_profile(
    "reflow", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("reflow")

REDIS_URL = os.environ.get("REFLOW_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def server_reachable(url: str) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1.0):
            return True
    except OSError:
        return False


def require_server(url: str, what: str) -> None:
    """Skip when the server is absent; under CI=true, fail instead."""
    if server_reachable(url):
        return
    message = f"{what} is not reachable at {url} (set REFLOW_TEST_REDIS to point elsewhere)"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)
