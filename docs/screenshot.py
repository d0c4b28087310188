"""Take docs/banner.png: the demo shop with its cookie banner, as a first-time visitor sees it.

    .venv/bin/python docs/screenshot.py

Starts `consentd serve` on a throwaway SQLite database (as the browser tests do), opens /demo in
headless Chromium at 1280x800, waits for the banner and saves the picture.
"""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.server import CHROMIUM, CHROMIUM_ARGS, start_consentd  # noqa: E402

OUTPUT = ROOT / "docs" / "banner.png"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="consentd-screenshot-") as workdir:
        server = start_consentd(Path(workdir))
        try:
            server.banner_key(server.base_url)  # /demo embeds a key that allows the server's own origin
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 800})
                    page.goto(server.base_url + "/demo")
                    page.wait_for_selector("#consentd-banner", state="visible", timeout=10_000)
                    page.screenshot(path=str(OUTPUT))
                finally:
                    browser.close()
        finally:
            server.stop()
    print(OUTPUT)


if __name__ == "__main__":
    main()
