"""GET /docs in headless Chromium with no internet: Swagger UI renders the operations from assets consentd serves,
and the page asks nothing of any host but consentd's."""

from urllib.parse import urlsplit

from tests.e2e.conftest import NewContext
from tests.e2e.server import Consentd

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def test_docs_render_offline(api: Consentd, new_context: NewContext):
    context = new_context()
    requested: list[str] = []
    refused: list[str] = []

    def only_loopback(route) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).hostname in LOOPBACK or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.goto(f"{api.base_url}/docs")

    check = page.locator('.opblock.opblock-post:has(.opblock-summary-path[data-path="/v1/checks"])')
    check.wait_for(state="visible")
    assert page.locator(".opblock").count() > 20, "every operation is listed"
    # Opening the operation shows its request body: the document was read, not only the shell drawn.
    check.locator(".opblock-summary").click()
    page.locator(".opblock-body").first.wait_for(state="visible")

    assert refused == [], f"the docs page asked other hosts: {refused}"
    assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in requested), requested
    assert any(url.endswith("/openapi.json") for url in requested), requested
