"""Erasure (a data-subject request): identifiers and evidence destroyed, the ledger still verifying, every check by
a former identifier answering `erased`, legal holds, strangers, re-imports and writers racing the erasure."""

import asyncio
import json
import uuid
from datetime import timedelta

import httpx
import sqlalchemy as sa
from jose import jws

from app.models import metadata
from app.models.base import utcnow
from app.services.scheduled import jobs
from tests.conftest import assert_problem, stored_id
from tests.routers.test_public_banner import ALL_OFF, ALL_ON, SHOP, new_key, post_choices, standing
from tests.routers.test_requests import act, file
from tests.support.api import check, iso, record

NDJSON = {"Content-Type": "application/x-ndjson"}


def person() -> dict[str, str]:
    """Identifiers no other test uses, so that the raw search below finds only this person's."""
    token = uuid.uuid4().hex[:12]
    return {"email": f"Erase.Me.{token}@Example.org", "external_id": f"crm-{token}", "phone": f"+447400{int(token, 16) % 10**6:06d}"}


async def signed_up(client: httpx.AsyncClient, who: dict[str, str], **extra) -> dict:
    """The person's grant of marketing by email and sms, with their identifiers and personal evidence."""
    return await record(
        client, {"email": who["email"]}, ("marketing", "email", "granted"), ("marketing", "sms", "granted"),
        identifiers={"phone": who["phone"], "external_id": who["external_id"]},
        evidence={"form_text": f"Sign me up, {who['email']}", "phone": who["phone"], "ip": "192.0.2.44"}, **extra,
    )


async def erased_by_request(client: httpx.AsyncClient, who: dict[str, str]) -> dict:
    filed = await file(client, "erasure", subject={"email": who["email"]}, verified={"method": "account"})
    return await act(client, filed["request_id"], "complete")


def spellings(who: dict[str, str]) -> list[str]:
    """What the raw search looks for: every identifier as given and as stored (emails lower-cased)."""
    return sorted({who["email"], who["email"].lower(), who["phone"], who["phone"].lstrip("+"), who["external_id"]})


async def personal_leftovers(backend, needles: list[str]) -> list[str]:
    """Every (table.column, needle) where a text or JSON column of any table still holds one of `needles`."""
    found = []
    async with backend.database.transaction() as session:
        for table in metadata.sorted_tables:
            for column in table.columns:
                if not isinstance(column.type, sa.String | sa.JSON):  # every text and JSON column (Text is a String)
                    continue
                text = sa.func.lower(sa.cast(column, sa.Text))
                for needle in needles:
                    query = sa.select(sa.func.count()).select_from(table).where(text.contains(needle.lower()))
                    if (await session.execute(query)).scalar_one():
                        found.append(f"{table.name}.{column.name}: {needle}")
    return found


async def sealed_values(backend, subject_id: str) -> list[str]:
    async with backend.database.transaction() as session:
        rows = await session.execute(
            sa.text("SELECT value_sealed FROM subject_identifiers WHERE subject_id = :s"),
            {"s": uuid.UUID(subject_id) if backend.name == "postgres" else uuid.UUID(subject_id).hex},
        )
        return [value for (value,) in rows]


