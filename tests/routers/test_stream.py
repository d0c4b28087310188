"""POST /v1/checks/stream: a list answered line by line, in order, with per-line errors and stream-ending limits."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.main import create_app
from app.services.checks import streams
from tests.conftest import Backend, TokenFactory, assert_problem, bearer, settings_for
from tests.support.api import check, record
from tests.test_fault import TcpProxy

STREAM = "/v1/checks/stream"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


async def stream(
    http: httpx.AsyncClient,
    body: bytes | AsyncIterator[bytes],
    *,
    purpose: str = "marketing",
    channel: str | None = "email",
    content_type: str | None = "text/csv",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    params = {"purpose": purpose} | ({"channel": channel} if channel else {})
    sent = {"content-type": content_type} if content_type else {}
    return await http.post(STREAM, params=params, content=body, headers={**sent, **(headers or {})})


def answers(response: httpx.Response) -> list[dict]:
    """The NDJSON lines of a 200 answer, each a whole JSON object."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.text == "" or response.text.endswith("\n"), response.text[-200:]
    return [orjson.loads(line) for line in response.text.split("\n")[:-1]]


def brief(rows: list[dict]) -> list[tuple]:
    """(line, allowed, reason, subject_id) per answer, (line, error) per bad line."""
    return [
        (row["line"], row["error"]) if "error" in row else (row["line"], row["allowed"], row["reason"], row["subject_id"])
        for row in rows
    ]


def ndjson(*refs: dict | bytes) -> bytes:
    return b"".join((ref if isinstance(ref, bytes) else orjson.dumps(ref)) + b"\n" for ref in refs)


async def suppress(http: httpx.AsyncClient, *entries: dict, channels: tuple[str, ...] = ("email",)) -> None:
    response = await http.put(
        "/v1/suppressions", json={"entries": list(entries), "channels": list(channels), "reason": "bounce"}
    )
    assert response.status_code == 200, response.text


async def people(http: httpx.AsyncClient) -> dict[str, str]:
    """Subjects in every state that matters to marketing by email; their subject ids by name."""
    ann = await record(http, {"email": "ann@example.com"}, ("marketing", "email", "granted"))
    wes = await record(http, {"email": "wes@example.com"}, ("marketing", "email", "granted"))
    await record(http, {"email": "wes@example.com"}, ("marketing", "email", "withdrawn"))
    sam = await record(http, {"email": "sam@example.com"}, ("marketing", "sms", "granted"))
    sue = await record(http, {"email": "sue@example.com"}, ("marketing", "email", "granted"))
    pat = await record(
        http, {"email": "pat@example.com"}, ("marketing", "email", "granted"),
        identifiers={"phone": "+447911123450", "external_id": "PAT-1", "device_id": "dev-pat"},
    )
    # Suppressed on email: sue (consent or not), pat (through his email, so also when named by phone),
    # and an address nobody has recorded yet. Ann is suppressed on sms only, which does not touch email.
    await suppress(http, {"email": "sue@example.com"}, {"email": "pat@example.com"}, {"email": "bounced@example.com"})
    await suppress(http, {"email": "ann@example.com"}, channels=("sms",))
    return {name: body["subject_id"] for name, body in (("ann", ann), ("wes", wes), ("sam", sam), ("sue", sue), ("pat", pat))}


