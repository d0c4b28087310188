"""The `consentd` command."""

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import asyncpg
import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import ConfigError, get_settings, trusted_proxies
from app.db import Database
from app.errors import AppError
from app.security import TENANT_KEY, mint_token
from app.services.banner import DEMO_TENANT

cli = typer.Typer(help="consentd: a consent and preferences service.", no_args_is_help=True, add_completion=False)
tenants_cli = typer.Typer(help="Manage tenants.", no_args_is_help=True)
purposes_cli = typer.Typer(help="Manage purposes.", no_args_is_help=True)
cli.add_typer(tenants_cli, name="tenants")
cli.add_typer(purposes_cli, name="purposes")
banner_keys_cli = typer.Typer(help="Manage the cookie banner's publishable keys.", no_args_is_help=True)
cli.add_typer(banner_keys_cli, name="banner-keys")
audit_cli = typer.Typer(help="Tamper evidence: verify the ledger, take signed checkpoints.", no_args_is_help=True)
cli.add_typer(audit_cli, name="audit")
requests_cli = typer.Typer(help="Data-subject requests on the statutory clock.", no_args_is_help=True)
cli.add_typer(requests_cli, name="requests")
jobs_cli = typer.Typer(help="Scheduled work (consentd serve runs it by itself; this runs it once, e.g. from cron).", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")
# prometheus-client's multiprocess mode (app.metrics is not imported here: prometheus_client picks its mode at import).
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The origins `make run` serves the demo shop from.
DEMO_ORIGINS = ["http://127.0.0.1:8000", "http://localhost:8000"]

T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _with_database(work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on the configured database (it opens its own transactions)."""

    async def run() -> T:
        database = await Database.open(get_settings())
        try:
            return await work(database)
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except AppError as exc:
        _fail(exc.detail)


def _in_transaction(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction on the configured database."""

    async def in_transaction(database: Database) -> T:
        async with database.transaction() as session:
            return await work(session)

    return _with_database(in_transaction)


def _check_tenant_key(key: str) -> None:
    if not TENANT_KEY.match(key):
        _fail("a tenant key is 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit")


def _proxies_option(value: str | None) -> str | None:
    try:
        return None if value is None else trusted_proxies(value, what="the list")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@contextmanager
def _metrics_folder(workers: int) -> Iterator[None]:
    """Several workers each write their metrics to files in one folder, which /metrics of any of them adds up
    (prometheus-client's multiprocess mode): a fresh temporary folder, removed at exit; or PROMETHEUS_MULTIPROC_DIR
    when it is set, emptied first (the files of an earlier run would count again)."""
    given = os.environ.get(MULTIPROCESS_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
    if given or workers == 1:
        yield
        return
    folder = tempfile.mkdtemp(prefix="consentd-metrics-")
    # Set before any worker imports prometheus_client, which picks its mode once, at import.
    os.environ[MULTIPROCESS_ENV] = folder
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_ENV]
        shutil.rmtree(folder, ignore_errors=True)


@cli.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            callback=_proxies_option, metavar="LIST", show_default="CONSENTD_FORWARDED_ALLOW_IPS, else 127.0.0.1",
            help="the proxies whose X-Forwarded-For is believed: comma-separated addresses or networks",
        ),
    ] = None,
    migrate: Annotated[bool, typer.Option("--migrate", help="migrate the database first")] = False,
    access_log: Annotated[bool, typer.Option(help="log each request (method, path, status)")] = True,
) -> None:
    """Serve the HTTP API."""
    get_settings()  # a configuration error stops here, in one line, not in every worker
    if migrate:
        run_migrations()
    # uvicorn resolves the client address: from a trusted proxy, the right-most untrusted hop of X-Forwarded-For;
    # from anyone else, the peer itself (its X-Forwarded-For is ignored).
    trusted = forwarded_allow_ips if forwarded_allow_ips is not None else get_settings().forwarded_allow_ips
    with _metrics_folder(workers):
        uvicorn.run(
            "app.main:create_app", factory=True, host=host, port=port, workers=workers, access_log=access_log,
            proxy_headers=True, forwarded_allow_ips=trusted, server_header=False,
        )


@cli.command("migrate")
def run_migrations() -> None:
    """Upgrade the database to the newest schema (Alembic)."""
    from app.migrations import upgrade

    migrated = asyncio.run(upgrade(get_settings().database_url))
    typer.echo(migrated.describe(), err=True)


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
    from app.services.purposes import catalogue

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
    from app.services.purposes import catalogue

    await _require_tenant(session, tenant)
    return await catalogue.load(session, tenant=tenant, entries=entries)


