"""Bearer JWT verification: algorithm allow-list, required claims, issuer, audience, expiry, RS256."""

import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from app.main import create_app
from tests.conftest import TEST_SECRET, assert_problem, bearer, settings_for

CHECK = {"subject": {"email": "a@example.com"}, "purpose": "marketing", "channel": "email"}


def claims(tenant_key: str, **changes: object) -> dict:
    now = int(time.time())
    base = {"iss": "consentd", "aud": "consentd", "sub": "c", "tenant": tenant_key, "scope": "checks:read", "exp": now + 60}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "change",
    [
        {"exp": int(time.time()) - 10},
        {"exp": None},
        {"iss": "someone-else"},
        {"iss": None},
        {"aud": "another-service"},
        {"aud": None},
        {"sub": None},
        {"tenant": None},
        {"tenant": "Not A Tenant!"},
        {"scope": None},
        {"scope": ["checks:read"]},
        {"exp": [1]},
        {"iat": [1]},
        {"nbf": {}},
        {"tenant": "no-such-tenant"},
        # NumericDates are JSON numbers: python-jose alone would take a numeric string, and Infinity is no date.
        {"exp": "9999999999"},
        {"exp": f"{int(time.time()) + 60}"},
        {"exp": True},
        {"iat": "1700000000"},
        {"nbf": "0"},
        {"iat": False},
        {"exp": float("inf")},
        {"nbf": float("-inf")},
    ],
)
async def test_bad_claims_are_401(anonymous, tenant, change):
    token = jwt.encode(claims(tenant, **change), TEST_SECRET, algorithm="HS256")
    assert_problem(await anonymous.post("/v1/checks", json=CHECK, headers=bearer(token)), 401)


async def test_bad_signatures_and_headers_are_401(anonymous, tenant):
    wrong_key = jwt.encode(claims(tenant), "another-secret-of-sufficient-length-000", algorithm="HS256")
    header, payload, _ = jwt.encode(claims(tenant), TEST_SECRET, algorithm="HS256").split(".")
    import base64

    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    for value in (f"Bearer {wrong_key}", f"Bearer {none_header}.{payload}.", "Bearer", "Bearer x.y.z",
                  f"Basic {wrong_key}", f"Bearer {header}.{payload}.AAAA"):
        response = await anonymous.post("/v1/checks", json=CHECK, headers={"Authorization": value})
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_good_token_passes(anonymous, tenant):
    token = jwt.encode(claims(tenant), TEST_SECRET, algorithm="HS256")
    assert (await anonymous.post("/v1/checks", json=CHECK, headers=bearer(token))).status_code == 200


async def test_fractional_time_claims_are_numbers_too(anonymous, tenant):
    now = time.time()
    token = jwt.encode(claims(tenant, exp=now + 60.5, iat=now - 0.5, nbf=now - 1.5), TEST_SECRET, algorithm="HS256")
    assert (await anonymous.post("/v1/checks", json=CHECK, headers=bearer(token))).status_code == 200


async def test_reading_purposes_needs_some_scope(anonymous, tenant):
    empty = jwt.encode(claims(tenant, scope=""), TEST_SECRET, algorithm="HS256")
    assert_problem(await anonymous.get("/v1/purposes", headers=bearer(empty)), 403)
    unknown = jwt.encode(claims(tenant, scope="everything"), TEST_SECRET, algorithm="HS256")
    assert_problem(await anonymous.get("/v1/purposes", headers=bearer(unknown)), 403)


async def test_admin_holds_every_scope(anonymous, token):
    admin = bearer(token("admin"))
    assert (await anonymous.post("/v1/checks", json=CHECK, headers=admin)).status_code == 200
    assert (await anonymous.get("/v1/purposes", headers=admin)).status_code == 200


async def test_rs256_verification_refuses_hs256(backend, tenant):
    """With a public key configured only RS256/ES256 pass: an HS256 token signed with the key's text is refused."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    app = create_app(settings_for(backend.url, jwt_public_key=public_pem))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        good = jwt.encode(claims(tenant), private_pem, algorithm="RS256")
        assert (await http.post("/v1/checks", json=CHECK, headers=bearer(good))).status_code == 200
        hs = jwt.encode(claims(tenant), TEST_SECRET, algorithm="HS256")
        assert_problem(await http.post("/v1/checks", json=CHECK, headers=bearer(hs)), 401)


@pytest.fixture
def jwks_server():
    """A JWKS endpoint on loopback whose keys the test can rotate."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    keys: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"keys": keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json", keys
    finally:
        server.shutdown()


def es256_key(kid: str) -> tuple[str, dict]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jose import jwk

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return pem, jwk.construct(public, "ES256").to_dict() | {"kid": kid, "alg": "ES256", "use": "sig"}


async def test_jwks_es256_with_rotation(backend, tenant, jwks_server):
    url, keys = jwks_server
    first_pem, first_jwk = es256_key("k1")
    keys.append(first_jwk)
    app = create_app(settings_for(backend.url, jwks_url=url, jwks_min_refresh_seconds=0))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        signed = jwt.encode(claims(tenant), first_pem, algorithm="ES256", headers={"kid": "k1"})
        assert (await http.post("/v1/checks", json=CHECK, headers=bearer(signed))).status_code == 200
        # The provider rotates to a new key: the first token naming it triggers a fetch of the JWKS.
        second_pem, second_jwk = es256_key("k2")
        keys.append(second_jwk)
        rotated = jwt.encode(claims(tenant), second_pem, algorithm="ES256", headers={"kid": "k2"})
        assert (await http.post("/v1/checks", json=CHECK, headers=bearer(rotated))).status_code == 200
        stranger_pem, _ = es256_key("k3")
        unknown = jwt.encode(claims(tenant), stranger_pem, algorithm="ES256", headers={"kid": "k3"})
        assert_problem(await http.post("/v1/checks", json=CHECK, headers=bearer(unknown)), 401)
        forged = jwt.encode(claims(tenant), stranger_pem, algorithm="ES256", headers={"kid": "k1"})
        assert_problem(await http.post("/v1/checks", json=CHECK, headers=bearer(forged)), 401)