async def test_csv_answers_every_line_in_order(client):
    ids = await people(client)
    body = (
        b"email\r\n"
        b"ann@example.com\r\n"  # 2
        b"WES@Example.com\r\n"  # 3: emails are normalised
        b"\r\n"  # 4: blank, skipped, but counted
        b"sam@example.com\r\n"  # 5
        b"sue@example.com\r\n"  # 6
        b"bounced@example.com\r\n"  # 7
        b"uma@example.com\r\n"  # 8
        b"pat@example.com\r\n"  # 9
        b"ann@example.com"  # 10: no final newline, and a repeat
    )
    rows = answers(await stream(client, body))
    assert brief(rows) == [
        (2, True, "consent_granted", ids["ann"]),
        (3, False, "withdrawn", ids["wes"]),
        (5, False, "no_consent", ids["sam"]),
        (6, False, "suppressed", ids["sue"]),
        (7, False, "suppressed", None),
        (8, False, "unknown_subject", None),
        (9, False, "suppressed", ids["pat"]),
        (10, True, "consent_granted", ids["ann"]),
    ]
    assert all(set(row) == {"line", "allowed", "reason", "subject_id"} for row in rows)
    # The same answers as single checks.
    for row, email in zip(rows, ["ann", "wes", "sam", "sue", "bounced", "uma", "pat", "ann"], strict=True):
        single = await check(client, {"email": f"{email}@example.com"}, "marketing", "email")
        assert (single["allowed"], single["reason"], single["subject_id"]) == (row["allowed"], row["reason"], row["subject_id"])


async def test_ndjson_every_kind_of_reference(client):
    ids = await people(client)
    body = ndjson(
        {"email": "ann@example.com"},  # 1
        {"phone": "07911 123450"},  # 2: pat, suppressed through his email
        {"external_id": "PAT-1"},  # 3
        {"device_id": "dev-pat"},  # 4
        {"subject_id": ids["ann"]},  # 5
        {"subject_id": ids["pat"]},  # 6
        {"subject_id": UNKNOWN_ID},  # 7
        {"external_id": "nobody"},  # 8
        {"phone": "+447911123452"},  # 9: a valid number nobody has
    )
    rows = answers(await stream(client, body, content_type="application/x-ndjson"))
    assert brief(rows) == [
        (1, True, "consent_granted", ids["ann"]),
        (2, False, "suppressed", ids["pat"]),
        (3, False, "suppressed", ids["pat"]),
        (4, False, "suppressed", ids["pat"]),
        (5, True, "consent_granted", ids["ann"]),
        (6, False, "suppressed", ids["pat"]),
        (7, False, "unknown_subject", None),
        (8, False, "unknown_subject", None),
        (9, False, "unknown_subject", None),
    ]


async def test_suppression_is_per_channel(client):
    ids = await people(client)
    await record(client, {"email": "ann@example.com"}, ("marketing", "sms", "granted"))
    body = b"email\nann@example.com\nsue@example.com\nbounced@example.com\n"
    rows = answers(await stream(client, body, channel="sms"))
    # Ann is suppressed on sms; sue and the bounced address only on email.
    assert brief(rows) == [
        (2, False, "suppressed", ids["ann"]),
        (3, False, "no_consent", ids["sue"]),
        (4, False, "unknown_subject", None),
    ]


MIXED = [
    {"email": "ann@example.com"}, {"email": "ANN@Example.COM"}, {"email": "wes@example.com"}, {"email": "sam@example.com"},
    {"email": "sue@example.com"}, {"email": "bounced@example.com"}, {"email": "uma@example.com"},
    {"email": "pat@example.com"}, {"phone": "07911 123450"}, {"phone": "+447911123452"}, {"external_id": "PAT-1"},
    {"device_id": "dev-pat"}, {"external_id": "nobody"}, {"subject_id": UNKNOWN_ID}, {"email": "not-an-email"},
    {"email": "@example.com"}, {"phone": "12"}, {"email": '"quoted"@example.com'}, {"email": "a@xn--p1ai.com"},
    {"email": "jos\u00e9@example.com"},
]


