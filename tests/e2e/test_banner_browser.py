"""The cookie banner in a real headless Chromium: a shop on one origin embeds banner.js from the consentd
server on another, so CORS and its preflights are exercised for real. Each test has a fresh browser
context, so a new device; the keyboard test never touches the mouse."""

import json
import re
import uuid

from playwright.sync_api import Page, Response, expect

from tests.e2e.conftest import SHOP_PATH, Console, NewContext
from tests.e2e.server import Consentd, StaticSite

DIALOG = "#consentd-banner"
ACCEPT = '[data-consentd-action="accept_all"]'
REJECT = '[data-consentd-action="reject_all"]'
MANAGE = '[data-consentd-action="manage"]'
SAVE = '[data-consentd-action="save"]'
SIGNALS = {"ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"}
ALL_DENIED = dict.fromkeys(SIGNALS, "denied")


def open_shop(page: Page, shop: StaticSite) -> Page:
    page.goto(shop.origin + SHOP_PATH)
    return page


def category(key: str) -> str:
    return f'[data-consentd-category="{key}"]'


def is_choice_post(response: Response) -> bool:
    return "/v1/public/cookie-consents?" in response.url and response.request.method == "POST"


def choose(page: Page, button: str) -> dict:
    """Press a banner button; the POST's answer (checked to be a 201), and its request body under "sent"."""
    with page.expect_response(is_choice_post) as posted:
        page.click(button)
    response = posted.value
    assert response.status == 201, response.text()
    answer = response.json()
    answer["sent"] = json.loads(response.request.post_data or "{}")
    expect(page.locator(DIALOG)).to_be_hidden()
    return answer


def consent_calls(page: Page, kind: str) -> list[dict]:
    return [call[2] for call in page.evaluate("window.__gtagCalls") if call[:2] == ["consent", kind]]


def focused_action(page: Page) -> str | None:
    return page.evaluate("document.activeElement && document.activeElement.getAttribute('data-consentd-action')")


def subject_of(api: Consentd, page: Page) -> str:
    device_id = page.evaluate("window.consentd.deviceId()")
    with api.admin() as http:
        found = http.post("/v1/subjects/lookup", json={"device_id": device_id})
    assert found.status_code == 200, found.text
    return found.json()["subject_id"]


def test_banner_is_a_labelled_dialog_with_equal_accept_and_reject(page: Page, shop: StaticSite):
    open_shop(page, shop)
    dialog = page.locator(DIALOG)
    expect(dialog).to_be_visible()
    expect(dialog).to_have_attribute("role", "dialog")
    expect(dialog).to_have_attribute("aria-modal", "false")
    title_id = dialog.get_attribute("aria-labelledby")
    assert title_id and page.locator(f"#{title_id}").inner_text().strip()
    assert page.locator(f"#{dialog.get_attribute('aria-describedby')}").inner_text().strip()
    expect(page.get_by_role("dialog")).to_have_accessible_name(page.locator(f"#{title_id}").inner_text().strip())
    expect(page.get_by_role("button", name="Accept all")).to_be_visible()
    expect(page.get_by_role("button", name="Reject all")).to_be_visible()

    # Equal prominence: the same box and the same look.
    looks = page.evaluate(
        """(selectors) => selectors.map((s) => {
            const b = document.querySelector(s), c = getComputedStyle(b), r = b.getBoundingClientRect();
            return {width: Math.round(r.width), height: Math.round(r.height), font: c.font, color: c.color,
                    background: c.backgroundColor, border: c.border, radius: c.borderRadius, padding: c.padding};
        })""",
        [ACCEPT, REJECT],
    )
    assert looks[0] == looks[1], looks
    assert looks[0]["width"] > 40 and looks[0]["height"] >= 24
    # Nothing gated ran while the visitor has not chosen, and Consent Mode stays at its denied default.
    expect(page.locator("#analytics")).to_have_text("blocked")
    assert consent_calls(page, "update") == []
    assert page.evaluate("window.consentd.choices()") is None


