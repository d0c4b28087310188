"""Browser tests' fixtures: one consentd server and one shop (another origin) per module, one headless
Chromium per module, and a fresh browser context (fresh localStorage: a new device) per test."""

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.server import CHROMIUM, CHROMIUM_ARGS, Consentd, StaticSite, start_consentd

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - reported below
    sync_playwright = None

SHOP_PATH = "/shop.html"

# The shop that embeds the banner. window.__gtagCalls records every gtag() call in order; each gated
# script writes to an element, the analytics one also counts its runs.
SHOP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Test shop</title><link rel="icon" href="data:,">
<script>
  window.__gtagCalls = []; window.dataLayer = [];
  function gtag() { __gtagCalls.push(JSON.parse(JSON.stringify(Array.from(arguments)))); dataLayer.push(arguments); }
  window.__changes = [];
  document.addEventListener('consentd:change', function (e) { __changes.push(e.detail.choices); });
</script>
<script src="{api}/v1/public/banner.js" data-key="{key}" async></script>
</head><body>
<h1>Test shop</h1>
<p>Analytics: <span id="analytics">blocked</span>. Advertising: <span id="ads">blocked</span>.</p>
<p><a id="settings-link" href="#cookie-settings">Cookie settings</a>
   <button id="settings-button" type="button" data-consentd-settings>Privacy settings</button></p>
<script type="text/plain" data-category="cookies_analytics">
  document.getElementById('analytics').textContent = 'loaded';
  window.__analyticsRuns = (window.__analyticsRuns || 0) + 1;
</script>
<script type="text/plain" data-category="cookies_advertising">document.getElementById('ads').textContent = 'loaded';</script>
</body></html>
"""


def _require_browser() -> None:
    """CI never skips the browser tests; a developer without Chromium or Playwright is warned loudly."""
    missing = []
    if sync_playwright is None:
        missing.append("playwright (pip)")
    if not Path(CHROMIUM).exists():
        missing.append(CHROMIUM)
    if not missing:
        return
    message = f"browser tests need {' and '.join(missing)}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + ": CI never skips them")
    warnings.warn(f"\n\n*** BROWSER TESTS SKIPPED: {message} ***\n", stacklevel=1)
    pytest.skip(message)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consentd]:
    _require_browser()
    server = start_consentd(tmp_path_factory.mktemp("e2e"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shop(api: Consentd) -> Iterator[StaticSite]:
    """The shop on its own origin, with a key that allows only that origin."""
    site = StaticSite().start()
    try:
        key = api.banner_key(site.origin)
        site.pages[SHOP_PATH] = lambda: SHOP_PAGE.replace("{api}", api.base_url).replace("{key}", key)
        yield site
    finally:
        site.stop()


@pytest.fixture(scope="module")
def browser(api: Consentd) -> Iterator["Browser"]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Console:
    """Console errors and uncaught exceptions of every page of a context."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def allow(self, text: str) -> None:
        """A test that provokes a failure on purpose allows the error the browser logs for it."""
        self.allowed.append(text)

    def unexpected(self) -> list[str]:
        return [error for error in self.errors if not any(text in error for text in self.allowed)]

    def watch(self, page: "Page") -> None:
        page.on("console", lambda message: message.type == "error" and self.errors.append(
            f"{message.text} ({message.location.get('url')})"
        ))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))


@pytest.fixture
def console() -> Console:
    return Console()


NewContext = Callable[..., "BrowserContext"]


@pytest.fixture
def new_context(browser: "Browser", console: Console) -> Iterator[NewContext]:
    """new_context(**options): a fresh context (new localStorage, so a new device); closed after the test,
    which then fails if a page logged an error to the console."""
    contexts: list[BrowserContext] = []

    def make(**options: object) -> "BrowserContext":
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        context.on("page", console.watch)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert console.unexpected() == [], f"the pages logged errors: {console.unexpected()}"


@pytest.fixture
def page(new_context: NewContext) -> "Page":
    """A page in a fresh context."""
    return new_context().new_page()
