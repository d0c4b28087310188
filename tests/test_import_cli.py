"""`consentd import FILE --tenant KEY`: chunks, a progress bar, re-runs that store nothing twice (real subprocess)."""

import json
import subprocess
from pathlib import Path

import httpx

from tests.support.server import CONSENTD
from tests.test_server import consentd_env


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def record(n: int, status: str = "granted") -> str:
    return json.dumps(
        {
            "subject": {"email": f"legacy{n}@example.com"},
            "decisions": [{"purpose": "marketing", "channel": "email", "status": status}],
            "captured_at": f"2024-01-{1 + n % 28:02d}T10:00:00Z",
            "source": "legacy-crm",
        }
    )


def run_import(backend, tenant: str, file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CONSENTD, "import", str(file), "--tenant", tenant, *args],
        env=consentd_env(backend.url), capture_output=True, text=True, timeout=120, check=False,
    )


async def events_of(client: httpx.AsyncClient, n: int) -> int:
    found = await client.post("/v1/subjects/lookup", json={"email": f"legacy{n}@example.com"})
    if found.status_code == 404:
        return 0
    history = await client.get(f"/v1/subjects/{found.json()['subject_id']}/history", params={"limit": 1000})
    return len(history.json()["events"])


async def test_import_in_chunks_then_rerun_after_an_interruption(backend, tenant, client, tmp_path):
    lines = [record(n) for n in range(45)]
    # An interrupted run: only the first 23 lines made it.
    partial = run_import(backend, tenant, write(tmp_path / "part.ndjson", lines[:23]), "--chunk-size", "10")
    assert partial.returncode == 0, partial.stderr
    assert "23 records imported" in partial.stderr
    assert "importing" in partial.stderr  # the progress bar

    full = run_import(backend, tenant, write(tmp_path / "all.ndjson", lines), "--chunk-size", "10", "--jobs", "2")
    assert full.returncode == 0, full.stderr
    assert "22 records imported (22 events), 23 already imported, 45 lines" in full.stderr
    for n in (0, 22, 23, 44):
        assert await events_of(client, n) == 1
    assert "legacy0@example.com" not in full.stderr + full.stdout


async def test_bad_lines_are_all_listed_and_dry_run_stores_nothing(backend, tenant, client, tmp_path):
    lines = [record(100 + n) for n in range(30)]
    lines[14] = "{broken"
    lines[25] = json.dumps({"subject": {"email": "nope"}, "decisions": []})
    file = write(tmp_path / "bad.ndjson", lines)

    dry = run_import(backend, tenant, file, "--chunk-size", "10", "--dry-run")
    assert dry.returncode == 1
    assert "line 15:" in dry.stderr and "line 26:" in dry.stderr
    assert await events_of(client, 100) == 0

    real = run_import(backend, tenant, file, "--chunk-size", "10", "--jobs", "1")
    assert real.returncode == 1
    assert "line 15:" in real.stderr and "line 26:" in real.stderr
    # The chunk before the first bad one is stored; the bad chunk and everything after it are not.
    assert await events_of(client, 100) == 1
    assert await events_of(client, 110) == 0 and await events_of(client, 129) == 0

    lines[14], lines[25] = record(114), record(125)
    fixed = run_import(backend, tenant, write(tmp_path / "fixed.ndjson", lines), "--chunk-size", "10")
    assert fixed.returncode == 0, fixed.stderr
    assert "20 records imported" in fixed.stderr and "10 already imported" in fixed.stderr


def test_unknown_tenant_and_missing_file(backend, tmp_path):
    missing = run_import(backend, "ghost-tenant", write(tmp_path / "x.ndjson", [record(1)]))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert run_import(backend, "ghost-tenant", tmp_path / "absent.ndjson").returncode == 2
