"""Signing keys and the Signer: key loading and validation, the JWKS, signing, verification, rotation."""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jose import jws, jwt
from pydantic import ValidationError

from app.config import Settings
from app.security import (
    DEV_SIGNING_KID,
    SignatureError,
    Signer,
    SigningKeyError,
    thumbprint,
    verify_with_jwks,
)

STRONG = "s" * 40
JUNK_PEM = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def settings(**values: object) -> Settings:
    return Settings(env="test", **values)


def private_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def public_pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_thumbprint_matches_rfc_7638_example():
    # The RSA key of RFC 7638, section 3.1, and the thumbprint the RFC gives for it.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
        "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajr"
        "n1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    public = rsa.RSAPublicNumbers(65537, int.from_bytes(b64decode(n), "big")).public_key()
    assert thumbprint(public) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_development_key_is_deterministic_and_es256():
    first, second = Signer(settings()), Signer(settings())
    assert first.development and (first.kid, first.alg) == (DEV_SIGNING_KID, "ES256")
    assert first.jwks() == second.jwks()
    (key,) = first.jwks()["keys"]
    assert key["kid"] == DEV_SIGNING_KID and key["kty"] == "EC" and key["crv"] == "P-256" and key["use"] == "sig"
    assert "d" not in key  # never the private part


def test_sign_and_verify_round_trip():
    signer = Signer(settings())
    moment = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    ident = UUID("12345678-1234-5678-1234-567812345678")
    token = signer.sign({"at": moment, "id": ident, "n": 1}, typ="test+jwt")
    header = jws.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": DEV_SIGNING_KID, "typ": "test+jwt"}
    expected = {"at": "2026-01-02T03:04:05.600000Z", "id": str(ident), "n": 1}
    assert signer.verify(token) == expected
    assert signer.verify(token, typ="test+jwt") == expected
    assert verify_with_jwks(token, signer.jwks(), typ="test+jwt") == expected
    with pytest.raises(SignatureError, match="not a"):
        signer.verify(token, typ="other+jwt")


def test_verify_refuses_tampering_unknown_keys_and_other_algorithms():
    signer = Signer(settings())
    header, _, signature = signer.sign({"allowed": False}, typ="t").split(".")
    forged = base64.urlsafe_b64encode(b'{"allowed":true}').rstrip(b"=").decode()
    with pytest.raises(SignatureError, match="does not verify"):
        signer.verify(f"{header}.{forged}.{signature}")
    other = Signer(settings(signing_key=private_pem(ec_key())))
    with pytest.raises(SignatureError, match="no published key"):
        signer.verify(other.sign({"a": 1}, typ="t"))
    with pytest.raises(SignatureError, match="no published key"):
        verify_with_jwks(other.sign({"a": 1}, typ="t"), signer.jwks())
    # HS256 with the published key as the secret, under the right kid: the key fixes the algorithm.
    secret = json.dumps(signer.jwks()["keys"][0])
    hs256 = jwt.encode({"a": 1}, secret, algorithm="HS256", headers={"kid": DEV_SIGNING_KID})
    with pytest.raises(SignatureError, match="algorithm"):
        signer.verify(hs256)
    with pytest.raises(SignatureError, match="malformed"):
        signer.verify("not-a-token")