def test_keyboard_only_accept_runs_gated_scripts_and_grants_consent_mode(page: Page, shop: StaticSite):
    open_shop(page, shop)
    expect(page.locator(DIALOG)).to_be_visible()
    # Focus moved into the banner (its heading: no button is nudged); Tab reaches the buttons in order.
    assert page.evaluate("!!document.activeElement.closest('#consentd-banner')")
    for _ in range(4):
        if focused_action(page) == "accept_all":
            break
        page.keyboard.press("Tab")
        assert page.evaluate("!!document.activeElement.closest('#consentd-banner')")
    assert focused_action(page) == "accept_all"
    page.keyboard.press("Tab")
    assert focused_action(page) == "reject_all"
    page.keyboard.press("Tab")
    assert focused_action(page) == "manage"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert focused_action(page) == "accept_all"
    with page.expect_response(is_choice_post) as posted:
        page.keyboard.press("Enter")
    assert posted.value.status == 201, posted.value.text()

    expect(page.locator("#analytics")).to_have_text("loaded")
    expect(page.locator("#ads")).to_have_text("loaded")
    expect(page.locator(DIALOG)).to_be_hidden()
    calls = [call[:2] for call in page.evaluate("window.__gtagCalls")]
    assert calls[0] == ["consent", "default"], calls
    default = consent_calls(page, "default")[0]
    assert default == {
        **ALL_DENIED, "functionality_storage": "denied", "personalization_storage": "denied", "wait_for_update": 500,
    }
    update = consent_calls(page, "update")[-1]
    assert update["analytics_storage"] == "granted"
    assert set(update) >= SIGNALS and set(update.values()) == {"granted"}, update
    assert page.evaluate("window.__analyticsRuns") == 1
    choices = page.evaluate("window.consentd.choices()")
    assert choices and all(choices.values())
    assert page.evaluate("window.__changes") == [choices]


def test_reject_all_keeps_scripts_blocked_and_signals_denied(page: Page, shop: StaticSite):
    open_shop(page, shop)
    answer = choose(page, REJECT)
    assert answer["sent"]["choices"] and not any(answer["sent"]["choices"].values())
    assert not any(answer["choices"].values())
    page.wait_for_function("window.consentd.choices() !== null")

    update = consent_calls(page, "update")[-1]
    assert set(update) >= SIGNALS and set(update.values()) == {"denied"}, update
    assert not any(page.evaluate("window.consentd.choices()").values())
    expect(page.locator("#analytics")).to_have_text("blocked")
    expect(page.locator("#ads")).to_have_text("blocked")
    assert page.locator('script[type="text/plain"][data-category]').count() == 2
    assert page.evaluate("window.__analyticsRuns") is None


def test_a_failed_post_keeps_the_banner_open_and_the_retry_reuses_its_idempotency_key(
    page: Page, shop: StaticSite, console: Console
):
    console.allow("net::ERR_FAILED")  # the POST this test makes fail
    keys: list[str | None] = []

    def fail_first_post(route):
        if route.request.method != "POST":
            return route.continue_()
        keys.append(route.request.headers.get("idempotency-key"))
        return route.abort() if len(keys) == 1 else route.continue_()

    page.route("**/v1/public/cookie-consents?*", fail_first_post)
    open_shop(page, shop)
    page.click(ACCEPT)
    alert = page.locator('#consentd-banner [role="alert"]')
    expect(alert).not_to_be_empty()
    expect(page.locator(DIALOG)).to_be_visible()
    expect(page.locator("#analytics")).to_have_text("blocked")
    assert page.evaluate("window.consentd.choices()") is None

    choose(page, ACCEPT)
    expect(page.locator("#analytics")).to_have_text("loaded")
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys


def test_choice_is_recorded_in_the_subjects_history(page: Page, shop: StaticSite, api: Consentd):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url + " " + (request.post_data or "")))
    open_shop(page, shop)
    assert page.evaluate("window.consentd.deviceId()") is None  # nothing stored, nothing made up
    answer = choose(page, ACCEPT)
    sent = answer["sent"]
    # The first choice names no device: the id the browser keeps is the one consentd answered.
    assert "device_id" not in sent
    device_id = page.evaluate("window.consentd.deviceId()")
    assert device_id == answer["device_id"] and device_id.startswith("cd1_")
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,128}", device_id)
    assert page.evaluate("localStorage.getItem('consentd_device')") == device_id
    assert sent["policy_version"]
    assert sent["page_url"] == shop.origin + SHOP_PATH
    assert all(sent["choices"].values()) and "cookies_analytics" in sent["choices"]

    subject_id = subject_of(api, page)
    with api.admin() as http:
        history = http.get(f"/v1/subjects/{subject_id}/history")
    assert history.status_code == 200, history.text
    events = [event for event in history.json()["events"] if event["source"] == "cookie_banner"]
    assert {event["purpose"] for event in events} == set(sent["choices"])
    for event in events:
        assert event["status"] == "granted"
        assert event["policy_version"] == sent["policy_version"]
        assert event["collection_point"] and SHOP_PATH in event["collection_point"]

    # The next page reads the device's choice with that id and the next choice names it; the id went to the
    # two public endpoints and nowhere else.
    page.reload()
    page.wait_for_function("window.consentd && window.consentd.choices() !== null")
    page.click("#settings-link")
    assert choose(page, SAVE)["sent"]["device_id"] == device_id
    carrying = [line for line in requests if device_id in line]
    assert len(carrying) >= 2 and all("/v1/public/cookie-consents" in line for line in carrying), carrying