@pytest.mark.parametrize(("purpose", "channel"), [("marketing", "email"), ("marketing", "sms"), ("profiling", None)])
async def test_every_line_answers_as_a_single_check(client, purpose, channel):
    """A mixed list, as NDJSON and as CSV: each line's answer is what POST /v1/checks answers for it."""
    ids = await people(client)
    await record(client, {"email": "ann@example.com"}, ("profiling", None, "withdrawn"))
    refs = [*MIXED, {"subject_id": ids["ann"]}, {"subject_id": ids["pat"]}]
    singles = []
    for ref in refs:
        response = await client.post("/v1/checks", json={"subject": ref, "purpose": purpose, "channel": channel})
        if response.status_code == 200:
            body = response.json()
            singles.append((body["allowed"], body["reason"], body["subject_id"]))
        else:
            singles.append((assert_problem(response, 422)["detail"],))
    as_ndjson = answers(await stream(client, ndjson(*refs), purpose=purpose, channel=channel, content_type="application/x-ndjson"))
    emails = [ref["email"] for ref in refs if "email" in ref]
    csv_body = ("email\n" + "\n".join(f'"{email}"' if '"' in email else email for email in emails) + "\n").encode()
    csv_body = csv_body.replace(b'""quoted""', b'"""quoted"""')
    as_csv = answers(await stream(client, csv_body, purpose=purpose, channel=channel))
    want_csv = [single for ref, single in zip(refs, singles, strict=True) if "email" in ref]
    for rows, want in ((as_ndjson, singles), (as_csv, want_csv)):
        assert [tuple(row[key] for key in ("allowed", "reason", "subject_id")) if "error" not in row else (row["error"],)
                for row in rows] == want


@pytest.mark.parametrize(
    "content_type", ["application/x-ndjson; charset=utf-8", "application/ndjson", "application/jsonl", "APPLICATION/X-NDJSON"]
)
async def test_ndjson_content_types(client, content_type):
    await record(client, {"email": "ann@example.com"}, ("marketing", "email", "granted"))
    rows = answers(await stream(client, ndjson({"email": "ann@example.com"}), content_type=content_type))
    assert [(row["line"], row["reason"]) for row in rows] == [(1, "consent_granted")]


async def test_csv_extra_columns_and_quoted_fields(client):
    ids = await people(client)
    body = (
        "\ufeffName,\"E-mail Note\", Email ,Country\n"  # a BOM, a quoted header, spaces and case around `email`
        '"Smith, Ann","says ""hi""",ann@example.com,GB\n'
        'Wes,,"wes@example.com",FR\n'
        '"Uma, ""the new one""",x," uma@example.com ",\n'
        "Short row,only two\n"  # 5: no email column at all
        'Empty,x,"",GB\n'  # 6: an empty email
        "Sue,,sue@example.com,GB,extra,columns\n"  # 7: more fields than the header is fine
    ).encode()
    rows = answers(await stream(client, body, content_type="text/csv; charset=utf-8"))
    assert brief(rows) == [
        (2, True, "consent_granted", ids["ann"]),
        (3, False, "withdrawn", ids["wes"]),
        (4, False, "unknown_subject", None),
        (5, "missing email"),
        (6, "missing email"),
        (7, False, "suppressed", ids["sue"]),
    ]


@pytest.mark.parametrize("column", ["phone", "external_id", "device_id"])
async def test_csv_other_identifier_columns(client, column):
    recorded = await record(
        client, {"phone": "+447911123451"}, ("marketing", "post", "granted"),
        identifiers={"external_id": "EXT-9", "device_id": "dev-9"},
    )
    value = {"phone": "07911 123451", "external_id": "EXT-9", "device_id": "dev-9"}[column]
    other = {"phone": "+447911123452", "external_id": "EXT-10", "device_id": "dev-10"}[column]
    body = f"id,{column}\n1,{value}\n2,{other}\n".encode()
    rows = answers(await stream(client, body, channel="post"))
    assert brief(rows) == [(2, True, "consent_granted", recorded["subject_id"]), (3, False, "unknown_subject", None)]


async def test_csv_subject_id_column(client):
    ids = await people(client)
    body = f"subject_id,name\n{ids['ann']},Ann\n{ids['wes'].upper()},Wes\n{UNKNOWN_ID},?\nnot-a-uuid,?\n,?\n".encode()
    rows = answers(await stream(client, body))
    assert brief(rows) == [
        (2, True, "consent_granted", ids["ann"]),
        (3, False, "withdrawn", ids["wes"]),
        (4, False, "unknown_subject", None),
        (5, "invalid subject_id"),
        (6, "missing subject_id"),
    ]


