"""Settings: production refuses development secrets; a bad CONSENTD_* variable stops any command in one line."""

import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from app.config import DEV_IDENTIFIER_KEY, DEV_JWT_SECRET, Settings
from tests.support.server import CONSENTD

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


def _consentd(tmp_path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CONSENTD_")}
    clean["CONSENTD_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'config.db'}"
    return subprocess.run([CONSENTD, *args], env=clean | env, capture_output=True, text=True, timeout=60, check=False)


PRODUCTION = {"CONSENTD_ENV": "production", "CONSENTD_JWT_SECRET": STRONG, "CONSENTD_IDENTIFIER_KEY": STRONG}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (PRODUCTION, "CONSENTD_SIGNING_KEY"),
        ({"CONSENTD_DB_POOL_SIZE": "ten"}, "CONSENTD_DB_POOL_SIZE"),
        (PRODUCTION | {"CONSENTD_JWT_SECRET": DEV_JWT_SECRET, "CONSENTD_SIGNING_KEY": SIGNING_KEY}, "CONSENTD_JWT_SECRET"),
        ({"CONSENTD_ENV": "prod"}, "CONSENTD_ENV"),
        ({"CONSENTD_SIGNING_KEY": "/no/such/key.pem"}, "CONSENTD_SIGNING_KEY"),
    ],
)
def test_a_configuration_error_is_one_line_naming_the_variable(tmp_path, env, variable):
    done = _consentd(tmp_path, env, "migrate")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {variable}"), done.stderr
    assert STRONG not in done.stderr and SIGNING_KEY.splitlines()[1] not in done.stderr  # no secret is echoed


@pytest.mark.parametrize(
    "args",
    [("serve", "--port", "1"), ("serve", "--workers", "2", "--port", "1"), ("demo",), ("token", "--tenant", "demo", "--scopes", "admin"),
     ("import", __file__, "--tenant", "demo"), ("audit", "verify", "--tenant", "demo"), ("openapi", "--output", "/dev/null")],
    ids=lambda args: args[0] if args[0] != "serve" or "--workers" not in args else "serve-workers",
)
def test_every_command_stops_on_a_configuration_error(tmp_path, args):
    """Production without a signing key: the same one line and exit 2, whatever the command (serve starts no worker)."""
    done = _consentd(tmp_path, PRODUCTION, *args)
    assert (done.returncode, done.stderr) == (2, "error: CONSENTD_SIGNING_KEY must be set in production\n")
