"""The rules and the queries, one package per domain (docs/architecture.md): no FastAPI imports."""
