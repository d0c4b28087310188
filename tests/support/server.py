"""A `consentd serve` subprocess: waiting for it to answer and stopping it. No pytest here: failures raise
RuntimeError, so docs/screenshot.py can use it too (through tests/e2e/server.py)."""

import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
CONSENTD = str(BIN / "consentd")
COMMAND_TIMEOUT = 60
START_TIMEOUT = 30


def wait_until_healthy(process: subprocess.Popen, base_url: str, log_path: Path) -> None:
    """Return once /healthz answers 200; RuntimeError with the server's log if it exits or stays silent."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"consentd serve exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"consentd serve did not answer /healthz within {START_TIMEOUT} s:\n{log_path.read_text(errors='replace')}"
    )


def stop(process: subprocess.Popen) -> None:
    """Terminate, then kill if it does not exit within 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
