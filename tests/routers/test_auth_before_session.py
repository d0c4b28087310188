"""Authentication comes before the database: a request without a valid token, or without the scope, costs no
connection from either pool (SQLAlchemy's or asyncpg's)."""

import contextlib
import re

import pytest
from sqlalchemy import event

from tests.conftest import bearer


class Checkouts:
    """Counts connections taken from the app's pools while it is installed."""

    def __init__(self, database) -> None:
        self.database, self.count = database, 0

    def _on_checkout(self, *_args) -> None:
        self.count += 1

    @contextlib.contextmanager
    def watching(self):
        engine, pool = self.database.engine.sync_engine, self.database.pool
        event.listen(engine, "checkout", self._on_checkout)
        # asyncpg's Pool has slots: count acquisitions on its class, for this pool only.
        pool_class = type(pool) if pool is not None else None
        acquire = pool_class.acquire if pool_class is not None else None

        def counted(this, *args, **kwargs):
            if this is pool:
                self.count += 1
            return acquire(this, *args, **kwargs)

        if pool_class is not None:
            pool_class.acquire = counted
        try:
            yield self
        finally:
            event.remove(engine, "checkout", self._on_checkout)
            if pool_class is not None:
                pool_class.acquire = acquire


def protected_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every operation the OpenAPI document says needs the bearer token, parameters filled in."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            if operation.get("security"):
                out.append((method.upper(), re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-000000000000", path)))
    return out


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt", "missing scope"])
async def test_no_valid_token_costs_no_connection(backend, anonymous, token, authorization):
    routes = protected_routes(backend.app)
    assert len(routes) > 15
    if authorization == "missing scope":
        # A valid token whose one scope none of today's routes asks for (routes open to any scope answer it).
        headers = bearer(token("requests:write"))
    else:
        headers = {"Authorization": authorization} if authorization else {}
    counter, refused = Checkouts(backend.database), 0
    for method, path in routes:
        counter.count = 0
        with counter.watching():
            response = await anonymous.request(method, path, headers=headers, json={})
        if authorization == "missing scope" and response.status_code not in (401, 403):
            continue  # a route any scope may read
        assert response.status_code in (401, 403), (method, path, response.status_code)
        assert counter.count == 0, f"{method} {path} took a database connection before authenticating"
        refused += 1
    assert refused > 15