async def test_purposes_without_channels(client):
    ids = await people(client)
    await record(client, {"email": "ann@example.com"}, ("profiling", None, "withdrawn"))
    await record(client, {"email": "sue@example.com"}, ("cookies_analytics", None, "granted"))
    body = b"email\nann@example.com\nsue@example.com\numa@example.com\n"
    assert brief(answers(await stream(client, body, purpose="profiling", channel=None))) == [
        (2, False, "objected", ids["ann"]),
        (3, True, "legitimate_interest", ids["sue"]),  # email suppressions do not touch a channel-less purpose
        (4, False, "unknown_subject", None),
    ]
    assert brief(answers(await stream(client, body, purpose="cookies_analytics", channel=None))) == [
        (2, False, "no_consent", ids["ann"]),
        (3, True, "consent_granted", ids["sue"]),
        (4, False, "unknown_subject", None),
    ]


async def test_bad_ndjson_lines_are_reported_and_the_stream_goes_on(client):
    ids = await people(client)
    body = ndjson(
        {"email": "ann@example.com"},  # 1
        {"email": "not-an-email"},  # 2
        b'{"email": "ann@example.com"',  # 3: truncated JSON
        {"email": "ann@example.com", "phone": "+447911123450"},  # 4: two identifiers
        b'{"email": "caf\xe9@example.com"}',  # 5: Latin-1, not UTF-8
        b'{"email": "' + b"a" * 5_000 + b'@example.com"}',  # 6: longer than the line limit
        b"[]",  # 7
        {"fax": "123"},  # 8: not an identifier
        {"subject_id": "nope"},  # 9
        {"phone": "12"},  # 10
        {},  # 11
        b"   ",  # 12: blank
        {"email": "sue@example.com"},  # 13
    )
    rows = answers(await stream(client, body, content_type="application/x-ndjson"))
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    by_line = {row["line"]: row for row in rows}
    assert brief([by_line[1], by_line[13]]) == [(1, True, "consent_granted", ids["ann"]), (13, False, "suppressed", ids["sue"])]
    assert by_line[2] == {"line": 2, "error": "invalid email"}
    assert by_line[5] == {"line": 5, "error": "not UTF-8"}
    assert by_line[6] == {"line": 6, "error": "line longer than 4096 bytes"}
    assert by_line[10] == {"line": 10, "error": "invalid phone"}
    for line in (3, 4, 7, 8, 9, 11):
        assert set(by_line[line]) == {"line", "error"} and by_line[line]["error"], by_line[line]
    assert "exactly one" in by_line[4]["error"] and "exactly one" in by_line[11]["error"]
    assert "fax" in by_line[8]["error"] and "subject_id" in by_line[9]["error"]


async def test_bad_csv_lines_are_reported_and_the_stream_goes_on(client):
    ids = await people(client)
    body = (
        b"email,name\n"
        b"ann@example.com,Ann\n"  # 2
        b"@example.com,?\n"  # 3
        b"\xff\xfe@example.com,?\n"  # 4: not UTF-8
        + b"x" * 5_000 + b"@example.com,?\n"  # 5: too long
        + b"bad\rcr@example.com,?\n"  # 6: a bare CR inside a line (the csv module refuses it)
        b'"unterminated@example.com,?\n'  # 7
        b"sue@example.com,Sue\n"  # 8
    )
    rows = answers(await stream(client, body))
    assert brief(rows)[:4] == [
        (2, True, "consent_granted", ids["ann"]),
        (3, "invalid email"),
        (4, "not UTF-8"),
        (5, "line longer than 4096 bytes"),
    ]
    assert brief(rows)[4:] == [
        (6, "not a valid CSV line"),
        (7, "invalid email"),  # an unterminated quote runs to the end of its line: `unterminated@example.com,?`
        (8, False, "suppressed", ids["sue"]),
    ]