def test_ec_key_verifies_with_cryptography_alone(tmp_path):
    key = ec_key()
    signer = Signer(settings(signing_key=write(tmp_path, "ec.pem", private_pem(key))))
    assert signer.kid == thumbprint(key.public_key()) and not signer.development
    token = signer.sign({"a": 1}, typ="t")
    (jwk,) = signer.jwks()["keys"]
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64decode(jwk["x"]), "big"), int.from_bytes(b64decode(jwk["y"]), "big"), ec.SECP256R1()
    ).public_key()
    header, payload, signature = token.split(".")
    raw = b64decode(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if it does not verify
    assert json.loads(b64decode(payload)) == {"a": 1}


def test_rsa_key_gives_rs256(tmp_path):
    key = rsa_key()
    signer = Signer(settings(signing_key=write(tmp_path, "rsa.pem", private_pem(key))))
    assert signer.alg == "RS256"
    (jwk,) = signer.jwks()["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["kid"]) == ("RSA", "RS256", thumbprint(key.public_key()))
    token = signer.sign({"a": 1}, typ="t")
    assert jws.get_unverified_header(token)["alg"] == "RS256"
    assert json.loads(jws.verify(token, jwk, algorithms=["RS256"])) == {"a": 1}
    header, payload, signature = token.split(".")
    key.public_key().verify(b64decode(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_inline_pem_escaped_newlines_and_explicit_kid():
    key = ec_key()
    escaped = private_pem(key).strip().replace("\n", "\\n")  # as a PEM often arrives through an environment variable
    signer = Signer(settings(signing_key=escaped, signing_key_id="2026-11"))
    assert signer.kid == "2026-11" and signer.jwks()["keys"][0]["kid"] == "2026-11"


def test_rotation_keeps_old_signatures_verifiable(tmp_path):
    old_key, new_key = ec_key(), rsa_key()
    old_path = write(tmp_path, "old.pem", private_pem(old_key))
    old_token = Signer(settings(signing_key=old_path)).sign({"receipt": 1}, typ="t")
    # Retired keys may be given as public keys only: the private part can be destroyed.
    retired = write(tmp_path, "old.pub.pem", public_pem(old_key))
    rotated = Signer(settings(signing_key=write(tmp_path, "new.pem", private_pem(new_key)), signing_keys_retired=[retired, old_path]))
    assert [k["kid"] for k in rotated.jwks()["keys"]] == [thumbprint(new_key.public_key()), thumbprint(old_key.public_key())]
    assert rotated.verify(old_token) == {"receipt": 1}
    assert verify_with_jwks(old_token, rotated.jwks()) == {"receipt": 1}
    new_token = rotated.sign({"a": 1}, typ="t")
    assert jws.get_unverified_header(new_token)["kid"] == thumbprint(new_key.public_key())
    # Published ahead (listed as retired while the old key still signs), the new key verifies from its first receipt.
    ahead = Signer(settings(signing_key=old_path, signing_keys_retired=[write(tmp_path, "new.pub.pem", public_pem(new_key))]))
    assert ahead.verify(new_token) == {"a": 1} and ahead.kid == thumbprint(old_key.public_key())


def test_retired_keys_from_the_environment(monkeypatch, tmp_path):
    first = write(tmp_path, "a.pem", public_pem(ec_key()))
    second = write(tmp_path, "b.pem", private_pem(ec_key()))
    monkeypatch.setenv("CONSENTD_SIGNING_KEYS_RETIRED", f"{first}, {second}")
    loaded = Settings(env="test")
    assert loaded.signing_keys_retired == [first, second]
    assert len(Signer(loaded).jwks()["keys"]) == 3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: str(tmp / "missing.pem"), "readable PEM file"),
        (lambda tmp: write(tmp, "junk.pem", JUNK_PEM), "not an unencrypted PEM private key"),
        (lambda tmp: write(tmp, "public.pem", public_pem(ec_key())), "not an unencrypted PEM private key"),
        (lambda tmp: write(tmp, "weak.pem", private_pem(rsa_key(1024))), "at least 2048 bits"),
        (lambda tmp: write(tmp, "p384.pem", private_pem(ec_key(ec.SECP384R1()))), "only P-256"),
        (lambda tmp: write(tmp, "ed.pem", private_pem(ed25519.Ed25519PrivateKey.generate())), "EC P-256 key or an RSA key"),
    ],
    ids=["unreadable", "not-a-key", "public-key", "rsa-1024", "p-384", "ed25519"],
)
def test_bad_signing_keys_are_refused_at_start_up(tmp_path, make, message):
    with pytest.raises(ValidationError, match=message) as caught:
        settings(signing_key=make(tmp_path))
    assert "CONSENTD_SIGNING_KEY" in str(caught.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: str(tmp / "missing.pem"),
        lambda tmp: write(tmp, "junk.pem", "not a key"),
        lambda tmp: write(tmp, "weak.pem", public_pem(rsa_key(1024))),
    ],
    ids=["unreadable", "not-a-key", "rsa-1024"],
)
def test_bad_retired_keys_are_refused_at_start_up(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ValidationError, match="retired signing key") as caught:
        settings(signing_keys_retired=[path])
    assert path in str(caught.value)


def test_production_refuses_the_development_key(tmp_path):
    with pytest.raises(ValidationError, match="CONSENTD_SIGNING_KEY must be set"):
        Settings(env="production", jwt_secret=STRONG, identifier_key=STRONG)
    key = write(tmp_path, "k.pem", private_pem(ec_key()))
    assert Signer(Settings(env="production", jwt_secret=STRONG, identifier_key=STRONG, signing_key=key)).sign({}, typ="t")
    # Defence in depth: a Signer handed production settings without a key (validation bypassed) will not sign.
    bypassed = settings().model_copy(update={"env": "production"})
    with pytest.raises(SigningKeyError, match="development key in production"):
        Signer(bypassed).sign({"a": 1}, typ="t")
