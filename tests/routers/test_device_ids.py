"""Device ids are issued by consentd: the public endpoints refuse any other, so a publishable key (public,
it sits in web pages) cannot read or write the choices of a device its holder does not hold."""

import re
import uuid

import pytest
import sqlalchemy as sa

from app.models import SubjectIdentifier
from app.models.banners import DEVICE_ID
from app.services.subjects.identifiers import DEVICE_PREFIX
from tests.conftest import Backend, assert_problem
from tests.routers.test_public_banner import (  # noqa: F401 - the banner's fixtures
    ALL_OFF,
    ALL_ON,
    device_events,
    issued,
    key,
    new_key,
    post_choices,
    standing,
    visitor,
)
from tests.support.api import check, record

URL = "/v1/public/cookie-consents"


def body(device_id: str | None = None) -> dict:
    return {"choices": ALL_ON, "policy_version": "1"} | ({"device_id": device_id} if device_id else {})


def tampered(device_id: str) -> str:
    """The same id with its MAC's last character changed (still a well-formed id)."""
    return device_id[:-1] + ("A" if device_id[-1] != "A" else "B")


async def devices_of(backend: Backend, tenant: str) -> int:
    async with backend.database.transaction(read_only=True) as session:
        count = sa.select(sa.func.count()).select_from(SubjectIdentifier).where(SubjectIdentifier.tenant_id == tenant)
        return (await session.execute(count)).scalar_one()


async def assert_refused(backend: Backend, tenant: str, response, loc: list[str]) -> None:
    problem = assert_problem(response, 422)
    assert [error["loc"] for error in problem["errors"]] == [loc]
    assert await device_events(backend, tenant) == [] and await devices_of(backend, tenant) == 0


async def test_a_first_post_issues_a_device_id_and_it_is_reused(backend, tenant, client, visitor, key):
    first = await post_choices(visitor, key, None, ALL_ON)
    device_id = first["device_id"]
    assert device_id.startswith(DEVICE_PREFIX) and len(device_id) >= 40
    assert re.fullmatch(DEVICE_ID, device_id)
    # Posting again with it: the same device, its choice replaced; the answer names it again.
    again = await post_choices(visitor, key, device_id, ALL_OFF)
    assert again["device_id"] == device_id
    assert (await standing(visitor, key, device_id))["choices"] == ALL_OFF
    assert await devices_of(backend, tenant) == 1
    subject = (await client.post("/v1/subjects/lookup", json={"device_id": device_id})).json()
    history = (await client.get(f"/v1/subjects/{subject['subject_id']}/history")).json()["events"]
    assert len(history) == 6
    # Every first visit gets a new one.
    assert (await post_choices(visitor, key, None, ALL_ON))["device_id"] != device_id


@pytest.mark.parametrize(
    "made_up",
    ["0f1e2d3c4b5a69788796a5b4c3d2e1f0", "d" * 32, DEVICE_PREFIX + "A" * 44, DEVICE_PREFIX + "A" * 43, "x" * 128],
)
async def test_a_made_up_device_id_is_a_422_and_stores_nothing(backend, tenant, client, visitor, key, made_up):
    await assert_refused(backend, tenant, await visitor.post(URL, params={"key": key}, json=body(made_up)),
                         ["body", "device_id"])
    assert_problem(await client.post("/v1/subjects/lookup", json={"device_id": made_up}), 404)


async def test_a_tampered_mac_is_a_422(backend, tenant, visitor, key):
    device_id = issued(backend, tenant)
    response = await visitor.post(URL, params={"key": key}, json=body(tampered(device_id)))
    await assert_refused(backend, tenant, response, ["body", "device_id"])
    response = await visitor.get(f"{URL}/{tampered(device_id)}", params={"key": key})
    await assert_refused(backend, tenant, response, ["path", "device_id"])


async def test_another_tenants_device_id_is_a_422(backend, tenant, other_tenant, visitor, key):
    other_key = await new_key(backend, other_tenant)
    theirs = (await post_choices(visitor, other_key, None, ALL_ON))["device_id"]
    await assert_refused(backend, tenant, await visitor.post(URL, params={"key": key}, json=body(theirs)),
                         ["body", "device_id"])
    # Its own tenant's key still takes it, and its choice is untouched.
    assert (await standing(visitor, other_key, theirs))["choices"] == ALL_ON


async def test_get_with_a_foreign_device_id_is_a_422(backend, tenant, other_tenant, client, visitor, key):
    # A device id the site's backend named through the JWT API, with choices: the banner key cannot read them.
    named = uuid.uuid4().hex
    await record(client, {"device_id": named}, ("cookies_analytics", None, "granted"))
    assert_problem(await visitor.get(f"{URL}/{named}", params={"key": key}), 422)
    theirs = issued(backend, other_tenant)
    problem = assert_problem(await visitor.get(f"{URL}/{theirs}", params={"key": key}), 422)
    assert problem["errors"][0]["loc"] == ["path", "device_id"]
    assert theirs not in problem["detail"] and named not in str(problem)


async def test_an_idempotent_retry_without_a_device_id_returns_the_same_one(backend, tenant, visitor, key):
    retry = {"headers": {"Idempotency-Key": "first-choice"}}
    first = await post_choices(visitor, key, None, ALL_ON, **retry)
    again = await post_choices(visitor, key, None, ALL_ON, **retry)
    assert again == first and again["device_id"] == first["device_id"]
    assert len(await device_events(backend, tenant)) == 3 and await devices_of(backend, tenant) == 1
    # The key was used without a device id: naming one now is another request.
    await post_choices(visitor, key, first["device_id"], ALL_ON, status=409, **retry)


async def test_a_refused_device_id_leaves_the_idempotency_key_free(backend, tenant, visitor, key):
    retry = {"Idempotency-Key": "k-1"}
    assert_problem(await visitor.post(URL, params={"key": key}, json=body("d" * 32), headers=retry), 422)
    answer = await post_choices(visitor, key, None, ALL_ON, headers=retry)
    assert answer["device_id"].startswith(DEVICE_PREFIX)


async def test_the_jwt_api_still_names_any_device_id(backend, tenant, client, visitor, key):
    named = uuid.uuid4().hex
    recorded = await record(client, {"device_id": named}, ("cookies_analytics", None, "granted"))
    assert (await check(client, {"device_id": named}, "cookies_analytics"))["allowed"] is True
    person = await record(client, {"email": "ann@example.com"}, ("marketing", "email", "granted"))
    linked = await client.post(f"/v1/subjects/{person['subject_id']}/identifiers", json={"device_id": named})
    assert linked.status_code == 200, linked.text
    assert linked.json()["merged_subject_id"] == recorded["subject_id"]
    # An issued id links the same way, and the banner on that device then reads the person's history.
    device_id = (await post_choices(visitor, key, None, {"cookies_functional": True}))["device_id"]
    linked = await client.post(f"/v1/subjects/{person['subject_id']}/identifiers", json={"device_id": device_id})
    assert linked.status_code == 200 and linked.json()["events_merged"] == 1, linked.text
    state = await standing(visitor, key, device_id)
    assert state["choices"] == {"cookies_analytics": True, "cookies_functional": True}
