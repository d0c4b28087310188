"""Purposes: their definitions (store), the decision's view of one (rules.Rule and its channel/status rules), the default catalogue."""

from . import catalogue, store
from .cache import RuleCache, bump, load_rules_pg
from .rules import (
    CONSENT_BASED,
    LEGITIMATE_INTEREST,
    OWN_BASIS,
    Rule,
    api_channel,
    check_status,
    grant_expiry,
    storage_channel,
)
from .store import get, list_all, put, rules, to_out, to_rule

__all__ = [
    "CONSENT_BASED",
    "LEGITIMATE_INTEREST",
    "OWN_BASIS",
    "Rule",
    "RuleCache",
    "api_channel",
    "bump",
    "catalogue",
    "check_status",
    "get",
    "grant_expiry",
    "list_all",
    "load_rules_pg",
    "put",
    "rules",
    "storage_channel",
    "store",
    "to_out",
    "to_rule",
]