async def test_more_lines_than_a_chunk(client, backend: Backend, monkeypatch):
    """Chunks of 7 lines: each is one round of reads, answered in order, line numbers never shifted."""
    monkeypatch.setattr(streams, "CHUNK_LINES", 7)
    reader = backend.services.checker.reader
    real_chunk = reader.chunk
    rounds: list[int] = []

    async def counted_chunk(tenant, lookups, purpose, channel):  # a spy on the real reader
        rounds.append(len(lookups))
        return await real_chunk(tenant, lookups, purpose, channel)

    monkeypatch.setattr(reader, "chunk", counted_chunk)
    ids = await people(client)
    rounds.clear()
    names = ["ann", "wes", "sam", "sue", "bounced", "uma", "pat"]
    lines, want = [b"email"], []
    reasons = {
        "ann": (True, "consent_granted"), "wes": (False, "withdrawn"), "sam": (False, "no_consent"),
        "sue": (False, "suppressed"), "bounced": (False, "suppressed"), "uma": (False, "unknown_subject"),
        "pat": (False, "suppressed"),
    }
    for i in range(100):
        name = names[i % len(names)]
        if i % 11 == 0:
            lines.append(b"")  # blank lines shift numbering, not answers
        if i % 13 == 0:
            lines.append(b"broken@")
            want.append((len(lines), "invalid email"))
        lines.append(f"{name}@example.com".encode())
        want.append((len(lines), *reasons[name], ids.get(name)))
    body = b"\n".join(lines) + b"\n"

    async def dribble() -> AsyncIterator[bytes]:
        """The body in pieces of 5 bytes: lines cross every chunk boundary."""
        for start in range(0, len(body), 5):
            yield body[start : start + 5]

    for content in (body, dribble()):
        rounds.clear()
        rows = answers(await stream(client, content))
        assert brief(rows) == want
        # One round per 7 lines (bad lines included, they take their place in a chunk).
        assert len(rounds) == -(-len(want) // 7) and sum(rounds) == sum(len(row) > 2 for row in want), rounds


async def test_empty_lists(client):
    assert answers(await stream(client, b"email\n")) == []
    assert answers(await stream(client, b"email\n\n\r\n  \n")) == []
    assert answers(await stream(client, b"", content_type="application/x-ndjson")) == []
    assert answers(await stream(client, b"\n\n", content_type="application/x-ndjson")) == []


async def test_header_after_blank_lines_keeps_physical_numbers(client):
    await record(client, {"email": "ann@example.com"}, ("marketing", "email", "granted"))
    rows = answers(await stream(client, b"\n\nemail\n\nann@example.com\n"))
    assert [(row["line"], row["reason"]) for row in rows] == [(5, "consent_granted")]


# Up-front errors: problem+json, and nothing is answered.


@pytest.mark.parametrize(
    ("params", "body", "content_type", "status"),
    [
        ({"purpose": "no_such_purpose", "channel": "email"}, b"email\na@example.com\n", "text/csv", 404),
        ({"purpose": "market_research", "channel": "sms"}, b"email\na@example.com\n", "text/csv", 422),
        ({"purpose": "marketing"}, b"email\na@example.com\n", "text/csv", 422),  # needs a channel
        ({"purpose": "cookies_analytics", "channel": "email"}, b"email\na@example.com\n", "text/csv", 422),
        ({"purpose": "marketing", "channel": "fax"}, b"email\na@example.com\n", "text/csv", 422),
        ({"purpose": "Not A Key", "channel": "email"}, b"email\na@example.com\n", "text/csv", 422),
        ({"channel": "email"}, b"email\na@example.com\n", "text/csv", 422),  # no purpose
        ({"purpose": "marketing", "channel": "email"}, b"name,note\nAnn,x\n", "text/csv", 422),
        ({"purpose": "marketing", "channel": "email"}, b"email,phone\na@example.com,+447911123456\n", "text/csv", 422),
        ({"purpose": "marketing", "channel": "email"}, b"a@example.com\nb@example.com\n", "text/csv", 422),  # no header
        ({"purpose": "marketing", "channel": "email"}, b"", "text/csv", 422),  # no header at all
        ({"purpose": "marketing", "channel": "email"}, b"\xffemail\na@example.com\n", "text/csv", 422),
        ({"purpose": "marketing", "channel": "email"}, b"email\rname\na@example.com\n", "text/csv", 422),
        ({"purpose": "marketing", "channel": "email"}, b"email" * 1_000 + b"\na@example.com\n", "text/csv", 422),
        ({"purpose": "marketing", "channel": "email"}, b'{"email": "a@example.com"}\n', "application/json", 415),
        ({"purpose": "marketing", "channel": "email"}, b"email\na@example.com\n", "text/plain", 415),
        ({"purpose": "marketing", "channel": "email"}, b"email\na@example.com\n", None, 415),
    ],
)
async def test_up_front_errors(client, params, body, content_type, status):
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post(STREAM, params=params, content=body, headers=headers)
    problem = assert_problem(response, status)
    # One problem document, not the start of a stream.
    assert "line" not in problem and "allowed" not in response.text and response.text.count("\n") <= 1


async def test_csv_header_error_says_what_it_needs(client):
    problem = assert_problem(await stream(client, b"name,e_mail\nAnn,a@example.com\n"), 422)
    assert "email" in problem["detail"] and "subject_id" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "header"]


