"""Tenants and the per-process directory of the ones that exist."""

from .directory import TenantDirectory, create, ensure

__all__ = [
    "TenantDirectory",
    "create",
    "ensure",
]