async def test_an_erasure_destroys_identifiers_and_evidence_and_the_ledger_still_verifies(client, backend, anonymous):
    who = person()
    written = await signed_up(client, who)
    subject_id, event_id = written["subject_id"], written["events"][0]["event_id"]
    await record(client, {"external_id": who["external_id"]}, ("market_research", "email", "granted"), evidence={"note": who["email"]})
    receipt_before = (await client.get(f"/v1/events/{event_id}/receipt")).json()
    sealed = await sealed_values(backend, subject_id)
    assert len(sealed) == 3 and all(sealed)
    assert await personal_leftovers(backend, spellings(who))  # the search finds what is there

    done = await erased_by_request(client, who)
    assert done["status"] == "completed" and done["outcome"]["done"][:2] == ["erased 3 identifiers", "erased the evidence of 3 events"]

    # Nothing personal is left in any table: no identifier as given or stored, no sealed value of one.
    assert await personal_leftovers(backend, spellings(who) + sealed) == []
    # Every check by a former identifier, or by the subject's id, answers erased: single, batch and stream.
    for ref in ({"email": who["email"]}, {"phone": who["phone"]}, {"external_id": who["external_id"]}, {"subject_id": subject_id}):
        answer = await check(client, ref, "marketing", "email")
        assert (answer["allowed"], answer["reason"], answer["subject_id"]) == (False, "erased", subject_id), ref
    batch = await client.post("/v1/checks/batch", json={"checks": [
        {"subject": {"email": who["email"]}, "purpose": "marketing", "channel": "sms"},
        {"subject": {"phone": who["phone"]}, "purpose": "market_research", "channel": "email"},
    ]})
    assert [r["reason"] for r in batch.json()["results"]] == ["erased", "erased"]
    stream = await client.post(
        "/v1/checks/stream", params={"purpose": "marketing", "channel": "email"},
        content=f"email\n{who['email']}\n".encode(), headers={"Content-Type": "text/csv"},
    )
    assert json.loads(stream.text.splitlines()[0])["reason"] == "erased"
    # Service messages still go: an erased person's order is still answered on its contract.
    assert (await check(client, {"email": who["email"]}, "order_updates", "email"))["reason"] == "contract"

    subject = (await client.get(f"/v1/subjects/{subject_id}")).json()
    assert (subject["subject_id"], subject["flags"], subject["identifiers"]) == (subject_id, ["erased"], [])
    feed = (await client.get("/v1/changes", params={"limit": 1000})).json()["changes"]
    assert [(c["kind"], c["status"]) for c in feed if c["subject_id"] == subject_id][-1] == ("subject", "erased")
    history = (await client.get(f"/v1/subjects/{subject_id}/history")).json()["events"]
    # The decisions stay, as pseudonymous proof of what was agreed.
    assert [(e["purpose"], e["status"]) for e in history][:2] == [("marketing", "granted"), ("marketing", "granted")]

    verified = (await client.get("/v1/audit/verify")).json()
    assert (verified["ok"], verified["checked"], verified["erased"]) == (True, 3, 3), verified["problems"]
    # A receipt issued before the erasure still verifies, and names the hash the ledger still holds.
    key = next(k for k in (await anonymous.get("/.well-known/jwks.json")).json()["keys"]
               if k["kid"] == jws.get_unverified_header(receipt_before["jws"])["kid"])
    assert json.loads(jws.verify(receipt_before["jws"], key, algorithms=[key["alg"]]))["ledger_hash"] == receipt_before["ledger_hash"]
    receipt_after = (await client.get(f"/v1/events/{event_id}/receipt")).json()
    assert receipt_after["ledger_hash"] == receipt_before["ledger_hash"]
    exported = [json.loads(line) for line in (await client.get(
        "/v1/audit/events", params={"from": iso(utcnow() - timedelta(hours=1)), "to": iso(utcnow() + timedelta(hours=1))}
    )).text.splitlines()]
    mine = [row for row in exported if row["subject_id"] == subject_id]
    assert len(mine) == 3 and all(row["evidence"] is None and row["evidence_erased_at"] and row["evidence_sha256"] for row in mine)
    # The request's own receipt says what was done.
    request_receipt = (await client.get(f"/v1/requests/{done['request_id']}/receipt")).json()
    assert request_receipt["outcome"]["done"][0] == "erased 3 identifiers"


async def test_an_erased_person_is_never_marketed_to_by_an_old_decision_and_may_sign_up_again(client):
    who = person()
    before = iso(utcnow() - timedelta(days=30))
    old = await signed_up(client, who, captured_at=before)
    await erased_by_request(client, who)

    # The CRM writes back what it had: refused, whichever identifier names the person, and nothing is stored.
    again = await client.post("/v1/consents", json={
        "subject": {"email": who["email"]}, "captured_at": before,
        "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],
    })
    assert "erased" in assert_problem(again, 409)["detail"]
    by_id = await client.post("/v1/consents", json={
        "subject": {"subject_id": old["subject_id"]}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],
    })
    assert "erased" in assert_problem(by_id, 409)["detail"]
    line = json.dumps({"subject": {"phone": who["phone"]}, "captured_at": before,
                       "decisions": [{"purpose": "marketing", "channel": "sms", "status": "granted"}], "source": "crm"})
    imported = await client.post("/v1/consents/import", content=line + "\n", headers=NDJSON)
    assert imported.status_code == 422 and "erased" in imported.text
    assert (await check(client, {"phone": who["phone"]}, "marketing", "sms"))["reason"] == "erased"

    # The person signs up again: a new subject, with only what they gave since.
    fresh = await record(client, {"email": who["email"]}, ("marketing", "email", "granted"))
    assert fresh["subject_id"] != old["subject_id"]
    answer = await check(client, {"email": who["email"]}, "marketing", "email")
    assert (answer["reason"], answer["subject_id"]) == ("consent_granted", fresh["subject_id"])
    assert (await check(client, {"email": who["email"]}, "marketing", "sms"))["reason"] == "no_consent"
    # Their phone was not given again: still erased. And the old decision is still refused for the new subject.
    assert (await check(client, {"phone": who["phone"]}, "marketing", "sms"))["reason"] == "erased"
    assert_problem(await client.post("/v1/consents", json={
        "subject": {"email": who["email"]}, "captured_at": before,
        "decisions": [{"purpose": "marketing", "channel": "email", "status": "withdrawn"}],
    }), 409)
    subject = (await client.get(f"/v1/subjects/{fresh['subject_id']}")).json()
    assert [i["type"] for i in subject["identifiers"]] == ["email"] and subject["flags"] == []
    assert (await client.get(f"/v1/subjects/{old['subject_id']}")).json()["flags"] == ["erased"]


