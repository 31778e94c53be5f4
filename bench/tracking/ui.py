"""`bench ui`: the MLflow UI on the tracking store the runs used, with their artifacts.

For the default local store (`sqlite:///mlflow.db`, artifacts in ./mlruns beside it) the server
reads the same database file; runs record their artifact location as a file URI, which the
server reads directly, and new experiments made from the UI put theirs in the same mlruns folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench import keys, tracking
from bench.tracking.store import TrackingError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


class UiError(TrackingError):
    """The UI cannot be started on this store or port; str() is the line to print."""


def server_command(tracking_uri: str | None, host: str, port: int) -> list[str]:
    """The `mlflow server` command line for the store the runs use."""
    uri = tracking.resolve_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise UiError(f"the tracking store {uri} is an MLflow server already: open it in a browser")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.is_file():
            raise UiError(
                f"no tracking store at {uri}: run `bench run` first, or pass --tracking-uri"
            )
        artifacts = database.resolve().parent / "mlruns"
        command += ["--default-artifact-root", artifacts.as_uri()]
    # One worker is plenty for one person's browser and starts in a fraction of the time.
    return command + ["--host", host, "--port", str(port), "--workers", "1"]


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UiError(
                f"cannot listen on {host}:{port} ({err.strerror}); pick another with --port"
            ) from None


def suite_links(tracking_uri: str | None, base_url: str) -> list[tuple[str, str]]:
    """(suite, link) for every suite's experiment in the store: its runs table in MLflow's
    "Model training" mode with the harness's view. MLflow 3's UI otherwise opens an experiment
    on its GenAI overview until "Model training" is chosen once in the browser."""
    client = tracking.connect(tracking_uri)
    kind = f"tags.`{keys.TAG_EXPERIMENT_KIND}` = '{keys.EXPERIMENT_KIND_TRAINING}'"
    experiments = client.search_experiments(filter_string=kind, order_by=["name ASC"])
    return [(e.name, tracking.runs_view_url(base_url, e.experiment_id)) for e in experiments]


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(tracking_uri: str | None, host: str, port: int, echo=print) -> int:
    """Run the MLflow UI in the foreground until it stops, Ctrl-C or SIGTERM; returns its exit
    status. The server (mlflow and its uvicorn worker) runs in its own process group, which is
    always stopped as a whole: no server outlives `bench ui`."""
    command = server_command(tracking_uri, host, port)
    check_port_free(host, port)
    echo(f"MLflow UI for {tracking.resolve_uri(tracking_uri)} at {url(host, port)} (Ctrl-C stops)")
    for name, link in suite_links(tracking_uri, url(host, port)):
        echo(f"  {name}: {link}")
    environment = dict(os.environ)
    # MLflow's job runner (GenAI scorers, prompt optimisation; about eight processes) serves
    # nothing a benchmark logs; without it the UI starts faster and idles lighter.
    environment.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    server = subprocess.Popen(command, env=environment, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(server)


def stop(server: subprocess.Popen, grace_seconds: float = 10) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after the grace period."""
    _signal_group(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        server.poll()  # reap the leader, so that only live workers keep the group alive
        if not _signal_group(server.pid, 0):
            return
        time.sleep(0.1)
    _signal_group(server.pid, signal.SIGKILL)
    server.wait()


def _signal_group(group: int, sig: int) -> bool:
    """Send sig to the process group; False when the group no longer exists."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    return True


def _interrupt(signum, frame):
    raise KeyboardInterrupt