async def test_needs_checks_read(anonymous, token: TokenFactory):
    body, params = b"email\na@example.com\n", {"purpose": "marketing", "channel": "email"}
    csv = {"content-type": "text/csv"}
    unauthorized = assert_problem(await anonymous.post(STREAM, params=params, content=body, headers=csv), 401)
    assert "line" not in unauthorized
    assert_problem(await anonymous.post(STREAM, params=params, content=body, headers={**csv, **bearer("not.a.jwt")}), 401)
    for scopes in (("consents:read",), ("consents:write",), ("consents:read", "consents:write")):
        forbidden = await anonymous.post(STREAM, params=params, content=body, headers={**csv, **bearer(token(*scopes))})
        assert_problem(forbidden, 403)
    allowed = await anonymous.post(STREAM, params=params, content=body, headers={**csv, **bearer(token("checks:read"))})
    assert brief(answers(allowed)) == [(2, False, "unknown_subject", None)]


async def test_another_tenants_people_are_unknown(client, anonymous, token: TokenFactory, other_tenant):
    ids = await people(client)
    theirs = {**bearer(token("checks:read", tenant_key=other_tenant)), "content-type": "application/x-ndjson"}
    body = ndjson(
        {"email": "ann@example.com"}, {"subject_id": ids["ann"]}, {"phone": "+447911123450"},
        {"email": "bounced@example.com"},  # suppressed in the first tenant only
    )
    response = await anonymous.post(STREAM, params={"purpose": "marketing", "channel": "email"}, content=body, headers=theirs)
    assert brief(answers(response)) == [
        (1, False, "unknown_subject", None),
        (2, False, "unknown_subject", None),
        (3, False, "unknown_subject", None),
        (4, False, "unknown_subject", None),
    ]


async def test_another_tenants_purpose_is_not_found(client, anonymous, token: TokenFactory, other_tenant):
    purpose = {"title": "Share with Acme", "legal_basis": "consent", "category": "sharing", "third_party": "Acme Ltd"}
    assert (await client.put("/v1/purposes/share_acme", json=purpose)).status_code == 200
    assert answers(await stream(client, b"email\na@example.com\n", purpose="share_acme", channel=None))
    theirs = {**bearer(token("checks:read", tenant_key=other_tenant)), "content-type": "text/csv"}
    response = await anonymous.post(STREAM, params={"purpose": "share_acme"}, content=b"email\na@example.com\n", headers=theirs)
    assert_problem(response, 404)


# Limits: an app of its own with small caps on the same database.

MAX_LINES = 5
MAX_BODY = 400


@pytest.fixture
async def capped(backend: Backend, token: TokenFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app that allows 5 lines and 400 bytes per stream, with an admin token of the test's tenant."""
    app: FastAPI = create_app(settings_for(backend.url, stream_max_lines=MAX_LINES, stream_max_body_bytes=MAX_BODY))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://consentd.test", headers=bearer(token("admin"))
        ) as http:
            yield http