@cli.command()
def demo(ttl: Annotated[int, typer.Option(help="token lifetime in seconds")] = 86_400) -> None:
    """Create the demo tenant with the default purpose catalogue (idempotent) and print an admin token."""
    from app.services import tenants
    from app.services.banner import banners
    from app.services.purposes import catalogue

    async def seed(session: AsyncSession) -> None:
        await tenants.ensure(session, key=DEMO_TENANT, name="Demo shop")
        await catalogue.load(session, tenant=DEMO_TENANT, entries=catalogue.default())
        if not await banners.list_keys(session, tenant=DEMO_TENANT):
            await banners.create_key(session, tenant=DEMO_TENANT, origins=DEMO_ORIGINS)

    _in_transaction(seed)
    token = mint_token(get_settings(), tenant=DEMO_TENANT, scopes=["admin"], ttl=ttl, client="demo-admin")
    typer.echo(f"Tenant '{DEMO_TENANT}' is ready; its demo shop with the cookie banner is at /demo.", err=True)
    typer.echo(f"Its admin token (valid {ttl // 3600} h):", err=True)
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


# `consentd import`'s defaults (bench/import_throughput.py measures its floor with the same).
IMPORT_CHUNK_SIZE = 5_000
IMPORT_WRITERS = 2


@cli.command("import")
def import_consents(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, metavar="FILE", help="NDJSON, one POST /v1/consents body a line"),
    ],
    tenant: Annotated[str, typer.Option(help="tenant key")],
    chunk_size: Annotated[int, typer.Option(min=1, max=50_000, help="lines per transaction")] = IMPORT_CHUNK_SIZE,
    jobs: Annotated[int, typer.Option(min=1, max=16, help="worker processes that check lines")] = 2,
    writers: Annotated[
        int, typer.Option(min=1, max=8, help="chunks stored at once (1: strictly one after another, in file order)")
    ] = IMPORT_WRITERS,
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


@banner_keys_cli.command("create")
def create_banner_key(
    tenant: Annotated[str, typer.Option(help="tenant key")],
    origin: Annotated[list[str], typer.Option(help="an origin the banner runs on, e.g. https://shop.example (repeat for more)")],
) -> None:
    """Print a new publishable key (pk_...) for the cookie banner, valid only from the given origins."""
    from app.services.banner import banners

    _check_tenant_key(tenant)
    try:
        origins = [banners.normalise_origin(value) for value in origin]
    except ValueError as exc:
        _fail(str(exc))

    async def create(session: AsyncSession) -> str:
        await _require_tenant(session, tenant)
        return await banners.create_key(session, tenant=tenant, origins=origins)

    typer.echo(_in_transaction(create))


@banner_keys_cli.command("list")
def list_banner_keys(tenant: Annotated[str, typer.Option(help="tenant key")]) -> None:
    """List a tenant's publishable keys with their origins, newest first."""
    from app.services.banner import banners

    _check_tenant_key(tenant)
    for key in _in_transaction(lambda session: banners.list_keys(session, tenant=tenant)):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        typer.echo(f"{key.key}\t{state}\t{' '.join(key.origins)}")


@banner_keys_cli.command("revoke")
def revoke_banner_key(key: str) -> None:
    """Stop a publishable key (servers stop accepting it within seconds)."""
    from app.services.banner import banners

    if not _in_transaction(lambda session: banners.revoke_key(session, key=key)):
        _fail("no such active key")
    typer.echo("revoked", err=True)


@requests_cli.command("list")
def list_requests(
    tenant: Annotated[str, typer.Option(help="tenant key")],
    due_before: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="only requests due before this day (YYYY-MM-DD)")
    ] = None,
) -> None:
    """The tenant's open requests, the soonest due first, with the days left to answer each."""
    from rich.console import Console
    from rich.table import Table

    from app.services import requests
    from app.services.requests import deadlines

    _check_tenant_key(tenant)

    async def read(session: AsyncSession) -> list:
        await _require_tenant(session, tenant)
        return await requests.open_requests(session, tenant=tenant, due_before=due_before.date() if due_before else None)

    rows = _in_transaction(read)
    today = deadlines.uk_day(datetime.now(UTC))
    table = Table(title=f"open requests of {tenant}: {len(rows)}")
    for column in ("request", "type", "status", "received", "due", "days left"):
        table.add_column(column, justify="right" if column == "days left" else "left")
    for row in rows:
        left = requests.days_left(row, today)
        due = row.extended_due_at or row.due_at
        table.add_row(
            str(row.id), row.type, row.status.replace("_", " "), f"{deadlines.uk_day(row.received_at)}",
            f"{due}{' (extended)' if row.extended_due_at else ''}" if due else "clock not started",
            "" if left is None else (f"[red]{left}[/red]" if left < 0 else str(left)),
        )
    Console(width=160).print(table)


