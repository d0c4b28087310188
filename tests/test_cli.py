"""The `consentd` command: tenants, purposes, demo, token (run as a real subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jose import jwt

from tests.conftest import TEST_IDENTIFIER_KEY, TEST_SECRET

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def consentd(tmp_path: Path):
    env = os.environ | {
        "CONSENTD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "CONSENTD_JWT_SECRET": TEST_SECRET,
        "CONSENTD_IDENTIFIER_KEY": TEST_IDENTIFIER_KEY,
    }

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, timeout=60)
        assert (done.returncode == 0) == ok, done.stderr
        return done

    run.env = env  # type: ignore[attr-defined]
    run.migrated = run("migrate").stderr  # type: ignore[attr-defined]
    return run


def test_migrate_says_what_it_did(consentd, tmp_path):
    """A brand-new database is said to be created, an old one migrated from its revision, a current one left alone."""
    import asyncio

    from app.migrations import upgrade

    assert consentd.migrated.startswith("new database: schema created and migrated to 2026"), consentd.migrated
    assert consentd.migrated.endswith("(the newest schema)\n")
    assert "already at" in consentd("migrate").stderr
    old = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    asyncio.run(upgrade(old, "20261122_0002"))
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=os.environ | {"CONSENTD_DATABASE_URL": old},
                          capture_output=True, text=True, timeout=60)
    assert done.stderr.startswith("database migrated from 20261122_0002 to 2026"), done.stderr
    assert done.stderr.endswith("(the newest schema)\n")


def test_the_shipped_legacy_sample_imports(consentd):
    """docs/examples/legacy.ndjson, the file the README imports, goes into the demo catalogue cleanly, then again as a no-op."""
    consentd("demo")
    sample = str(REPO / "docs" / "examples" / "legacy.ndjson")
    first = consentd("import", sample, "--tenant", "demo").stderr
    assert "12 records imported" in first and "12 lines" in first, first
    assert "0 records imported (0 events), 12 already imported" in consentd("import", sample, "--tenant", "demo").stderr


def test_the_shipped_purposes_example_loads(consentd):
    consentd("tenants", "create", "acme")
    loaded = consentd("purposes", "load", str(REPO / "docs" / "examples" / "purposes.yaml"), "--tenant", "acme").stderr
    assert "version 1" in loaded and "error" not in loaded


def test_tenants_purposes_token(consentd, tmp_path):
    consentd("tenants", "create", "acme", "--name", "Acme Ltd")
    assert "exists" in consentd("tenants", "create", "acme", ok=False).stderr
    consentd("tenants", "create", "Bad Key!", ok=False)

    catalogue = [{"key": "newsletter", "title": "Newsletter", "legal_basis": "consent", "category": "marketing",
                  "channels": ["email"]}]
    (tmp_path / "p.json").write_text(json.dumps(catalogue))
    (tmp_path / "p.yaml").write_text("- key: newsletter\n  title: Weekly newsletter\n  legal_basis: consent\n"
                                     "  category: marketing\n  channels: [email]\n")
    assert "newsletter: version 1" in consentd("purposes", "load", str(tmp_path / "p.json"), "--tenant", "acme").stderr
    assert "newsletter: version 2" in consentd("purposes", "load", str(tmp_path / "p.yaml"), "--tenant", "acme").stderr
    consentd("purposes", "load", str(tmp_path / "p.yaml"), "--tenant", "nobody", ok=False)
    (tmp_path / "bad.yaml").write_text("- key: BAD\n")
    consentd("purposes", "load", str(tmp_path / "bad.yaml"), "--tenant", "acme", ok=False)

    out = consentd("token", "--tenant", "acme", "--scopes", "checks:read consents:write", "--ttl", "60", "--client", "crm").stdout
    claims = jwt.decode(out.strip(), TEST_SECRET, algorithms=["HS256"], audience="consentd", issuer="consentd")
    assert (claims["tenant"], claims["scope"], claims["sub"]) == ("acme", "checks:read consents:write", "crm")
    assert out.count("\n") == 1
    consentd("token", "--tenant", "acme", "--scopes", "everything", ok=False)
    assert "does not exist" in consentd("token", "--tenant", "ghost", "--scopes", "checks:read", ok=False).stderr


def test_demo_is_idempotent(consentd):
    first = consentd("demo").stdout.strip()
    second = consentd("demo").stdout.strip()
    for token in (first, second):
        claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"], audience="consentd", issuer="consentd")
        assert (claims["tenant"], claims["scope"]) == ("demo", "admin")


def test_banner_keys(consentd):
    consentd("tenants", "create", "shop")
    key = consentd("banner-keys", "create", "--tenant", "shop", "--origin", "https://Shop.Example:443",
                   "--origin", "http://localhost:8000").stdout.strip()
    assert key.startswith("pk_") and len(key) > 20 and "\n" not in key
    listed = consentd("banner-keys", "list", "--tenant", "shop").stdout
    assert key in listed and "active" in listed and "http://localhost:8000 https://shop.example" in listed
    consentd("banner-keys", "revoke", key)
    assert "revoked" in consentd("banner-keys", "list", "--tenant", "shop").stdout
    assert "no such active key" in consentd("banner-keys", "revoke", key, ok=False).stderr
    for bad in ("shop.example", "https://shop.example/path", "ftp://shop.example", "https://shop.example:99999"):
        refused = consentd("banner-keys", "create", "--tenant", "shop", "--origin", bad, ok=False)
        assert "error:" in refused.stderr and refused.stdout == ""
    assert "does not exist" in consentd("banner-keys", "create", "--tenant", "nobody", "--origin", "https://a.example", ok=False).stderr


def test_demo_creates_a_banner_key_once(consentd):
    consentd("demo")
    consentd("demo")
    keys = consentd("banner-keys", "list", "--tenant", "demo").stdout.strip().splitlines()
    assert len(keys) == 1 and "http://127.0.0.1:8000" in keys[0]


def test_audit_checkpoint_and_verify(consentd, tmp_path):
    """Checkpoint, verify (exit 0), tamper with the SQLite file directly, verify again (exit 1, the event named)."""
    import sqlite3

    consentd("tenants", "create", "acme")
    consentd("purposes", "load", "--tenant", "acme", str(_catalogue(tmp_path)))
    lines = [
        {"subject": {"external_id": f"C-{n}"}, "decisions": [{"purpose": "newsletter", "channel": "email", "status": s}]}
        for n in range(3) for s in ("granted", "withdrawn")
    ]
    (tmp_path / "records.ndjson").write_text("\n".join(json.dumps(line) for line in lines))
    consentd("import", str(tmp_path / "records.ndjson"), "--tenant", "acme")
    saved = tmp_path / "checkpoint.jws"
    printed = consentd("audit", "checkpoint", "--tenant", "acme", "--out", str(saved)).stdout.strip()
    assert printed == saved.read_text().strip() and printed.count(".") == 2
    clean = json.loads(consentd("audit", "verify", "--tenant", "acme", "--checkpoint", str(saved)).stdout)
    assert (clean["ok"], clean["checked"], clean["chains"]) == (True, 6, 3)

    with sqlite3.connect(tmp_path / "cli.db") as db:
        event_id = db.execute("SELECT event_id FROM consent_events ORDER BY seq LIMIT 1 OFFSET 2").fetchone()[0]
        db.execute("DELETE FROM consent_events WHERE event_id = ?", (event_id,))
    failed = consentd("audit", "verify", "--tenant", "acme", ok=False)
    found = json.loads(failed.stdout)
    assert found["ok"] is False and [p["problem"] for p in found["problems"]] == ["deleted"]
    assert found["problems"][0]["event_id"].replace("-", "") == event_id
    assert "1 problem(s)" in failed.stderr
    consentd("audit", "verify", "--tenant", "nobody", ok=False)


def test_audit_verify_exits_1_for_a_state_mismatch(consentd, tmp_path):
    """A withdrawal turned into a grant in consent_state (what checks read): full and incremental verification fail."""
    import sqlite3

    consentd("tenants", "create", "acme")
    consentd("purposes", "load", "--tenant", "acme", str(_catalogue(tmp_path)))
    lines = [{"subject": {"external_id": "C-1"}, "decisions": [{"purpose": "newsletter", "channel": "email", "status": s}]}
             for s in ("granted", "withdrawn")]
    (tmp_path / "records.ndjson").write_text("\n".join(json.dumps(line) for line in lines))
    consentd("import", str(tmp_path / "records.ndjson"), "--tenant", "acme")
    consentd("audit", "checkpoint", "--tenant", "acme")
    with sqlite3.connect(tmp_path / "cli.db") as db:
        event_id = db.execute("SELECT event_id FROM consent_state WHERE status = 'withdrawn'").fetchone()[0]
        db.execute("UPDATE consent_state SET status = 'granted' WHERE event_id = ?", (event_id,))
    for flags in ((), ("--incremental",)):
        failed = consentd("audit", "verify", "--tenant", "acme", *flags, ok=False)
        assert failed.returncode == 1 and "1 problem(s)" in failed.stderr
        found = json.loads(failed.stdout)
        assert [(p["event_id"].replace("-", ""), p["problem"]) for p in found["problems"]] == [(event_id, "state_mismatch")]


def test_audit_verify_exits_2_when_it_cannot_run(tmp_path):
    env = os.environ | {"CONSENTD_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none", "CONSENTD_DB_TIMEOUT": "2"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "audit", "verify", "--tenant", "acme"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "could not run" in done.stderr, done.stderr


def _catalogue(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.json"
    purpose = {"key": "newsletter", "title": "Newsletter", "legal_basis": "consent", "category": "marketing", "channels": ["email"]}
    path.write_text(json.dumps([purpose]))
    return path


def test_requests_list_shows_the_open_requests_soonest_due_first(consentd):
    """`consentd requests list`: a table of the open requests with their days left, for a team without curl."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from app.config import Settings
    from app.db import Database
    from app.models.requests import RequestIn
    from app.services import requests
    from app.services.subjects import IdentifierKeys

    consentd("tenants", "create", "acme")
    settings = Settings(database_url=consentd.env["CONSENTD_DATABASE_URL"], identifier_key=TEST_IDENTIFIER_KEY)

    async def file() -> None:
        database = await Database.open(settings)
        keys = IdentifierKeys(TEST_IDENTIFIER_KEY, "GB")
        actor = requests.Actor("acme", "privacy-team", "GB-ENG")
        try:
            async with database.transaction() as session:
                for days_ago, kind in ((20, "restriction"), (3, "objection")):
                    details = {"grounds": "legal_claim"} if kind == "restriction" else {"to": "direct_marketing"}
                    received = datetime.now(UTC) - timedelta(days=days_ago)
                    body = RequestIn(type=kind, subject={"email": f"p{days_ago}@example.org"}, received_at=received,
                                     details=details)
                    await requests.create(session, keys, actor, body)
                await requests.create(session, keys, actor, RequestIn(type="access", subject={"phone": "+44 20 7946 0000"}))
        finally:
            await database.close()

    asyncio.run(file())
    table = consentd("requests", "list", "--tenant", "acme").stdout
    lines = [line for line in table.splitlines() if "restriction" in line or "objection" in line or "access" in line]
    assert [("restriction" in lines[0]), ("objection" in lines[1]), ("access" in lines[2])] == [True, True, True]
    assert "clock not started" in lines[2] and "open requests of acme: 3" in table
    soon = consentd("requests", "list", "--tenant", "acme", "--due-before",
                    (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m-%d")).stdout
    assert "open requests of acme: 1" in soon and "restriction" in soon
    assert "tenant 'nobody' does not exist" in consentd("requests", "list", "--tenant", "nobody", ok=False).stderr
