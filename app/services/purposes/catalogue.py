"""Loading purpose catalogues (YAML or JSON lists of purposes, each with its `key`)."""

import json
from importlib import resources
from pathlib import Path

import yaml
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.common import PurposeKey
from app.models.purposes import PurposeOut, PurposeWrite
from app.services.purposes import store as purposes


class CatalogueEntry(PurposeWrite):
    key: PurposeKey


Catalogue = TypeAdapter(list[CatalogueEntry])


def parse(text: str, *, filename: str = "") -> list[CatalogueEntry]:
    """Parse and validate a catalogue; raises pydantic.ValidationError or a YAML/JSON error."""
    data = json.loads(text) if filename.endswith(".json") else yaml.safe_load(text)
    return Catalogue.validate_python(data)


def default() -> list[CatalogueEntry]:
    """The default catalogue shipped with consentd."""
    return parse(resources.files("app.catalogue").joinpath("default.yaml").read_text())


def read(path: Path) -> list[CatalogueEntry]:
    return parse(path.read_text(), filename=path.name)


async def load(session: AsyncSession, *, tenant: str, entries: list[CatalogueEntry]) -> list[PurposeOut]:
    """PUT every entry: unchanged purposes keep their version."""
    loaded = []
    for entry in entries:
        body = PurposeWrite.model_validate(entry.model_dump(exclude={"key"}))
        loaded.append(await purposes.put(session, tenant=tenant, key=entry.key, body=body))
    return loaded