def test_gpc_withdraws_advertising_the_visitor_did_not_turn_on(new_context: NewContext, shop: StaticSite, api: Consentd):
    context = new_context(extra_http_headers={"Sec-GPC": "1"})
    context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true, configurable: true})"
    )
    page = open_shop(context.new_page(), shop)
    expect(page.locator(DIALOG)).to_be_visible()
    page.click(MANAGE)
    expect(page.locator(category("cookies_analytics"))).to_be_visible()
    expect(page.locator("#consentd-banner .consentd-note")).to_be_visible()
    for box in page.locator("[data-consentd-category]").all():
        expect(box).not_to_be_checked()
    page.check(category("cookies_analytics"))
    answer = choose(page, SAVE)

    assert answer["sent"]["choices"]["cookies_analytics"] is True
    assert answer["sent"]["choices"]["cookies_advertising"] is False
    advertising = [event for event in answer["events"] if event["purpose"] == "cookies_advertising"]
    assert advertising and advertising[-1]["status"] == "withdrawn" and advertising[-1]["method"] == "gpc", answer["events"]
    analytics = [event for event in answer["events"] if event["purpose"] == "cookies_analytics"]
    assert analytics and analytics[-1]["status"] == "granted" and analytics[-1]["method"] == "banner"
    expect(page.locator("#analytics")).to_have_text("loaded")
    expect(page.locator("#ads")).to_have_text("blocked")
    update = consent_calls(page, "update")[-1]
    assert update["analytics_storage"] == "granted" and update["ad_storage"] == "denied"

    with api.admin() as http:
        consents = http.get(f"/v1/subjects/{subject_of(api, page)}/consents")
    assert consents.status_code == 200, consents.text
    state = {row["purpose"]: row["status"] for row in consents.json()["consents"]}
    assert state["cookies_advertising"] == "withdrawn"
    assert state["cookies_analytics"] == "granted"


def test_choice_stands_on_reload_and_gated_scripts_run_without_a_click(page: Page, shop: StaticSite):
    open_shop(page, shop)
    choose(page, ACCEPT)
    expect(page.locator("#analytics")).to_have_text("loaded")

    page.reload()
    page.wait_for_function("window.consentd && window.consentd.choices() !== null")
    expect(page.locator("#analytics")).to_have_text("loaded")
    expect(page.locator(DIALOG)).to_be_hidden()
    assert page.evaluate("window.__analyticsRuns") == 1
    assert consent_calls(page, "update")[-1]["analytics_storage"] == "granted"


def test_material_policy_change_asks_again(page: Page, shop: StaticSite, api: Consentd):
    open_shop(page, shop)
    first = choose(page, ACCEPT)
    page.reload()
    page.wait_for_function("window.consentd && window.consentd.choices() !== null")
    expect(page.locator(DIALOG)).to_be_hidden()

    version = f"e2e-{uuid.uuid4().hex[:8]}"
    with api.admin() as http:
        changed = http.put("/v1/banner", json={"policy_version": version, "material": True})
    assert changed.status_code == 200, changed.text

    page.reload()
    expect(page.locator(DIALOG)).to_be_visible()
    expect(page.locator("#analytics")).to_have_text("blocked")  # fail closed until the visitor answers
    again = choose(page, ACCEPT)
    assert first["sent"]["policy_version"] != version
    assert again["sent"]["policy_version"] == again["policy_version"] == version
    expect(page.locator("#analytics")).to_have_text("loaded")


def test_cookie_settings_reopens_the_banner_with_the_choices_in_force(page: Page, shop: StaticSite):
    open_shop(page, shop)
    choose(page, REJECT)

    page.click("#settings-link")
    expect(page.locator(DIALOG)).to_be_visible()
    expect(page.locator(category("cookies_analytics"))).to_be_visible()
    expect(page.locator(category("cookies_analytics"))).not_to_be_checked()
    page.check(category("cookies_analytics"))
    answer = choose(page, SAVE)
    assert answer["sent"]["choices"]["cookies_analytics"] is True
    assert answer["sent"]["choices"]["cookies_advertising"] is False
    expect(page.locator("#analytics")).to_have_text("loaded")
    expect(page.locator("#ads")).to_have_text("blocked")
    assert page.evaluate("document.activeElement.id") == "settings-link"  # focus came back

    page.click("#settings-button")
    expect(page.locator(category("cookies_analytics"))).to_be_checked()
    expect(page.locator(category("cookies_advertising"))).not_to_be_checked()
    # Escape goes back to the main view; it does not dismiss the banner without a choice.
    page.keyboard.press("Escape")
    expect(page.locator(DIALOG)).to_be_visible()
    expect(page.locator(category("cookies_analytics"))).to_be_hidden()
    expect(page.locator(MANAGE)).to_be_focused()
    page.evaluate("window.consentd.open()")
    expect(page.locator(category("cookies_analytics"))).to_be_visible()


