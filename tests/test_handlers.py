"""Which database errors are a 503 (retry later) rather than a 500."""

import asyncpg
import pytest

from app.handlers import database_unavailable


@pytest.mark.parametrize(
    "error",
    [asyncpg.DeadlockDetectedError("deadlock"), asyncpg.SerializationError("serialization"),
     asyncpg.QueryCanceledError("statement timeout"), ConnectionRefusedError(), TimeoutError()],
)
def test_transient_errors_are_unavailable(error):
    assert database_unavailable(error)


def test_client_caused_errors_are_not_unavailable():
    assert not database_unavailable(asyncpg.UniqueViolationError("duplicate"))
    assert not database_unavailable(ValueError("bug"))
