"""Every page the demo site serves, as a reader sees it in Chromium.

The demo is ``reflow new`` + ``reflow run`` on free ports (tests/browser/conftest.py):
the welcome page at ``/`` until something is published, the home page listing
articles, each article's page, and the not-found page; every response
carries the security headers of the app's viewer-response hook.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

from tests.browser.conftest import VIEWPORT, Demo, article, open_until

if TYPE_CHECKING:  # imported by the fixtures, which skip when Playwright is missing
    from playwright.sync_api import Page, Response

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "strict-transport-security": "max-age=63072000; includeSubDomains",
}


def assert_secure_html(response: Response | None) -> None:
    """The browser received an HTML page with its charset and the app's security headers."""
    assert response is not None
    headers = response.all_headers()
    assert headers["content-type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, headers)


def assert_fits_the_window(page: Page) -> None:
    """Nothing runs off the side: no horizontal scrolling at the test's window width."""
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than the window"


def png_size_and_colours(data: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in a PNG's pixel rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, width, height, pixels = 8, 0, 0, b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunk = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            pixels += chunk
        offset += 12 + length
    return width, height, len(set(zlib.decompress(pixels)))


def test_the_welcome_page_tells_a_reader_how_to_publish(
    demo: Demo, page: Page, console_errors: list[str]
) -> None:
    response = page.goto(f"{demo.edge}/")
    assert response is not None and response.status == 200
    assert_secure_html(response)
    assert page.title() == "site"
    assert page.locator("h1").inner_text() == "site"
    assert "Nothing is published yet" in page.locator("body").inner_text()
    command = page.locator("pre").inner_text()
    assert command.startswith("reflow events put '") and '"ArticlePublished"' in command
    # The command is shown whole, wrapped inside the window, not cut off at its edge.
    assert page.locator("pre").is_visible()
    assert_fits_the_window(page)
    assert page.evaluate("document.characterSet") == "UTF-8"
    assert console_errors == []  # not even a favicon 404


def test_a_screenshot_of_the_welcome_page_is_a_png_of_the_window(demo: Demo, page: Page) -> None:
    page.goto(f"{demo.edge}/")
    shot = page.screenshot()
    width, height, colours = png_size_and_colours(shot)
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    # Text on a background: many shades, where a blank page would give one or two.
    assert colours > 16


def test_a_published_article_is_listed_on_the_home_page_and_opens_from_it(
    demo: Demo, page: Page, console_errors: list[str]
) -> None:
    page.goto(f"{demo.edge}/")
    # Non-ASCII text checks the charset end to end: event, bucket, edge, browser.
    demo.put_with_cli(article("Grüße aus Köln — ça va?", title="Café ☕"))

    home = open_until(page, f"{demo.edge}/", 'a[href="/articles/hello"]')
    assert home.status == 200
    assert_secure_html(home)
    assert page.title() == "site"
    assert "Nothing is published yet" not in page.locator("body").inner_text()
    assert page.locator("li a").all_inner_texts() == ["Café ☕"]

    with page.expect_navigation() as navigation:
        page.locator("a", has_text="Café ☕").click()
    opened = navigation.value
    assert opened is not None and opened.status == 200
    assert page.url == f"{demo.edge}/articles/hello"
    assert_secure_html(opened)
    assert page.title() == "Café ☕"
    assert page.locator("h1").inner_text() == "Café ☕"
    assert "Grüße aus Köln — ça va?" in page.locator("body").inner_text()
    assert_fits_the_window(page)

    # The article links back to the home page.
    page.locator("a", has_text="All articles").click()
    page.wait_for_url(f"{demo.edge}/")
    assert page.locator("li a").all_inner_texts() == ["Café ☕"]
    assert console_errors == []


def test_the_home_page_lists_every_article_in_slug_order(demo: Demo, page: Page) -> None:
    demo.put_with_admin_api(article("Second.", slug="second", title="Second"))
    demo.put_with_admin_api(article("First.", slug="first", title="First"))
    open_until(page, f"{demo.edge}/", 'a[href="/articles/first"]')
    links = page.locator("li a")
    assert links.all_inner_texts() == ["First", "Second"]
    assert [links.nth(i).get_attribute("href") for i in range(2)] == [
        "/articles/first",
        "/articles/second",
    ]
    # Each link leads to its own article, not a 404.
    for title in ("First", "Second"):
        page.goto(f"{demo.edge}/")
        page.locator("a", has_text=title).click()
        page.wait_for_url(f"{demo.edge}/articles/{title.lower()}")
        assert page.locator("h1").inner_text() == title
        assert f"{title}." in page.locator("body").inner_text()


def test_an_updated_article_shows_its_new_text_after_the_purge(demo: Demo, page: Page) -> None:
    url = f"{demo.edge}/articles/hello"
    demo.put_with_admin_api(article("First version."))
    open_until(page, url, "text=First version.")
    # Read it again until the edge serves it from its cache: the old text is
    # cached now, so the new one can only come through the purge. (A read
    # that lands between render's write and its purge is fetched again.)
    for _ in range(20):
        cached = page.goto(url)
        assert cached is not None and "First version." in page.locator("body").inner_text()
        if cached.all_headers()["x-cache"] == "Hit":
            break
    else:
        raise AssertionError("the edge never served the article from its cache")

    demo.put_with_admin_api(article("Second version."))
    fresh = open_until(page, url, "text=Second version.")
    body = page.locator("body").inner_text()
    assert "First version." not in body
    assert fresh.all_headers()["x-cache"] == "Miss"  # fetched afresh after the purge
    assert_secure_html(fresh)
    # Reloading keeps the new text: no stale copy anywhere between edge and browser.
    for _ in range(3):
        again = page.reload()
        assert again is not None and again.status == 200
        assert "Second version." in page.locator("body").inner_text()
        assert "First version." not in page.locator("body").inner_text()


def test_an_unknown_path_shows_the_not_found_page_with_a_way_home(demo: Demo, page: Page) -> None:
    response = page.goto(f"{demo.edge}/no/such/page")
    assert response is not None and response.status == 404
    assert_secure_html(response)
    assert page.title() == "Page not found"
    assert page.locator("h1").inner_text() == "Page not found"
    assert "reflow events put" not in page.locator("body").inner_text()
    assert_fits_the_window(page)

    page.locator("a", has_text="All articles").click()
    page.wait_for_url(f"{demo.edge}/")
    assert "Nothing is published yet" in page.locator("body").inner_text()


def test_the_frame_options_header_stops_another_page_framing_the_site(
    demo: Demo, page: Page
) -> None:
    # The header does its job in the browser: Chromium refuses to show the
    # site inside a frame, and puts its error page there instead.
    page.set_content(f'<iframe src="{demo.edge}/"></iframe>', wait_until="load")
    framed = page.frames[1]
    assert framed.url == "chrome-error://chromewebdata/"
    assert page.frame_locator("iframe").locator("text=Nothing is published yet").count() == 0
    # The same page, opened directly, does show.
    page.goto(f"{demo.edge}/")
    assert page.locator("text=Nothing is published yet").count() == 1
