"""Values remembered per tenant with the config version they were read at (tenants.config_version): a value is
served only for the version it was read at, so a cache of it is exact across workers and replicas."""

from typing import Generic, TypeVar

V = TypeVar("V")

# Tenants held at once: the cache is a convenience, never the source of truth.
MAX_TENANTS = 10_000


class Versioned(Generic[V]):
    """By tenant: (version, value)."""

    def __init__(self, max_tenants: int = MAX_TENANTS) -> None:
        self._held: dict[str, tuple[int, V]] = {}
        self._max = max_tenants

    def get(self, tenant: str, version: int) -> V | None:
        """The value read at `version` of the tenant's config, if held."""
        held = self._held.get(tenant)
        return held[1] if held is not None and held[0] == version else None

    def newest(self, tenant: str) -> tuple[int, V] | None:
        """The (version, value) held for the tenant, whichever version it is: for a write fenced on that version."""
        return self._held.get(tenant)

    def put(self, tenant: str, version: int, value: V) -> None:
        if len(self._held) >= self._max and tenant not in self._held:
            self._held.clear()
        self._held[tenant] = (version, value)