async def test_an_erasure_under_a_legal_hold_completes_in_part_and_finishes_when_the_hold_is_released(client, backend):
    who = person()
    subject_id = (await signed_up(client, who))["subject_id"]
    holds = f"/v1/subjects/{subject_id}/holds"
    claim = (await client.post(holds, json={"reason": "legal_claim", "note": "claim 2026/77"})).json()
    dispute = (await client.post(holds, json={"reason": "open_dispute"})).json()

    done = await erased_by_request(client, who)
    outcome = done["outcome"]
    assert outcome["pending"] is True
    assert [(w["hold_id"], w["reason"]) for w in outcome["withheld"]] == [
        (claim["hold_id"], "legal_claim"), (dispute["hold_id"], "open_dispute"),
    ]
    assert "withdrew marketing/email" in outcome["done"] and outcome["done"][-1].startswith("suppressed 3 identifiers")
    # Marketing stops at once; the held data stays.
    assert (await check(client, {"email": who["email"]}, "marketing", "email"))["reason"] == "suppressed"
    assert (await check(client, {"subject_id": subject_id}, "marketing", "email"))["reason"] == "suppressed"
    held = (await client.get(f"/v1/subjects/{subject_id}")).json()
    assert len(held["identifiers"]) == 3 and held["flags"] == []
    assert await personal_leftovers(backend, [who["email"]])  # in the held evidence

    await client.post(f"{holds}/{claim['hold_id']}/release")
    assert (await client.get(f"/v1/requests/{done['request_id']}")).json()["outcome"]["pending"] is True
    await client.post(f"{holds}/{dispute['hold_id']}/release")
    finished = (await client.get(f"/v1/requests/{done['request_id']}")).json()
    assert finished["outcome"]["pending"] is False and finished["outcome"]["finished_at"]
    finishing, flagged = finished["log"][-2:]
    assert finishing["action"] == "erasure_finished" and "erased 3 identifiers" in finishing["note"]
    assert (flagged["action"], flagged["note"]) == ("erased", f"subject {subject_id}")
    assert (await check(client, {"email": who["email"]}, "marketing", "email"))["reason"] == "erased"
    assert (await client.get(f"/v1/subjects/{subject_id}")).json()["identifiers"] == []
    assert await personal_leftovers(backend, spellings(who)) == []
    # The person stays suppressed by blind index only; the suppressions list shows no value.
    entries = (await client.get("/v1/suppressions")).json()["entries"]
    assert len(entries) == 3 and all(set(e) == {"erased", "channels", "reason", "created_at"} for e in entries)
    receipt = (await client.get(f"/v1/requests/{done['request_id']}/receipt")).json()
    assert receipt["outcome"]["pending"] is False and receipt["log_length"] == len(finished["log"])
    assert (await client.get("/v1/audit/verify")).json()["ok"] is True


async def test_a_stranger_who_asks_for_erasure_is_suppressed_by_blind_index_only(client, backend):
    stranger = {"email": f"never.seen.{uuid.uuid4().hex[:8]}@example.org"}
    filed = await file(client, "erasure", subject=stranger, verified={"method": "knowledge"})
    done = await act(client, filed["request_id"], "complete")
    assert done["outcome"] == {**done["outcome"], "nothing_held": True, "done": ["suppressed on email, sms, phone, post"]}
    assert (await check(client, stranger, "marketing", "email"))["reason"] == "suppressed"
    assert await personal_leftovers(backend, [stranger["email"]]) == []
    assert (await client.get("/v1/suppressions")).json()["entries"][0]["erased"] is True


async def test_a_request_about_a_person_erased_since_finds_nothing_held(client):
    who = person()
    await signed_up(client, who)
    access = await file(client, "access", subject={"email": who["email"]}, verified={"method": "account"})
    await erased_by_request(client, who)
    done = await act(client, access["request_id"], "complete")
    assert (done["outcome"]["nothing_held"], done["outcome"]["erased"]) == (True, True)
    twice = await file(client, "erasure", subject={"email": who["email"]}, verified={"method": "account"})
    assert (await act(client, twice["request_id"], "complete"))["outcome"]["erased"] is True