async def test_too_many_lines_ends_the_stream_after_answering_the_allowed_ones(capped, client):
    ids = await people(client)
    body = (
        b"email\nann@example.com\n\nwes@example.com\nsam@example.com\numa@example.com\nsue@example.com\npat@example.com"
        b"\nann@example.com\n"
    )
    rows = answers(await stream(capped, body))
    assert brief(rows[:-1]) == [
        (2, True, "consent_granted", ids["ann"]),
        (4, False, "withdrawn", ids["wes"]),
        (5, False, "no_consent", ids["sam"]),
        (6, False, "unknown_subject", None),
        (7, False, "suppressed", ids["sue"]),
    ]
    assert rows[-1] == {"line": 8, "error": f"too many lines: at most {MAX_LINES} per stream"}

    exactly = ndjson(*({"email": f"n{i}@example.com"} for i in range(MAX_LINES)))
    assert [row["line"] for row in answers(await stream(capped, exactly, content_type="application/x-ndjson"))] == [1, 2, 3, 4, 5]
    # Bad lines count too: the limit is on lines, not on good ones.
    bad = ndjson(*([b"{"] * MAX_LINES), {"email": "ann@example.com"})
    rows = answers(await stream(capped, bad, content_type="application/x-ndjson"))
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5, 6] and "too many lines" in rows[-1]["error"]


async def test_declared_body_over_the_cap_is_refused_up_front(capped):
    body = b"email\n" + b"".join(f"person{i:03d}@example.com\n".encode() for i in range(40))
    assert len(body) > MAX_BODY
    problem = assert_problem(await stream(capped, body), 413)
    assert str(MAX_BODY) in problem["detail"]


async def test_streamed_body_over_the_cap_ends_the_stream(capped, client):
    """Without Content-Length the cap is met mid-stream: the lines received are answered, then the error."""
    ids = await people(client)
    header, line = b"email,padding\n", b"ann@example.com," + b"p" * 84 + b"\n"  # 101 bytes: fewer lines than the line cap

    async def body() -> AsyncIterator[bytes]:
        yield header
        for _ in range(100):
            yield line

    rows = answers(await stream(capped, body()))
    fits = (MAX_BODY - len(header)) // len(line)  # whole lines within the cap
    assert 0 < fits < MAX_LINES
    assert brief(rows[:-1]) == [(n, True, "consent_granted", ids["ann"]) for n in range(2, 2 + fits)]
    assert rows[-1] == {"line": 2 + fits, "error": f"the request body is larger than {MAX_BODY} bytes"}


async def test_streamed_header_over_the_cap_is_refused_up_front(capped):
    async def body() -> AsyncIterator[bytes]:
        yield b"email,"
        for _ in range(100):
            yield b"x" * 10

    assert_problem(await stream(capped, body()), 413)


# A database that goes away mid-stream (PostgreSQL, through a proxy that can cut every connection).


async def test_database_lost_mid_stream_ends_with_an_error_line(pg_backend: Backend, token: TokenFactory, client, monkeypatch):
    await people(client)
    monkeypatch.setattr(streams, "CHUNK_LINES", 10)
    url = make_url(pg_backend.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        app = create_app(settings_for(proxied, db_timeout=2))
        async with app.router.lifespan_context(app):

            async def body() -> AsyncIterator[bytes]:
                yield b"email\n" + b"ann@example.com\n" * 20  # lines 2-21: two chunks, their queries sent
                await asyncio.sleep(0.5)  # a chunk's queries run while the next chunk is read: let them finish
                await proxy.cut()
                yield b"ann@example.com\n" * 25

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://consentd.test", timeout=20) as http:
                response = await stream(http, body(), headers=bearer(token("checks:read")))
                rows = answers(response)
                # Gone before a stream starts: refused up front, like every other route.
                refused = await stream(http, b"email\nann@example.com\n", headers=bearer(token("checks:read")))
                assert_problem(refused, 503)
    finally:
        await proxy.close()
    assert [(row["line"], row["reason"]) for row in rows[:-1]] == [(n, "consent_granted") for n in range(2, 22)]
    assert set(rows[-1]) <= {"line", "error"} and "database" in rows[-1]["error"], rows[-1]
