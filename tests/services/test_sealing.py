"""Sealed identifier values: AES-GCM now, and the Fernet tokens written before still read back."""

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select, update

from app.models import SubjectIdentifier
from app.services.subjects.identifiers import SEALED_V2, IdentifierKeys
from tests.support.api import record

KEYS = IdentifierKeys("k" * 40, "GB")
# Written by consentd before SEALED_V2 (Fernet under HKDF("consentd identifier seal v1")) with the key "k" * 40.
OLD_TOKEN = (
    "gAAAAABrEYgWe48_s3VOt0hx9nk0FUacuMbJ7gMvchSyLhMtj1GraEzXklitW2NbZcwr3hOZb-GBUJYWseFFwYclkysjhF98aCbBRV7yo4hrNX7WBWs_ZHg="
)


def old_seal(secret: str, value: str) -> str:
    """A value sealed as consentd did before SEALED_V2."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"consentd identifier seal v1").derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key)).encrypt(value.encode()).decode()


def test_new_values_are_sealed_with_aes_gcm_and_differ_each_time():
    first, second = KEYS.seal("jane.doe@example.com"), KEYS.seal("jane.doe@example.com")
    assert first.startswith(SEALED_V2) and first != second and "jane" not in first
    assert KEYS.unseal(first) == KEYS.unseal(second) == "jane.doe@example.com"


def test_values_sealed_the_old_way_still_unseal():
    assert KEYS.unseal(OLD_TOKEN) == "jane.doe@example.com"
    assert KEYS.unseal(old_seal("k" * 40, "+447911123456")) == "+447911123456"


def test_another_key_or_a_damaged_value_is_reported_not_raised():
    other = IdentifierKeys("other" * 8, "GB")
    sealed = KEYS.seal("jane.doe@example.com")
    assert other.unseal(sealed) == other.unseal(OLD_TOKEN) == "[sealed with another key]"
    damaged = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    for value in (damaged, SEALED_V2, SEALED_V2 + "!!", "", "gAAAA"):
        assert KEYS.unseal(value) == "[sealed with another key]"


async def test_a_subject_stored_with_old_sealed_values_reads_back(backend, client, tenant):
    sid = (await record(client, {"email": "old@example.com"}, ("marketing", "email", "granted")))["subject_id"]
    async with backend.database.transaction() as session:
        await session.execute(
            update(SubjectIdentifier).where(SubjectIdentifier.tenant_id == tenant)
            .values(value_sealed=old_seal(backend.settings.identifier_key, "old@example.com"))
        )
    async with backend.database.transaction() as session:
        stored = (await session.execute(select(SubjectIdentifier.value_sealed).where(SubjectIdentifier.tenant_id == tenant))).scalar_one()
    assert not stored.startswith(SEALED_V2)
    subject = (await client.get(f"/v1/subjects/{sid}")).json()
    assert subject["identifiers"] == [{"type": "email", "value": "old@example.com"}]
