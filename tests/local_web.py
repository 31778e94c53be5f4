"""What the slow web tests share: a free loopback port, a `bench ui` process started on it and
polled until MLflow's REST API answers, and a headless Chromium with the flags every test uses."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

START_TIMEOUT_S = 90  # mlflow server imports a lot; a loaded 2-core machine is slow
NO_CHROMIUM = "no Chromium found: install Debian's `chromium` package (.ci/run does)"
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def wait_until_serving(base: str, server: subprocess.Popen, log: Path) -> dict:
    """The experiments the server at `base` lists, once it answers; fails the test with the
    server's log if it exits or stays silent for START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"server exited with {server.returncode}: {log.read_text()[-3000:]}")
        try:
            return json.loads(call(f"{base}/api/2.0/mlflow/experiments/search?max_results=100"))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"server did not answer in {START_TIMEOUT_S} s: {log.read_text()[-3000:]}")


def start_bench_ui(uri: str, folder: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`bench ui` on a free port over the store at `uri`, run in `folder` with its output in
    `log`, in its own process group (the test can always end all of it): (process, base URL)."""
    port = free_port()
    command = [sys.executable, "-c", "from bench.cli import main; main()", "ui"]
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "--port", str(port), "--tracking-uri", uri],
            cwd=folder,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return server, f"http://127.0.0.1:{port}"


def chromium() -> str | None:
    """The headless browser's command, or None where none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None