@jobs_cli.command("run")
def jobs_run(
    only: Annotated[str | None, typer.Option(help="run only this job: requests or webhooks")] = None,
) -> None:
    """Run the scheduled work once: the requests' job (the rest of erasures whose holds lapsed, request.due_soon),
    then webhooks (every tenant's new events enqueued, and sent until nothing is due). Safe beside running servers."""
    from app.services.notifications import Sender
    from app.services.scheduled import jobs
    from app.services.subjects import IdentifierKeys

    if only not in (None, "webhooks", "requests"):
        typer.echo(f"unknown job {only!r}: the jobs are requests and webhooks", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    sender = Sender(
        keys=IdentifierKeys(settings.identifier_key, settings.default_region), allow_hosts=settings.webhook_allow_hosts,
        concurrency=settings.webhook_concurrency, timeout=settings.webhook_timeout,
    )

    async def settle(database: Database) -> dict[str, int]:
        """The requests' job, then webhook rounds until one finds nothing to do (a receiver that fails is retried
        later, by its schedule)."""
        total = {"enqueued": 0, "attempted": 0}
        if only in (None, "requests"):
            done = await jobs.requests_job(database, region=settings.holidays_region)
            typer.echo(f"requests: {done}" if done is not None else "requests: another process is running it")
        while only in (None, "webhooks"):
            counts = await jobs.run_once(database, sender)
            total = {key: total[key] + counts[key] for key in total}
            if not (counts["enqueued"] or counts["attempted"]):
                break
        return total

    counts = _with_database(settle)
    if only in (None, "webhooks"):
        typer.echo(f"webhooks: {counts['enqueued']} deliveries enqueued, {counts['attempted']} attempted")


@audit_cli.command("verify")
def audit_verify(
    tenant: Annotated[str, typer.Option(help="tenant key")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, readable=True,
            help="a checkpoint saved by `consentd audit checkpoint` (default: the latest in the database)",
        ),
    ] = None,
    incremental: Annotated[bool, typer.Option("--incremental", help="read only the chains that moved since the checkpoint")] = False,
) -> None:
    """Check every event against its subject's hash chain and a signed checkpoint; print the findings as JSON.

    Exits 1 when an event was changed, deleted, inserted or reordered behind the service's back, 2 when the
    verification itself could not run (no database, say)."""
    from app.security import Signer
    from app.services.audit import checkpoints

    _check_tenant_key(tenant)
    saved = checkpoint.read_text().strip() if checkpoint else None
    settings = get_settings()
    try:
        _in_transaction(lambda session: _require_tenant(session, tenant))
        result = _with_database(
            lambda database: checkpoints.verify(database, Signer(settings), tenant=tenant, saved_jws=saved, incremental=incremental)
        )
    except (OSError, SQLAlchemyError, asyncpg.PostgresError, TimeoutError) as exc:
        typer.echo(f"error: verification could not run: {type(exc).__name__}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.model_dump_json(indent=2))
    against = f"checkpoint {result.checkpoint.id}" if result.checkpoint else "no checkpoint"
    typer.echo(
        f"{result.checked} events in {result.chains} chains checked against {against}: "
        + ("ok" if result.ok else f"{result.problems_total} problem(s)"),
        err=True,
    )
    if not result.ok:
        raise typer.Exit(1)


@audit_cli.command("checkpoint")
def audit_checkpoint(
    tenant: Annotated[str, typer.Option(help="tenant key")],
    out: Annotated[Path | None, typer.Option(help="also write the checkpoint to this file")] = None,
) -> None:
    """Sign the heads of every chain of the tenant and print the checkpoint (a JWS): keep it outside the database,
    and verify against it later with `consentd audit verify --checkpoint FILE`."""
    from app.security import Signer
    from app.services.audit import checkpoints

    _check_tenant_key(tenant)
    signer = Signer(get_settings())

    async def take(session: AsyncSession):
        await _require_tenant(session, tenant)
        return await checkpoints.create(session, signer, tenant=tenant)

    taken = _in_transaction(take)
    if out is not None:
        out.write_text(taken.jws + "\n")
    typer.echo(taken.jws)
    typer.echo(f"checkpoint {taken.id}: {taken.events} events in {taken.chains} chains, root {taken.root}", err=True)


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
    except ConfigError as exc:
        # Whichever command first reads the settings: one line per bad variable, no traceback, exit 2 (usage).
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
