"""PUT /v1/suppressions, POST /v1/suppressions/remove, GET /v1/suppressions, and their effect on checks."""

import uuid

import orjson
import sqlalchemy as sa

from app.models import Subject
from app.services.kit.cursors import pack as b64
from tests.conftest import assert_problem, bearer
from tests.support.api import check, consent_body, record

CHANNELS = ("email", "sms", "phone", "post")


async def put(http, entries: list[dict], channels: list[str], reason: str = "manual", **kwargs) -> dict:
    response = await http.put("/v1/suppressions", json={"entries": entries, "channels": channels, "reason": reason}, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


async def remove(http, entries: list[dict], channels: list[str], **kwargs) -> dict:
    response = await http.post("/v1/suppressions/remove", json={"entries": entries, "channels": channels}, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


IDENTIFIER_KINDS = ("email", "phone", "external_id")


def flat(entries: list[dict]) -> list[dict]:
    """Entries as GET lists them (one identifier, its channels, a reason), one row per channel."""
    rows = []
    for entry in entries:
        (kind,) = [k for k in IDENTIFIER_KINDS if k in entry]  # exactly one identifier, as PUT takes it
        assert set(entry) == {kind, "channels", "reason", "created_at"}, entry
        assert entry["channels"] == sorted(entry["channels"])
        rows += [
            {"type": kind, "value": entry[kind], "channel": channel, "reason": entry["reason"],
             "created_at": entry["created_at"]}
            for channel in entry["channels"]
        ]
    return rows


async def listing(http, limit: int = 1000, **params) -> list[dict]:
    """Every suppression, following next_cursor page by page, one row per (identifier, channel)."""
    rows, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit, **params} | ({"cursor": cursor} if cursor else {})
        response = await http.get("/v1/suppressions", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        kinds = [next(k for k in IDENTIFIER_KINDS if k in e) for e in page["entries"]]
        assert len({kind + e[kind] for kind, e in zip(kinds, page["entries"], strict=True)}) <= limit
        rows += flat(page["entries"])
        pages += 1
        assert pages < 1000
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def triples(rows: list[dict]) -> set[tuple[str, str, str, str]]:
    return {(r["type"], r["value"], r["channel"], r["reason"]) for r in rows}


async def test_put_list_remove_and_put_again(client):
    entries = [{"email": "  Jane.Doe@Example.COM "}, {"phone": "07911 123456"}, {"external_id": "C-1"}]
    added = await put(client, entries, ["sms", "email", "email"], "bounce")
    assert added == {"entries": 3, "channels": ["email", "sms"], "changed": 6}

    rows = await listing(client)
    assert len(rows) == 6
    assert triples(rows) == {
        (kind, value, channel, "bounce")
        for kind, value in (("email", "jane.doe@example.com"), ("phone", "+447911123456"), ("external_id", "C-1"))
        for channel in ("email", "sms")
    }
    assert all(row["created_at"].endswith("Z") or row["created_at"].endswith("+00:00") for row in rows)

    # Small pages: every row exactly once, in the same order as one big page.
    for limit in (1, 2, 4, 5):
        paged = await listing(client, limit=limit)
        assert paged == rows, limit
    first = (await client.get("/v1/suppressions", params={"limit": 3})).json()
    assert first["next_cursor"] is None  # exactly one full page (three identifiers): no further page to ask for
    assert {"email": "jane.doe@example.com", "channels": ["email", "sms"], "reason": "bounce"}.items() <= next(
        e for e in first["entries"] if "email" in e
    ).items()

    sms_only = await listing(client, limit=2, channel="sms")
    assert triples(sms_only) == {t for t in triples(rows) if t[2] == "sms"}

    # The same entries again, written differently, change nothing; a new reason replaces the old one.
    same = await put(client, [{"email": "jane.doe@example.com"}, {"phone": "+44 7911 123456"}, {"external_id": "C-1"}],
                     ["email", "sms"], "bounce")
    assert same == {"entries": 3, "channels": ["email", "sms"], "changed": 0}
    reasoned = await put(client, [{"email": "JANE.DOE@example.com"}], ["email"], "complaint")
    assert reasoned["changed"] == 1
    assert {(r["value"], r["channel"]): r["reason"] for r in await listing(client)}[("jane.doe@example.com", "email")] == "complaint"

    gone = await remove(client, [{"email": "jane.doe@example.com"}, {"external_id": "C-1"}], ["email"])
    assert gone["changed"] == 2
    left = triples(await listing(client))
    assert {(kind, channel) for kind, _, channel, _ in left} == {
        ("email", "sms"), ("phone", "email"), ("phone", "sms"), ("external_id", "sms"),
    }
    again = await remove(client, [{"email": "jane.doe@example.com"}], ["email", "post"])
    assert again["changed"] == 0

    # Put back after removal, with another reason: a fresh suppression.
    back = await put(client, [{"email": "jane.doe@example.com"}], ["email"], "tps")
    assert back["changed"] == 1
    assert ("email", "jane.doe@example.com", "email", "tps") in triples(await listing(client))


async def test_reason_defaults_to_manual_and_remove_accepts_the_put_body(client):
    response = await client.put("/v1/suppressions", json={"entries": [{"external_id": "D-1"}], "channels": ["post"]})
    assert response.status_code == 200, response.text
    assert triples(await listing(client)) == {("external_id", "D-1", "post", "manual")}
    body = {"entries": [{"external_id": "D-1"}], "channels": ["post"], "reason": "tps"}
    response = await client.post("/v1/suppressions/remove", json=body)
    assert response.status_code == 200 and response.json()["changed"] == 1
    assert await listing(client) == []


async def test_empty_list(client):
    response = await client.get("/v1/suppressions")
    assert response.status_code == 200
    assert response.json() == {"entries": [], "next_cursor": None}


async def test_suppressed_identifier_is_denied_whatever_its_consents(client):
    subject = {"email": "granted@example.com"}
    recorded = await record(client, subject, *(("marketing", c, "granted") for c in CHANNELS),
                            identifiers={"external_id": "G-1", "phone": "07911 200001", "device_id": "dev-g1"})
    sid = recorded["subject_id"]
    assert (await check(client, subject, "marketing", "email"))["reason"] == "consent_granted"

    await put(client, [{"email": "GRANTED@example.com"}], ["email", "sms"], "complaint")
    # Named by the suppressed identifier, by its subject id, or by another identifier of the same person.
    for ref in (subject, {"subject_id": sid}, {"external_id": "G-1"}, {"phone": "+447911200001"}, {"device_id": "dev-g1"}):
        for channel in ("email", "sms"):
            answer = await check(client, ref, "marketing", channel)
            assert (answer["allowed"], answer["reason"], answer["subject_id"]) == (False, "suppressed", sid), (ref, channel)
            assert answer["consent"]["status"] == "granted"  # the consent is still reported, it just does not count
        for channel in ("phone", "post"):  # only the listed channels
            assert (await check(client, ref, "marketing", channel))["reason"] == "consent_granted", (ref, channel)
    # Purposes without channels are not contact: a channel suppression does not touch them.
    assert (await check(client, subject, "profiling"))["reason"] == "legitimate_interest"
    await record(client, subject, ("cookies_analytics", None, "granted"))
    assert (await check(client, {"subject_id": sid}, "cookies_analytics"))["reason"] == "consent_granted"

    await remove(client, [{"email": "granted@example.com"}], ["email"])
    assert (await check(client, {"external_id": "G-1"}, "marketing", "email"))["reason"] == "consent_granted"
    assert (await check(client, {"external_id": "G-1"}, "marketing", "sms"))["reason"] == "suppressed"
    await remove(client, [{"email": "granted@example.com"}], ["sms"])
    for channel in CHANNELS:
        assert (await check(client, {"subject_id": sid}, "marketing", channel))["reason"] == "consent_granted"


async def test_suppression_by_phone_or_external_id_reaches_checks_by_email(client):
    recorded = await record(client, {"email": "p@example.com"}, ("marketing", "sms", "granted"), ("marketing", "phone", "granted"),
                            identifiers={"phone": "+44 7911 200002", "external_id": "P-1"})
    await put(client, [{"phone": "07911200002"}], ["sms"], "tps")
    await put(client, [{"external_id": "P-1"}], ["phone"], "manual")
    for ref in ({"email": "p@example.com"}, {"subject_id": recorded["subject_id"]}):
        assert (await check(client, ref, "marketing", "sms"))["reason"] == "suppressed"
        assert (await check(client, ref, "marketing", "phone"))["reason"] == "suppressed"


async def test_unknown_person_is_suppressed_before_any_subject_exists(client):
    await put(client, [{"email": "stranger@example.com"}, {"phone": "07911 200003"}], ["email", "sms"], "bounce")
    answer = await check(client, {"email": "Stranger@Example.com"}, "marketing", "email")
    assert (answer["allowed"], answer["reason"], answer["subject_id"], answer["consent"]) == (False, "suppressed", None, None)
    assert (await check(client, {"phone": "+447911200003"}, "marketing", "sms"))["reason"] == "suppressed"
    # Not on another channel, and someone never seen who is not suppressed stays unknown.
    assert (await check(client, {"email": "stranger@example.com"}, "marketing", "post"))["reason"] == "unknown_subject"
    assert (await check(client, {"email": "other@example.com"}, "marketing", "email"))["reason"] == "unknown_subject"

    # The person shows up later, named by another identifier with the suppressed one attached: still suppressed.
    recorded = await record(client, {"external_id": "S-1"}, ("marketing", "email", "granted"),
                            identifiers={"email": "stranger@example.com"})
    for ref in ({"external_id": "S-1"}, {"subject_id": recorded["subject_id"]}, {"email": "stranger@example.com"}):
        answer = await check(client, ref, "marketing", "email")
        assert (answer["reason"], answer["subject_id"]) == ("suppressed", recorded["subject_id"]), ref


async def test_batch_and_stream_agree_with_single_checks(client):
    known = await record(client, {"email": "b@example.com"}, ("marketing", "email", "granted"), ("marketing", "sms", "granted"),
                         identifiers={"external_id": "B-1"})
    await record(client, {"email": "free@example.com"}, ("marketing", "email", "granted"))
    await put(client, [{"email": "b@example.com"}, {"email": "nobody@example.com"}], ["email"], "bounce")
    refs = [
        {"email": "b@example.com"}, {"external_id": "B-1"}, {"subject_id": known["subject_id"]},
        {"email": "nobody@example.com"}, {"email": "free@example.com"}, {"email": "unseen@example.com"},
    ]
    expected_email = ["suppressed", "suppressed", "suppressed", "suppressed", "consent_granted", "unknown_subject"]
    checks = [{"subject": ref, "purpose": "marketing", "channel": channel} for channel in ("email", "sms") for ref in refs]
    checks += [{"subject": ref, "purpose": "profiling"} for ref in refs]
    response = await client.post("/v1/checks/batch", json={"checks": checks})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["reason"] for r in results] == (
        expected_email
        + ["consent_granted", "consent_granted", "consent_granted", "unknown_subject", "no_consent", "unknown_subject"]
        + ["legitimate_interest"] * 3 + ["unknown_subject", "legitimate_interest", "unknown_subject"]
    )
    for item, result in zip(checks, results, strict=True):
        single = await check(client, item["subject"], item["purpose"], item.get("channel"))
        assert {k: v for k, v in single.items() if k != "checked_at"} == {k: v for k, v in result.items() if k != "checked_at"}

    ndjson = b"".join(orjson.dumps(ref) + b"\n" for ref in refs)
    response = await client.post("/v1/checks/stream", params={"purpose": "marketing", "channel": "email"},
                                 content=ndjson, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert [(line["line"], line["reason"]) for line in lines] == list(enumerate(expected_email, start=1))
    csv = "email\nb@example.com\nnobody@example.com\nfree@example.com\n"
    response = await client.post("/v1/checks/stream", params={"purpose": "marketing", "channel": "email"},
                                 content=csv, headers={"Content-Type": "text/csv"})
    assert [orjson.loads(line)["reason"] for line in response.content.splitlines()] == ["suppressed", "suppressed", "consent_granted"]


async def test_erased_and_restricted_outrank_suppressed(backend, client):
    erased = await record(client, {"email": "erased@example.com"}, ("marketing", "email", "granted"))
    restricted = await record(client, {"email": "restricted@example.com"}, ("marketing", "email", "granted"))
    await put(client, [{"email": "erased@example.com"}, {"email": "restricted@example.com"}], ["email"])
    async with backend.database.transaction() as session:  # no endpoint sets flags yet
        for recorded, flag in ((erased, "erased"), (restricted, "restricted")):
            await session.execute(sa.update(Subject).where(Subject.id == uuid.UUID(recorded["subject_id"])).values(flags=[flag]))
    for email, reason in (("erased@example.com", "erased"), ("restricted@example.com", "restricted")):
        assert (await check(client, {"email": email}, "marketing", "email"))["reason"] == reason
        item = {"subject": {"email": email}, "purpose": "marketing", "channel": "email"}
        batch = await client.post("/v1/checks/batch", json={"checks": [item]})
        assert batch.json()["results"][0]["reason"] == reason


async def test_invalid_entries_are_listed_and_nothing_is_stored(client):
    entries = [
        {"email": "ok@example.com"},
        {"email": "not-an-email"},
        {"phone": "12"},
        {"external_id": "OK-1"},
        {"phone": "+44 7911 123456"},
        {"email": "also bad@"},
        {"external_id": "   "},
    ]
    problem = assert_problem(await client.put("/v1/suppressions", json={"entries": entries, "channels": ["email"]}), 422)
    assert [e["loc"] for e in problem["errors"]] == [
        ["body", "entries", 1, "email"], ["body", "entries", 2, "phone"], ["body", "entries", 5, "email"],
        ["body", "entries", 6, "external_id"],
    ]
    assert all(e["msg"] for e in problem["errors"])
    assert await listing(client) == []
    assert (await check(client, {"email": "ok@example.com"}, "marketing", "email"))["reason"] == "unknown_subject"

    await put(client, [{"email": "ok@example.com"}], ["email"])
    body = {"entries": [{"email": "ok@example.com"}, {"phone": "x"}], "channels": ["email"]}
    problem = assert_problem(await client.post("/v1/suppressions/remove", json=body), 422)
    assert [e["loc"] for e in problem["errors"]] == [["body", "entries", 1, "phone"]]
    assert len(await listing(client)) == 1  # the valid entry was not removed either


async def test_malformed_bodies_are_problems(client):
    good = {"entries": [{"email": "a@example.com"}], "channels": ["email"], "reason": "manual"}
    bad_bodies = [
        good | {"entries": []},
        good | {"channels": []},
        good | {"channels": ["fax"]},
        good | {"reason": "because"},
        good | {"extra": 1},
        good | {"entries": [{"email": "a@example.com", "phone": "+447911123456"}]},
        good | {"entries": [{}]},
        good | {"entries": [{"device_id": "d-1"}]},
        good | {"entries": [{"subject_id": "00000000-0000-4000-8000-000000000000"}]},
        good | {"entries": [{"email": ""}]},
        good | {"entries": [{"email": 5}]},
        good | {"entries": [{"email": "a\u0000@example.com"}]},
        good | {"entries": "a@example.com"},
        good | {"entries": [{"email": "a@example.com"}] * 10_001},
        {"channels": ["email"]},
        {"entries": [{"email": "a@example.com"}]},
        [],
        None,
    ]
    for body in bad_bodies:
        for method, path in (("PUT", "/v1/suppressions"), ("POST", "/v1/suppressions/remove")):
            response = await client.request(method, path, json=body)
            problem = assert_problem(response, 422)
            assert problem["errors"] and all("loc" in e and "msg" in e for e in problem["errors"]), (method, body)
    not_json = await client.put("/v1/suppressions", content=b"{nope", headers={"Content-Type": "application/json"})
    assert_problem(not_json, 422)
    assert await listing(client) == []


async def test_bad_list_parameters_are_problems(client):
    await put(client, [{"email": f"l{i}@example.com"} for i in range(3)], ["email"])

    bad = [
        {"cursor": "not a cursor!"},
        {"cursor": ""},
        {"cursor": "x" * 129},
        {"cursor": b64(b"no-dot-here")},
        {"cursor": b64(b"a.b.c")},
        {"cursor": b64(b"\xff\xfe.email")},
        {"cursor": b64(b"\x00.email")},
        {"cursor": b64("é\u0000.sms".encode())},
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"channel": "fax"},
    ]
    for params in bad:
        response = await client.get("/v1/suppressions", params=params)
        assert response.status_code < 500, (params, response.text)
        assert_problem(response, 422)
    # A cursor this list handed out, once its row is gone, still continues where it was.
    first = (await client.get("/v1/suppressions", params={"limit": 1})).json()
    rest = (await client.get("/v1/suppressions", params={"cursor": first["next_cursor"]})).json()["entries"]
    # An entry as GET lists it names its identifier as PUT and remove take it.
    await remove(client, [{k: v for k, v in e.items() if k in IDENTIFIER_KINDS} for e in first["entries"]], ["email"])
    assert (await client.get("/v1/suppressions", params={"cursor": first["next_cursor"]})).json()["entries"] == rest


async def test_scopes(anonymous, token):
    body = {"entries": [{"email": "a@example.com"}], "channels": ["email"]}
    assert_problem(await anonymous.put("/v1/suppressions", json=body), 401)
    assert_problem(await anonymous.get("/v1/suppressions"), 401)
    for scope in ("consents:read", "checks:read", "purposes:write"):
        assert_problem(await anonymous.put("/v1/suppressions", json=body, headers=bearer(token(scope))), 403)
        assert_problem(await anonymous.post("/v1/suppressions/remove", json=body, headers=bearer(token(scope))), 403)
    for scope in ("consents:write", "checks:read", "audit:read"):
        assert_problem(await anonymous.get("/v1/suppressions", headers=bearer(token(scope))), 403)
    writer, reader = bearer(token("consents:write")), bearer(token("consents:read"))
    assert (await anonymous.put("/v1/suppressions", json=body, headers=writer)).status_code == 200
    listed = await anonymous.get("/v1/suppressions", headers=reader)
    assert listed.status_code == 200 and len(listed.json()["entries"]) == 1
    assert (await anonymous.post("/v1/suppressions/remove", json=body, headers=writer)).json()["changed"] == 1


async def test_another_tenants_suppressions_are_invisible(client, anonymous, token, other_tenant):
    theirs_write = bearer(token("consents:write", tenant_key=other_tenant))
    theirs_read = bearer(token("consents:read", "checks:read", tenant_key=other_tenant))
    await record(client, {"email": "shared@example.com"}, ("marketing", "email", "granted"))
    their_consent = consent_body({"email": "shared@example.com"}, ("marketing", "email", "granted"))
    response = await anonymous.post("/v1/consents", headers=theirs_write, json=their_consent)
    assert response.status_code == 201, response.text
    await put(client, [{"email": "shared@example.com"}, {"email": "only-ours@example.com"}], ["email"], "complaint")

    listed = await anonymous.get("/v1/suppressions", headers=theirs_read)
    assert listed.json() == {"entries": [], "next_cursor": None}
    for ref, reason in (({"email": "shared@example.com"}, "consent_granted"), ({"email": "only-ours@example.com"}, "unknown_subject")):
        body = {"subject": ref, "purpose": "marketing", "channel": "email"}
        assert (await anonymous.post("/v1/checks", json=body, headers=theirs_read)).json()["reason"] == reason
        batch = await anonymous.post("/v1/checks/batch", json={"checks": [body]}, headers=theirs_read)
        assert batch.json()["results"][0]["reason"] == reason
    assert (await check(client, {"email": "shared@example.com"}, "marketing", "email"))["reason"] == "suppressed"

    # Their remove does not lift ours; a cursor of ours shows them nothing of ours.
    gone = await anonymous.post("/v1/suppressions/remove", headers=theirs_write,
                                json={"entries": [{"email": "shared@example.com"}], "channels": ["email"]})
    assert gone.json()["changed"] == 0
    assert (await check(client, {"email": "shared@example.com"}, "marketing", "email"))["reason"] == "suppressed"
    ours = (await client.get("/v1/suppressions", params={"limit": 1})).json()
    assert ours["next_cursor"] is not None
    theirs = await anonymous.get("/v1/suppressions", params={"cursor": ours["next_cursor"]}, headers=theirs_read)
    assert theirs.json()["entries"] == []


async def test_the_same_identifier_twice_is_one_entry(client):
    added = await put(client, [{"phone": "07911 200004"}, {"phone": "+447911200004"}, {"phone": "+44 (0)7911 200004"}], ["sms"])
    assert added == {"entries": 1, "channels": ["sms"], "changed": 1}
    assert triples(await listing(client)) == {("phone", "+447911200004", "sms", "manual")}


async def test_lone_surrogate_is_a_problem(client):
    body = b'{"entries": [{"external_id": "\\ud800"}], "channels": ["email"]}'
    response = await client.put("/v1/suppressions", content=body, headers={"Content-Type": "application/json"})
    assert_problem(response, 422)


async def test_ten_thousand_entries_on_every_channel(client):
    entries = [{"email": f"bulk{i}@example.com"} for i in range(10_000)]
    added = await put(client, entries, list(CHANNELS), "tps")
    assert added == {"entries": 10_000, "channels": sorted(CHANNELS), "changed": 40_000}
    rows = await listing(client, limit=1000, channel="post")
    assert len(rows) == 10_000 and len({row["value"] for row in rows}) == 10_000
    checks = [{"subject": {"email": f"bulk{i}@example.com"}, "purpose": "marketing", "channel": "sms"} for i in range(0, 10_000, 7)]
    checks.append({"subject": {"email": "not-bulk@example.com"}, "purpose": "marketing", "channel": "sms"})
    results = (await client.post("/v1/checks/batch", json={"checks": checks})).json()["results"]
    assert [r["reason"] for r in results] == ["suppressed"] * (len(checks) - 1) + ["unknown_subject"]
    removed = await remove(client, entries, ["sms", "phone"])
    assert removed["changed"] == 20_000
    assert (await check(client, {"email": "bulk9999@example.com"}, "marketing", "sms"))["reason"] == "unknown_subject"
    assert (await check(client, {"email": "bulk9999@example.com"}, "marketing", "email"))["reason"] == "suppressed"
