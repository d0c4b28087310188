"""Scheduled work: the loop `consentd serve` runs in each process, and the jobs `consentd jobs run` runs once."""

from . import jobs

__all__ = ["jobs"]
