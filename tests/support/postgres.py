"""Finding a PostgreSQL server for the tests, or starting a throwaway cluster from the installed binaries."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from app.db import asyncpg_dsn

DEFAULT_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(asyncpg_dsn(url), timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Cluster:
    """A PostgreSQL cluster of the test run's own, in a temporary folder, on a free loopback port."""

    url: str
    data: Path
    bin: Path
    run_as: list[str] = field(default_factory=list)

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(self.data.parent, ignore_errors=True)


def start_cluster() -> Cluster | None:
    """initdb + pg_ctl start; None when no server binaries are installed."""
    bin_dir = _binaries()
    if bin_dir is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="consentd-pg-"))
    data, port = root / "data", free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the cluster as the postgres (or nobody) user.
        user = "postgres" if shutil.which("id") and subprocess.run(["id", "postgres"], capture_output=True).returncode == 0 else "nobody"
        shutil.chown(root, user=user)
        run_as = ["runuser", "-u", user, "--"]
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "root", "--no-sync"],
                   check=True, capture_output=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off -c full_page_writes=off"
    subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    return Cluster(url=f"postgresql+asyncpg://root@127.0.0.1:{port}/postgres", data=data, bin=bin_dir, run_as=run_as)


async def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server of `server_url`; return its URL."""
    connection = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, name: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