async def test_a_consent_written_while_an_erasure_completes_lands_before_it_or_is_refused(client, backend, pg_backend):
    who = person()
    subject_id = (await signed_up(client, who))["subject_id"]
    filed = await file(client, "erasure", subject={"email": who["email"]}, verified={"method": "account"})

    async def write(n: int) -> httpx.Response:
        return await client.post("/v1/consents", json={
            "subject": {"email": who["email"]}, "evidence": {"attempt": n, "email": who["email"]},
            "decisions": [{"purpose": "marketing", "channel": "post", "status": "granted"}],
        })

    completing = client.post(f"/v1/requests/{filed['request_id']}/complete")
    answers = await asyncio.gather(*(write(n) for n in range(8)), completing, *(write(n) for n in range(8, 16)))
    completion = answers[8]
    assert completion.status_code == 200, completion.text
    writes = answers[:8] + answers[9:]
    assert {a.status_code for a in writes} <= {201, 409}
    landed = [a.json()["subject_id"] for a in writes if a.status_code == 201]
    # A write that landed on the erased subject came before the erasure, and was erased with the rest; one that came
    # after (all new decisions) started a new subject.
    erased_ones = [s for s in landed if s == subject_id]
    history = (await client.get(f"/v1/subjects/{subject_id}/history", params={"limit": 500})).json()["events"]
    assert len(history) == 2 + len(erased_ones)
    assert (await client.get("/v1/audit/verify")).json()["ok"] is True
    assert await personal_leftovers(backend, [who["external_id"], who["phone"]]) == []


async def test_an_erased_device_shows_every_category_off_and_a_new_choice_starts_afresh(client, backend, tenant):
    key = await new_key(backend, tenant)
    transport = httpx.ASGITransport(app=backend.app, client=("203.0.113.78", 50000))
    headers = {"Origin": SHOP, "User-Agent": "Mozilla/5.0 (test)"}
    async with httpx.AsyncClient(transport=transport, base_url="http://consentd.test", headers=headers) as browser:
        device = {"device_id": (await post_choices(browser, key, None, ALL_ON))["device_id"]}
        filed = await file(client, "erasure", subject=device, verified={"method": "knowledge"})
        done = await act(client, filed["request_id"], "complete")
        assert done["outcome"]["done"][0] == "erased 1 identifiers"
        erased = await standing(browser, key, device["device_id"])
        assert erased == {"choices": ALL_OFF, "policy_version": None, "expires_at": None, "reprompt": False}
        assert (await check(client, device, "cookies_analytics"))["reason"] == "erased"
        # The person chooses again on that browser: a new subject, with only the new choices.
        again = await post_choices(browser, key, device["device_id"], ALL_OFF)
        assert again["device_id"] == device["device_id"]
        assert (await standing(browser, key, device["device_id"]))["choices"] == ALL_OFF
        assert (await check(client, device, "cookies_analytics"))["reason"] == "withdrawn"


async def test_an_erasure_waiting_on_a_hold_that_lapses_finishes_on_the_scheduled_run(client, backend):
    who = person()
    subject_id = (await signed_up(client, who))["subject_id"]
    hold = (await client.post(f"/v1/subjects/{subject_id}/holds", json={
        "reason": "open_dispute", "until": iso(utcnow() + timedelta(days=30)),
    })).json()
    done = await erased_by_request(client, who)
    assert done["outcome"]["pending"] is True
    # The requests' job leaves it while the hold is in force ...
    assert (await jobs.requests_job(backend.database, region="GB-ENG"))["erasures_finished"] == 0
    async with backend.database.transaction() as session:
        await session.execute(sa.text("UPDATE legal_holds SET until = :at WHERE id = :id"),
                              {"at": utcnow() - timedelta(seconds=1), "id": stored_id(backend, hold["hold_id"])})
    # ... and finishes it once the hold has lapsed by its `until`, once.
    assert (await jobs.requests_job(backend.database, region="GB-ENG"))["erasures_finished"] == 1
    assert (await jobs.requests_job(backend.database, region="GB-ENG"))["erasures_finished"] == 0
    finished = (await client.get(f"/v1/requests/{done['request_id']}")).json()
    entry = next(e for e in finished["log"] if e["action"] == "erasure_finished")
    assert entry["actor"] == "consentd (scheduled)" and entry["note"].startswith("the last hold lapsed")
    assert finished["outcome"]["pending"] is False
    assert (await check(client, {"email": who["email"]}, "marketing", "email"))["reason"] == "erased"
    assert await personal_leftovers(backend, spellings(who)) == []
    assert (await client.get("/v1/audit/verify")).json()["ok"] is True
