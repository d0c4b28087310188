"""Malformed requests on every endpoint: a 4xx problem+json, nothing stored, never a 5xx."""

import pytest

from tests.conftest import assert_problem

GOOD_CONSENT = {"subject": {"email": "bad@example.com"}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}]}
GOOD_CHECK = {"subject": {"email": "bad@example.com"}, "purpose": "marketing", "channel": "email"}
GOOD_PURPOSE = {"title": "T", "legal_basis": "consent", "category": "other"}

WRITES = [
    ("POST", "/v1/consents", GOOD_CONSENT),
    ("POST", "/v1/checks", GOOD_CHECK),
    ("POST", "/v1/checks/batch", {"checks": [GOOD_CHECK]}),
    ("POST", "/v1/subjects/lookup", {"email": "bad@example.com"}),
    ("PUT", "/v1/purposes/bad_input", GOOD_PURPOSE),
]


async def nothing_stored(client) -> None:
    assert_problem(await client.post("/v1/subjects/lookup", json={"email": "bad@example.com"}), 404)
    assert_problem(await client.get("/v1/purposes/bad_input"), 404)


@pytest.mark.parametrize(("method", "path", "_good"), WRITES)
@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"null", b"[]", b'"text"', b"\xff\xfe", b'{"subject": {"email": "a\\u0000b@example.com"}}', b"1e999999"],
)
async def test_malformed_bodies(client, method, path, _good, raw):
    response = await client.request(method, path, content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    await nothing_stored(client)


def mutations(body: dict) -> list[dict]:
    """Unknown fields, wrong types, NUL bytes and over-long strings at every level of `body`."""
    out = [body | {"unexpected": 1}]
    for key, value in body.items():
        if isinstance(value, str):
            out += [body | {key: value + "\u0000"}, body | {key: "x" * 100_000}, body | {key: 12}]
        elif isinstance(value, dict):
            out += [body | {key: inner} for inner in mutations(value)] + [body | {key: "scalar"}]
        elif isinstance(value, list):
            out += [body | {key: [inner]} for inner in mutations(value[0])] + [body | {key: {}}]
    return out


@pytest.mark.parametrize(("method", "path", "good"), WRITES)
async def test_mutated_bodies(client, method, path, good):
    for body in mutations(good):
        response = await client.request(method, path, json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    await nothing_stored(client)


async def test_oversized_bodies_are_413(client):
    huge = {"subject": {"email": "bad@example.com"}, "decisions": [], "evidence": {"blob": "x" * 2_000_000}}
    assert_problem(await client.post("/v1/consents", json=huge), 413)

    async def chunks():  # no Content-Length: the limit is enforced on what is streamed
        for _ in range(40):
            yield b"x" * 65_536

    assert_problem(await client.post("/v1/consents", content=chunks(), headers={"content-type": "application/json"}), 413)
    await nothing_stored(client)


async def test_evidence_limits(client):
    for evidence in ({"blob": "x" * 20_000}, {"nul": "a\u0000"}):
        assert_problem(await client.post("/v1/consents", json=GOOD_CONSENT | {"evidence": evidence}), 422)
    await nothing_stored(client)


async def test_unknown_routes_and_methods_are_problems(client):
    assert_problem(await client.get("/v1/nothing-here"), 404)
    assert_problem(await client.delete("/v1/consents"), 405)


@pytest.mark.parametrize(("method", "path", "good"), WRITES)
async def test_a_body_that_is_not_json_is_refused(client, method, path, good):
    import json

    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = await client.request(method, path, content=json.dumps(good), headers={"content-type": content_type})
        assert_problem(response, 422)
    # A JSON body with a charset parameter is JSON (the lookup's unknown subject is a 404, not a refusal).
    response = await client.request(method, path, content=json.dumps(good), headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code in (200, 201, 404), response.text


@pytest.mark.parametrize(
    "evidence",
    [b'{"a": "\\ud800"}', b'{"a": 123456789012345678901234567890}', b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}"],
)
async def test_evidence_that_no_database_can_store_is_refused(client, evidence):
    raw = (
        b'{"subject": {"email": "bad@example.com"}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],'
        b' "evidence": ' + evidence + b"}"
    )
    assert_problem(await client.post("/v1/consents", content=raw, headers={"content-type": "application/json"}), 422)
    await nothing_stored(client)


async def test_non_finite_numbers_in_evidence_are_stored_as_null(client):
    raw = (
        b'{"subject": {"email": "nan@example.com"}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],'
        b' "evidence": {"score": NaN, "big": 1e400}}'
    )
    response = await client.post("/v1/consents", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text
