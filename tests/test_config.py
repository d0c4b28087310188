"""Settings: production refuses development secrets."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from app.config import DEV_IDENTIFIER_KEY, DEV_JWT_SECRET, Settings

STRONG = "s" * 40
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


@pytest.mark.parametrize(
    "values",
    [
        {"jwt_secret": DEV_JWT_SECRET, "identifier_key": STRONG, "signing_key": SIGNING_KEY},
        {"jwt_secret": STRONG, "identifier_key": DEV_IDENTIFIER_KEY, "signing_key": SIGNING_KEY},
        {"jwt_secret": "short", "identifier_key": STRONG, "signing_key": SIGNING_KEY},
        {"jwt_secret": STRONG, "identifier_key": STRONG},  # receipts would be signed with the development key
        {"jwt_secret": STRONG, "identifier_key": STRONG, "signing_key": " "},
    ],
)
def test_production_refuses_default_or_weak_secrets(values):
    with pytest.raises(ValidationError):
        Settings(env="production", **values)


def test_production_with_real_secrets_starts():
    assert Settings(env="production", jwt_secret=STRONG, identifier_key=STRONG, signing_key=SIGNING_KEY).env == "production"
    # With a public key, no HS256 secret is used, so the default one does not matter.
    Settings(env="production", jwt_public_key="-----BEGIN PUBLIC KEY-----", identifier_key=STRONG, signing_key=SIGNING_KEY)


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("CONSENTD_DATABASE_URL", "postgresql+asyncpg://u@h:5432/db")
    monkeypatch.setenv("CONSENTD_DEFAULT_REGION", "IE")
    settings = Settings()
    assert settings.is_postgres and settings.default_region == "IE"
    assert (settings.jwt_issuer, settings.jwt_audience) == ("consentd", "consentd")


def test_forwarded_allow_ips(monkeypatch):
    assert Settings().forwarded_allow_ips == "127.0.0.1"
    monkeypatch.setenv("CONSENTD_FORWARDED_ALLOW_IPS", "10.0.0.0/8, 192.0.2.7, ::1")
    assert Settings().forwarded_allow_ips == "10.0.0.0/8, 192.0.2.7, ::1"
    # uvicorn would take each of these for a name that never matches, and so trust no proxy at all.
    for typo in ("10.0.0.1/8", "lb.internal", "10.0.0.0/33", "*, 10.0.0.1"):
        monkeypatch.setenv("CONSENTD_FORWARDED_ALLOW_IPS", typo)
        with pytest.raises(ValidationError, match="CONSENTD_FORWARDED_ALLOW_IPS"):
            Settings()
