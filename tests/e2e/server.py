"""Start-up code shared by the browser tests and docs/screenshot.py: a real `consentd serve` on a SQLite
file, and a tiny static web server on another port that plays the shop embedding the banner.

No pytest here: failures raise RuntimeError, so a plain script can use it too.
"""

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.support.postgres import free_port
from tests.support.server import COMMAND_TIMEOUT, CONSENTD, stop, wait_until_healthy
from tests.test_server import consentd_env


@dataclass
class Consentd:
    """A running `consentd serve`, its environment and an admin token of the demo tenant."""

    base_url: str
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen
    admin_token: str = ""

    def cli(self, *args: str) -> str:
        return run_consentd(self.env, self.workdir, *args)

    def banner_key(self, *origins: str, tenant: str = "demo") -> str:
        """A publishable key for these origins (`consentd banner-keys create` prints only the key)."""
        args = [arg for origin in origins for arg in ("--origin", origin)]
        key = self.cli("banner-keys", "create", "--tenant", tenant, *args).strip()
        if not key.startswith("pk_") or "\n" in key:
            raise RuntimeError(f"banner-keys create printed {key!r}, not one pk_ key")
        return key

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10
        )

    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        stop(self.process)


def run_consentd(env: dict[str, str], cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [CONSENTD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"consentd {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def start_consentd(workdir: Path) -> Consentd:
    """Migrate a fresh SQLite database, seed the demo tenant, serve it on a free port; wait until healthy."""
    # Every browser of the suite comes from 127.0.0.1; the rate limits have server tests of their own.
    env = consentd_env(f"sqlite+aiosqlite:///{workdir / 'e2e.db'}") | {"CONSENTD_PUBLIC_RATE_PER_IP": "10000/minute"}
    run_consentd(env, workdir, "migrate")
    run_consentd(env, workdir, "demo")
    port = free_port()
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [CONSENTD, "serve", "--port", str(port)], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    server = Consentd(f"http://127.0.0.1:{port}", env, workdir, process)
    try:
        wait_until_healthy(process, server.base_url, workdir / "server.log")
        server.admin_token = server.cli("token", "--tenant", "demo", "--scopes", "admin").strip()
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class StaticSite:
    """Pages served from memory on 127.0.0.1 (another origin than the API): path -> a function giving HTML."""

    pages: dict[str, Callable[[], str]] = field(default_factory=dict)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StaticSite":
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                page = pages.get(self.path.split("?", 1)[0])
                body = (page() if page else "not found").encode()
                self.send_response(200 if page else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8" if page else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="e2e-shop", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox"]
