"""A data-subject request's verification link in a real headless Chromium, against a real `consentd serve`:
opening the page confirms nothing, pressing its button does, and the token never reaches a server in a URL."""

from playwright.sync_api import expect

from tests.e2e.conftest import NewContext
from tests.e2e.server import Consentd


def filed_with_link(api: Consentd, email: str) -> tuple[str, str]:
    with api.admin() as http:
        filed = http.post("/v1/requests", json={"type": "erasure", "subject": {"email": email}, "received_via": "web"})
        assert filed.status_code == 201, filed.text
        request_id = filed.json()["request_id"]
        link = http.post(f"/v1/requests/{request_id}/verification-link")
        assert link.status_code == 200, link.text
        return request_id, link.json()["url"]


def status_of(api: Consentd, request_id: str) -> dict:
    with api.admin() as http:
        return http.get(f"/v1/requests/{request_id}").json()


def test_the_person_confirms_with_the_button_and_the_token_stays_in_the_fragment(api: Consentd, new_context: NewContext):
    request_id, url = filed_with_link(api, "link.person@example.org")
    token = url.split("#")[1]
    context = new_context()
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    page.goto(url)
    button = page.get_by_role("button", name="Confirm my request")
    expect(button).to_be_enabled()
    # Loaded, not confirmed; the token is already out of the address bar.
    assert status_of(api, request_id)["status"] == "pending_verification"
    assert token not in page.url
    with page.expect_response(lambda response: response.url.endswith("/v1/public/requests/verify")) as posted:
        button.click()
    assert posted.value.status == 200
    expect(page.get_by_role("status")).to_contain_text("your request is confirmed")
    request = status_of(api, request_id)
    assert (request["status"], request["verified"]["method"]) == ("in_progress", "email_link")
    assert requested and not any(token in seen for seen in requested), requested
    assert token not in api.log()


def test_an_incomplete_or_expired_link_says_so(api: Consentd, new_context: NewContext, console):
    _, url = filed_with_link(api, "late.person@example.org")
    context = new_context()
    page = context.new_page()
    page.goto(url.split("#")[0] + "#tooshort")
    expect(page.get_by_role("status")).to_contain_text("This link is incomplete")
    expect(page.get_by_role("button", name="Confirm my request")).to_be_disabled()
    console.allow("404")
    page = context.new_page()  # a fragment change alone would not load the page again
    page.goto(url.split("#")[0] + "#" + "A" * 43)
    page.get_by_role("button", name="Confirm my request").click()
    expect(page.get_by_role("status")).to_contain_text("expired or was replaced")
