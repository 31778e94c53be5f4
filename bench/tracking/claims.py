"""Claims: which worker trains a cell, decided in the tracking store itself.

Independent `bench run` processes (a SLURM job array, the same command on several machines, a
`--parallel` or Ray worker beside them) share one store and nothing else. Before a worker trains a
cell it claims it: the claim is the cell's RUNNING run, tagged with the worker's id and a
heartbeat (the time of its last sign of life) that a background thread renews every few seconds.

MLflow's REST API has no compare-and-set, so the choice is a rule every worker computes the same
way from the same runs: create the claim, wait a moment (`Lease.settle`, longer than a request's
latency plus the clocks' skew between machines), then list the cell's live claims; the oldest
(start time, then run id) wins, and every later one withdraws by deleting its run (not leaving it
FAILED). A claim is live while its run is RUNNING and its heartbeat is younger than the lease; a
claim whose worker is on this machine and whose process is gone is dead at once. Any worker may
take over a dead claim's cell; a live claim is never ended by another worker.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from mlflow.tracking import MlflowClient

from bench import keys

LEASE_SECONDS = 180.0  # a claim without a heartbeat for this long belongs to a dead worker
HOST_ENV = "BENCH_WORKER_HOST"  # the host part of worker ids (default: the machine's name)


@dataclass(frozen=True)
class Lease:
    seconds: float = LEASE_SECONDS
    settle: float = 2.0  # between creating a claim and deciding who holds the cell

    @property
    def heartbeat(self) -> float:
        """How often a holder renews its heartbeat: several times within a lease."""
        return min(30.0, max(0.2, self.seconds / 6))


def lease_for(tracking_uri: str, seconds: float = LEASE_SECONDS) -> Lease:
    """A local SQLite file has one clock and no network between its writers: a short settle
    suffices. A server's workers may be other machines: wait out latency and clock skew."""
    local = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    return Lease(seconds, 0.2 if local else min(2.0, max(0.2, seconds / 20)))


def host() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


@cache
def worker_id() -> str:
    """This process as a claimant: host/pid/nonce (the nonce tells a reused pid apart)."""
    return f"{host()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def claim_tags() -> dict[str, str]:
    return {keys.TAG_WORKER: worker_id(), keys.TAG_HEARTBEAT: f"{time.time():.3f}"}


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process with that pid: alive
        return False
    return False


def worker_of(run) -> str:
    return run.data.tags.get(keys.TAG_WORKER, "")


def is_live(run, lease: Lease, now: float | None = None) -> bool:
    """Whether `run` is a claim some worker still holds. A RUNNING run without a heartbeat was
    left by a worker from before claims, or one that never got going: not live."""
    if run.info.status != "RUNNING" or run.info.lifecycle_stage != "active":
        return False
    beat = run.data.tags.get(keys.TAG_HEARTBEAT)
    if beat is None:
        return False
    owner_host, _, rest = worker_of(run).partition("/")
    pid = rest.partition("/")[0]
    if owner_host == host() and pid.isdigit() and int(pid) != os.getpid():
        if _process_gone(int(pid)):
            return False
    return (time.time() if now is None else now) - float(beat) < lease.seconds


def _order(run) -> tuple:
    return (run.info.start_time or 0, run.info.run_id)


def holder(runs: list, lease: Lease, mine: str | None = None):
    """The claim that holds the cell among its RUNNING runs: the oldest live one (ours counts as
    live while we decide)."""
    live = [r for r in runs if r.info.run_id == mine or is_live(r, lease)]
    return min(live, key=_order) if live else None


def withdraw(client: MlflowClient, run_id: str) -> None:
    """A claim that lost: deleted, so it never shows as a failed or duplicate run."""
    client.delete_run(run_id)


def take_over(client: MlflowClient, run_id: str) -> None:
    """Make a dead worker's run ours: its heartbeat and worker id from now on."""
    for key, value in claim_tags().items():
        client.set_tag(run_id, key, value)


@contextmanager
def heartbeat(client: MlflowClient, run_id: str, lease: Lease) -> Iterator[None]:
    """Renew the claim on `run_id` from a background thread while the block runs. A store that
    does not answer for a while (the client retries) only delays a beat: training goes on."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease.heartbeat):
            try:
                client.set_tag(run_id, keys.TAG_HEARTBEAT, f"{time.time():.3f}")
            except Exception:  # noqa: BLE001 - the next beat tries again; the lease is long
                pass

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=lease.heartbeat + 5)
