"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, and a running demo.

Playwright never downloads a browser here: it launches the system's
Chromium (``/usr/bin/chromium``, or ``REFLOW_TEST_CHROMIUM``) with a fresh
profile per test. Without Chromium or the ``playwright`` package the tests
skip, naming what is missing; under ``CI=true`` they fail instead, because
``.ci/run`` installs Chromium and ``make`` installs the dev extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import IN_CI
from tests.functional.test_reflow_run import REFLOW, scaffold, start, stop, wait_for_status

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, ViewportSize

CHROMIUM = os.environ.get("REFLOW_TEST_CHROMIUM", "/usr/bin/chromium")

# As root in a sandboxed machine with no way out: no setuid sandbox, no GPU,
# and none of Chromium's own calls home (they are refused, many at a time).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

VIEWPORT: ViewportSize = {"width": 1024, "height": 700}


def require_chromium() -> None:
    """Skip when Chromium or Playwright is missing; under CI=true, fail instead."""
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(
            f"Chromium is not installed at {CHROMIUM} "
            "(apt-get install chromium, or set REFLOW_TEST_CHROMIUM)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is not installed (pip install -e '.[dev]')")
    if not problems:
        return
    message = "; ".join(problems)
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    """Decide skip or fail before any other fixture starts a server."""
    require_chromium()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """Headless Chromium with a profile folder of its own, closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Page:
    """The browser's tab, which gives up on a missing element after 10 s, not Playwright's 30."""
    tab = browser.pages[0] if browser.pages else browser.new_page()
    tab.set_default_timeout(10_000)
    return tab


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    """What the tab reports as broken from now on: console errors, script errors, failed loads."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    return errors


@dataclass
class Demo:
    """``reflow new`` + ``reflow run``: the demo site a user opens, on free ports."""

    folder: Path
    edge: str
    admin: str
    env: dict[str, str]

    def put_with_cli(self, event: dict[str, Any]) -> None:
        """Publish as the welcome page says: ``reflow events put`` in the app's folder."""
        subprocess.run(
            [REFLOW, "events", "put", json.dumps(event)],
            cwd=self.folder,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def put_with_admin_api(self, event: dict[str, Any]) -> None:
        """Publish as the README's curl does: ``POST /api/events``."""
        request = urllib.request.Request(
            f"{self.admin}/api/events",
            data=json.dumps({"entries": [event]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert len(json.load(reply)["ids"]) == 1


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """The scaffolded demo app, serving; stopped with SIGTERM (exit 0) afterwards."""
    folder = scaffold(tmp_path)
    process, admin_port, edge_port, env = start(folder, tmp_path / "data")
    try:
        wait_for_status(process, admin_port)
        yield Demo(folder, f"http://127.0.0.1:{edge_port}", f"http://127.0.0.1:{admin_port}", env)
        stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def article(body: str, *, slug: str = "hello", title: str = "Hello") -> dict[str, Any]:
    """The event the scaffold's ``render`` rule takes (its source is the app's name)."""
    return {
        "source": "site.cms",
        "detail-type": "ArticlePublished",
        "detail": {"slug": slug, "title": title, "body": body},
    }


def open_until(page: Page, url: str, selector: str, *, seconds: float = 20) -> Any:
    """Navigate to ``url`` until ``selector`` is on the page; the last response.

    Publishing is asynchronous (bus, rule, function, purge), so a reader who
    reloads right after a put may still see the old page; this is that reader
    reloading. Each attempt is a fresh navigation, never a cached copy.
    """
    deadline = time.monotonic() + seconds
    while True:
        response = page.goto(url)
        if page.locator(selector).count() > 0:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never showed {selector!r}; it shows {page.content()}")
        time.sleep(0.1)
