"""Shared fixtures: where the real servers are, and how to insist on them in CI."""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, settings

from tests import hangdump

# The machine is shared and noisy: a per-example deadline measures the
# neighbours, not the code. Property tests bound their own sizes instead.
settings.register_profile(
    "reflow", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("reflow")

# A hung test must end the run, not hold CI until its own time limit.
# pytest-timeout (300 s, thread method) reports first, but its timer is a
# Python thread that needs the GIL, and a process can livelock the GIL (a
# pending asynchronous exception under coverage's tracer did: see
# reflow/functions/pools.py). faulthandler's watchdog is a C thread: past
# HARD_LIMIT it prints every thread's stack and exits without the GIL.
HARD_LIMIT = float(os.environ.get("REFLOW_TEST_HARD_LIMIT", "420"))
_HANG_FD = "reflow_hang_fd"


def pytest_configure(config: pytest.Config) -> None:
    """Keep a copy of the real stderr, which output capturing replaces during tests."""
    setattr(config, _HANG_FD, os.dup(sys.stderr.fileno()))
    # And a little before pytest-timeout ends a hung test, every asyncio
    # task's chain of awaits: its thread dump shows a waiting loop as select().
    if not config.pluginmanager.is_registered(hangdump):
        config.pluginmanager.register(hangdump, "reflow-hangdump")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Arm the C-level hard limit around each test (setup, call and teardown)."""
    fd = getattr(item.config, _HANG_FD, None)
    if fd is not None:
        faulthandler.dump_traceback_later(HARD_LIMIT, exit=True, file=fd)
    try:
        yield
    finally:
        if fd is not None:
            faulthandler.cancel_dump_traceback_later()


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


# Every test that touches Redis works under a prefix of its own ("test-…:",
# "fault-…:", "multi-…:"), so runs never see each other's keys. Under CI=true
# the run is alone on the server, so it sweeps those prefixes when it ends;
# a developer's run leaves them (another run may be using them right now).
TEST_KEY_PATTERNS = ("test-*", "fault-*", "multi-*")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true, delete the keys test runs left on the shared Redis."""
    if not IN_CI or not server_reachable(REDIS_URL):
        return
    import redis  # the redis extra is installed wherever the tests run

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for pattern in TEST_KEY_PATTERNS:
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
    finally:
        client.close()
