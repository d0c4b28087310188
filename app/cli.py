"""The `consentd` command."""

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.db import Database
from app.errors import AppError
from app.security import TENANT_KEY, mint_token

cli = typer.Typer(help="consentd: a consent and preferences service.", no_args_is_help=True, add_completion=False)
tenants_cli = typer.Typer(help="Manage tenants.", no_args_is_help=True)
purposes_cli = typer.Typer(help="Manage purposes.", no_args_is_help=True)
cli.add_typer(tenants_cli, name="tenants")
cli.add_typer(purposes_cli, name="purposes")

T = TypeVar("T")
DEMO_TENANT = "demo"


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _in_transaction(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction on the configured database."""

    async def run() -> T:
        database = await Database.open(get_settings())
        try:
            async with database.transaction() as session:
                return await work(session)
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except AppError as exc:
        _fail(exc.detail)


def _check_tenant_key(key: str) -> None:
    if not TENANT_KEY.match(key):
        _fail("a tenant key is 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit")


@cli.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    migrate: Annotated[bool, typer.Option("--migrate", help="migrate the database first")] = False,
    access_log: Annotated[bool, typer.Option(help="log each request (method, path, status)")] = True,
) -> None:
    """Serve the HTTP API."""
    if migrate:
        run_migrations()
    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, workers=workers, access_log=access_log,
        proxy_headers=True, server_header=False,
    )


@cli.command("migrate")
def run_migrations() -> None:
    """Upgrade the database to the newest schema (Alembic)."""
    from app.migrations import upgrade

    asyncio.run(upgrade(get_settings().database_url))
    typer.echo("database is at the newest schema", err=True)


@tenants_cli.command("create")
def create_tenant(key: str, name: Annotated[str | None, typer.Option(help="display name")] = None) -> None:
    """Create a tenant."""
    from app.services import tenants

    _check_tenant_key(key)
    _in_transaction(lambda session: tenants.create(session, key=key, name=name or key))
    typer.echo(f"tenant '{key}' created", err=True)


@purposes_cli.command("load")
def load_purposes(file: Path, tenant: Annotated[str, typer.Option(help="tenant key")]) -> None:
    """Create or update the purposes listed in a YAML or JSON file."""
    from app.services import catalogue

    try:
        entries = catalogue.read(file)
    except (OSError, ValueError, ValidationError) as exc:
        _fail(f"cannot load {file}: {exc}")
    loaded = _in_transaction(lambda session: _load_for_existing_tenant(session, tenant, entries))
    for purpose in loaded:
        typer.echo(f"{purpose.key}: version {purpose.version}", err=True)


async def _require_tenant(session: AsyncSession, tenant: str) -> None:
    from app.models import Tenant

    if await session.get(Tenant, tenant) is None:
        raise AppError(f"tenant '{tenant}' does not exist: create it with `consentd tenants create {tenant}`")


async def _load_for_existing_tenant(session: AsyncSession, tenant: str, entries: list) -> list:
    from app.services import catalogue

    await _require_tenant(session, tenant)
    return await catalogue.load(session, tenant=tenant, entries=entries)


@cli.command()
def demo(ttl: Annotated[int, typer.Option(help="token lifetime in seconds")] = 86_400) -> None:
    """Create the demo tenant with the default purpose catalogue (idempotent) and print an admin token."""
    from app.services import catalogue, tenants

    async def seed(session: AsyncSession) -> None:
        await tenants.ensure(session, key=DEMO_TENANT, name="Demo shop")
        await catalogue.load(session, tenant=DEMO_TENANT, entries=catalogue.default())

    _in_transaction(seed)
    token = mint_token(get_settings(), tenant=DEMO_TENANT, scopes=["admin"], ttl=ttl, client="demo-admin")
    typer.echo(f"Tenant '{DEMO_TENANT}' is ready. Its admin token (valid {ttl // 3600} h):", err=True)
    typer.echo(token)


@cli.command()
def token(
    tenant: Annotated[str, typer.Option(help="tenant key")],
    scopes: Annotated[str, typer.Option(help='space-separated, e.g. "checks:read consents:write"')],
    ttl: Annotated[int, typer.Option(min=1, max=31_536_000, help="lifetime in seconds")] = 3600,
    client: Annotated[str, typer.Option(help="the client's name (the token's sub)")] = "cli",
) -> None:
    """Print a signed JWT (HS256) and nothing else."""
    _check_tenant_key(tenant)
    _in_transaction(lambda session: _require_tenant(session, tenant))
    try:
        typer.echo(mint_token(get_settings(), tenant=tenant, scopes=scopes.split(), ttl=ttl, client=client))
    except ValueError as exc:
        _fail(str(exc))


@cli.command("import")
def import_consents(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, metavar="FILE", help="NDJSON, one POST /v1/consents body a line")],
    tenant: Annotated[str, typer.Option(help="tenant key")],
    chunk_size: Annotated[int, typer.Option(min=1, max=50_000, help="lines per transaction")] = 5_000,
    jobs: Annotated[int, typer.Option(min=1, max=16, help="worker processes that check lines")] = 2,
    writers: Annotated[
        int, typer.Option(min=1, max=8, help="chunks stored at once (1: strictly one after another, in file order)")
    ] = 2,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check every line, store nothing")] = False,
    actor: Annotated[str, typer.Option(help="recorded as the actor of every imported event")] = "cli-import",
) -> None:
    """Import consent records with their original captured_at, in chunks, with a progress bar.

    Each chunk is stored whole or not at all, and records imported before are skipped: after an interruption,
    run the same command again. When a line is bad, no later chunk starts storing; the rest of the file is
    still checked, and every bad line is listed.
    """
    from app.importer import import_file

    _check_tenant_key(tenant)
    _in_transaction(lambda session: _require_tenant(session, tenant))
    outcome = asyncio.run(
        import_file(
            get_settings(), file, tenant=tenant, chunk_size=chunk_size, jobs=jobs, writers=writers, dry_run=dry_run,
            actor=actor,
        )
    )
    for error in outcome.errors:
        where = ".".join(str(part) for part in error["loc"])
        typer.echo(f"line {error['line']}: {where + ': ' if where else ''}{error['msg']}", err=True)
    if outcome.error_count > len(outcome.errors):
        typer.echo(f"... and {outcome.error_count - len(outcome.errors)} more errors", err=True)
    typer.echo(outcome.summary(), err=True)
    if outcome.error_count:
        raise typer.Exit(1)


@cli.command()
def openapi(output: Path = Path("openapi/openapi.json")) -> None:
    """Write the OpenAPI document the app serves (commit it; a test compares the two)."""
    from app.main import create_app

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {output}", err=True)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
