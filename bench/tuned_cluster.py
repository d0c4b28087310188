"""A private PostgreSQL 15 cluster for the benches, set up as a production server of this machine's size would be.

    .venv/bin/python bench/tuned_cluster.py              # start one; prints the BENCH_ADMIN_URL to export
    .venv/bin/python bench/tuned_cluster.py --stop DIR   # stop the cluster in DIR and remove DIR

The machine's shared server (127.0.0.1:5432) runs with stock settings: 128 MB of shared_buffers and checkpoints
every 1 GB of WAL, which is what a laptop install gets, not what a server holding the data is given. This one is
initdb'd into a temporary folder, listens on 127.0.0.1 on a free port, and takes SETTINGS below (written to
`tuned.conf` in its data folder, which postgresql.conf includes). Durability is not what is tuned: fsync,
synchronous_commit and full_page_writes stay on. Benches that take `--tuned` start one with `tuned_cluster()` and
stop it when they are done.
"""

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
GIB = 1 << 30


def _mb(size: float) -> str:
    return f"{int(size) >> 20}MB"


def settings(memory: int | None = None, cores: int | None = None) -> dict[str, tuple[str, str]]:
    """The settings (value, why) for a dedicated server with `memory` bytes of RAM and `cores` cores (this
    machine's by default)."""
    memory = memory or psutil.virtual_memory().total
    cores = cores or os.cpu_count() or 2
    return {
        # Memory
        "shared_buffers": (
            _mb(min(memory // 4, 8 * GIB)),
            "a quarter of the RAM (the usual starting point; the kernel's page cache holds the rest): the indexes "
            "an import writes at random (UUID and blind-index keys) and the tables a stream joins stay in memory",
        ),
        "huge_pages": ("try", "fewer page-table entries for a large shared_buffers, when the kernel has huge pages"),
        "effective_cache_size": (
            _mb(memory * 3 // 4),
            "what the planner may assume is cached (shared_buffers + page cache), about three quarters of the RAM",
        ),
        "work_mem": (
            "64MB",
            "per sort or hash node: the stream's chunk joins and the import's ordered claims sort in memory; "
            "a few dozen connections times a few nodes stays well within the RAM",
        ),
        "maintenance_work_mem": (
            _mb(min(memory // 16, 2 * GIB)),
            "CREATE INDEX (migrations, restores) and VACUUM sort and collect dead rows in memory",
        ),
        # WAL and checkpoints
        "wal_buffers": ("64MB", "bulk COPYs write WAL faster than the 16 MB default lets the WAL writer keep up with"),
        "max_wal_size": (
            "16GB",
            "checkpoints on time, not forced by WAL volume: after each checkpoint the first change to every page "
            "writes a full-page image, so fewer checkpoints during an import mean far less WAL",
        ),
        "min_wal_size": ("2GB", "WAL segments recycled rather than created during bursts"),
        "checkpoint_timeout": ("15min", "spreads checkpoints (and their full-page images) out; crash recovery stays a minute or two"),
        "checkpoint_completion_target": ("0.9", "spreads a checkpoint's writes over 90% of the interval"),
        "wal_compression": ("lz4", "full-page images compressed: less WAL to write and ship to replicas, for little CPU"),
        # Planner and I/O on SSD
        "random_page_cost": ("1.1", "SSD: a random read costs about as much as a sequential one"),
        "effective_io_concurrency": ("200", "SSD: prefetch many pages at once for bitmap heap scans"),
        # CPU
        "max_worker_processes": (str(max(cores, 8)), "background workers, parallel query among them"),
        "max_parallel_workers": (str(cores), "no more parallel workers than cores"),
        "max_parallel_workers_per_gather": (str(max(1, cores // 2)), "half the cores for one query's parallel plan"),
        # Durability: kept as stock, stated so that nobody wonders.
        "fsync": ("on", "durability is not tuned away"),
        "synchronous_commit": ("on", "a commit is on disk when it is acknowledged, as in production"),
        "full_page_writes": ("on", "torn pages are recoverable after a crash"),
        # Logging
        "log_checkpoints": ("on", "the log says when a checkpoint ran and why (time or WAL volume)"),
    }


@dataclass
class Cluster:
    """A running tuned cluster: its folder (data/, log, socket) and the admin URL of its `root` superuser."""

    root: Path
    port: int
    run_as: list[str] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return f"postgresql://root@{HOST}:{self.port}/postgres"

    def stop(self) -> None:
        stop(self.root)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _run_as(root: Path) -> list[str]:
    """initdb and postgres refuse to run as root: then they run as the user owning the folder."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", root.owner(), "--"]


def start(memory: int | None = None) -> Cluster:
    """initdb into a new temporary folder, write SETTINGS, start the server; the running cluster."""
    if not (BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL 15 server binaries not found in {BIN} (apt-get install postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="consentd-tuned-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres" if _user_exists("postgres") else "nobody")
    run_as = _run_as(root)
    data, port = root / "data", _free_port()
    try:
        subprocess.run([*run_as, str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "root", "-E", "UTF8"],
                       check=True, capture_output=True)
        lines = [f"# bench/tuned_cluster.py\nlisten_addresses = '{HOST}'\nport = {port}\nunix_socket_directories = '{root}'"]
        lines += [f"{name} = '{value}'    # {why}" for name, (value, why) in settings(memory).items()]
        # Written through the folder's owner: the data folder is theirs (mode 0700).
        subprocess.run([*run_as, "sh", "-c", f"cat > {data / 'tuned.conf'} && echo \"include 'tuned.conf'\" >> "
                        f"{data / 'postgresql.conf'}"], input="\n".join(lines) + "\n", text=True, check=True)
        subprocess.run([*run_as, str(BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "120", "start"],
                       check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        log = root / "log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else getattr(exc, "stderr", b"") or b""
        stop(root)
        raise RuntimeError(f"could not start the tuned cluster: {exc}\n{detail!s}") from exc
    return Cluster(root, port, run_as)


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", name], capture_output=True, check=False).returncode == 0


def stop(root: Path) -> None:
    """Stop the cluster in `root` (fast shutdown: the benches' data is thrown away anyway) and remove the folder."""
    data = root / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run([*_run_as(root), str(BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def tuned_cluster() -> Iterator[Cluster]:
    """A tuned cluster for the time of the block, BENCH_ADMIN_URL pointing at it (restored after)."""
    cluster = start()
    before = os.environ.get("BENCH_ADMIN_URL")
    os.environ["BENCH_ADMIN_URL"] = cluster.admin_url
    print(f"tuned PostgreSQL cluster in {cluster.root}: BENCH_ADMIN_URL={cluster.admin_url}", flush=True)
    try:
        yield cluster
    finally:
        if before is None:
            os.environ.pop("BENCH_ADMIN_URL", None)
        else:
            os.environ["BENCH_ADMIN_URL"] = before
        cluster.stop()


async def server_settings(dsn: str) -> str:
    """The settings that shape the benches' figures, as a database of the server sees them (for the report)."""
    names = ("server_version", "shared_buffers", "effective_cache_size", "work_mem", "hash_mem_multiplier",
             "max_wal_size", "checkpoint_timeout", "wal_compression", "random_page_cost", "synchronous_commit", "jit")
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow("SELECT " + ", ".join(f"current_setting('{name}') AS {name}" for name in names))
    finally:
        await connection.close()
    return ", ".join(f"{name} {row[name]}" for name in names)


def add_tuned_argument(parser: argparse.ArgumentParser) -> None:
    """The benches' --tuned option."""
    parser.add_argument(
        "--tuned", action="store_true",
        help="run on a private PostgreSQL cluster with production settings (bench/tuned_cluster.py), started and"
             " stopped by the bench, instead of BENCH_ADMIN_URL's server",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stop", type=Path, metavar="DIR", help="stop the cluster in DIR and remove DIR")
    parser.add_argument("--print-settings", action="store_true", help="print the settings and why, and exit")
    args = parser.parse_args()
    if args.print_settings:
        for name, (value, why) in settings().items():
            print(f"{name} = {value}\n    {why}")
        return 0
    if args.stop:
        if not (args.stop / "data" / "PG_VERSION").exists():
            print(f"error: {args.stop} holds no cluster of tuned_cluster.py", file=sys.stderr)
            return 1
        stop(args.stop)
        print(f"stopped and removed {args.stop}")
        return 0
    cluster = start()
    print(f"export BENCH_ADMIN_URL={cluster.admin_url}")
    print(f"# stop it with: {sys.executable} {Path(__file__).resolve()} --stop {cluster.root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