def test_the_servers_own_demo_page(page: Page, api: Consentd):
    api.banner_key(api.base_url)
    page.goto(api.base_url + "/demo")
    expect(page.locator(DIALOG)).to_be_visible()
    expect(page.locator("#analytics-status")).to_have_text("Analytics blocked")
    choose(page, ACCEPT)
    expect(page.locator("#analytics-status")).to_have_text("Analytics loaded")
    expect(page.locator("#ads-status")).to_have_text("Advertising loaded")
    expect(page.locator("#consent-mode")).to_contain_text("analytics_storage")
    expect(page.locator("#consent-mode .granted").first).to_be_visible()


def test_a_withdrawal_takes_effect_on_the_next_page_load(page: Page, shop: StaticSite):
    open_shop(page, shop)
    choose(page, ACCEPT)
    expect(page.locator("#analytics")).to_have_text("loaded")

    page.click("#settings-link")
    page.uncheck(category("cookies_analytics"))
    answer = choose(page, SAVE)
    assert answer["choices"]["cookies_analytics"] is False
    assert consent_calls(page, "update")[-1]["analytics_storage"] == "denied"

    page.reload()
    page.wait_for_function("window.consentd && window.consentd.choices() !== null")
    expect(page.locator(DIALOG)).to_be_hidden()
    expect(page.locator("#analytics")).to_have_text("blocked")
    expect(page.locator("#ads")).to_have_text("loaded")
    assert page.evaluate("window.__analyticsRuns") is None


def test_a_device_id_the_browser_made_up_is_dropped_and_the_banner_asks_again(
    new_context: NewContext, shop: StaticSite, api: Consentd, console: Console
):
    console.allow("422")  # the browser logs the refused GET of the old id
    made_up = uuid.uuid4().hex  # what earlier banners kept: an id consentd never issued
    with api.admin() as http:  # the site's backend may still name it (JWT API): a choice stands under it
        recorded = http.post("/v1/consents", json={
            "subject": {"device_id": made_up}, "source": "api",
            "decisions": [{"purpose": key, "status": "granted"} for key in ("cookies_analytics", "cookies_advertising",
                                                                            "cookies_functional")],
        })
    assert recorded.status_code == 201, recorded.text
    context = new_context()
    # Every document of the context runs it, about:blank too, where storage is denied.
    context.add_init_script(f"try {{ localStorage.setItem('consentd_device', '{made_up}') }} catch (e) {{}}")
    page = context.new_page()
    with page.expect_response(lambda r: made_up in r.url) as refused:
        open_shop(page, shop)
    assert refused.value.status == 422
    expect(page.locator(DIALOG)).to_be_visible()  # the banner cannot read that choice: it asks
    expect(page.locator("#analytics")).to_have_text("blocked")
    assert page.evaluate("window.consentd.deviceId()") is None
    answer = choose(page, REJECT)
    assert "device_id" not in answer["sent"] and answer["device_id"] != made_up
    assert page.evaluate("localStorage.getItem('consentd_device')") == answer["device_id"]
    assert page.evaluate("window.consentd.deviceId()") == answer["device_id"]


def test_a_refused_device_id_on_a_choice_is_dropped_and_the_choice_posted_without_it(
    new_context: NewContext, shop: StaticSite, console: Console
):
    console.allow("422")  # the refused POST
    console.allow("net::ERR_FAILED")  # the status read this test makes fail
    made_up = uuid.uuid4().hex
    context = new_context()
    context.add_init_script(f"try {{ localStorage.setItem('consentd_device', '{made_up}') }} catch (e) {{}}")
    page = context.new_page()
    page.route(f"**/v1/public/cookie-consents/{made_up}?*", lambda route: route.abort())
    posts: list[tuple[int, dict]] = []
    page.on("response", lambda r: is_choice_post(r) and posts.append((r.status, json.loads(r.request.post_data))))
    open_shop(page, shop)
    expect(page.locator(DIALOG)).to_be_visible()  # the standing choice could not be read: the banner asks
    with page.expect_response(lambda r: is_choice_post(r) and r.status == 201) as posted:
        page.click(ACCEPT)
    answer = posted.value.json()
    expect(page.locator(DIALOG)).to_be_hidden()
    assert [(status, body.get("device_id")) for status, body in posts] == [(422, made_up), (201, None)]
    assert answer["device_id"] != made_up
    assert page.evaluate("localStorage.getItem('consentd_device')") == answer["device_id"]
    expect(page.locator("#analytics")).to_have_text("loaded")
