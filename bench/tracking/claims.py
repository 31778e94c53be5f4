"""Claims: which worker trains a cell, decided in the tracking store itself.

Independent `bench run` processes (a SLURM job array, the same command on several machines, a
`--parallel` or Ray worker beside them) share one store and nothing else: no clock either. Before
a worker trains a cell it claims it: the claim is the cell's RUNNING run, tagged with the worker
(`worker`: host/pid/nonce; `worker_pid_space`: where that pid means something), its state
(`claim`: candidate, then held) and a `heartbeat` that a background thread renews while it holds.

Liveness, on the reader's clock only. The heartbeat is "<count> <unix time>"; the count rises with
every beat and the time is for people: nothing compares two machines' clocks. Each reading process
remembers per claim the (worker, heartbeat) it last saw and when it first saw it, on its own
time.monotonic(). A claim is live while its run is RUNNING and that pair changed less than
`Lease.seconds` ago; a claim seen for the first time is live (the reader starts its own timer), so
a fresh worker waits one lease before it takes over a silent claim of another machine. A RUNNING
run without a heartbeat (from before claims) is no claim; a claim of this machine, in this PID
namespace, whose process is gone is dead at once (a container sharing the host name has another
namespace, or /proc lacks the ids: then the pid is never trusted).

Election: flag, then check. MLflow's REST API has no compare-and-set, but the store applies
requests in one order that every reader sees (one database). A worker (1) creates its claim as a
candidate, (2) waits `Lease.settle`, (3) lists the cell's live claims and withdraws (deletes its
run) if another one is held, or is an older candidate by (start time, run id): that order is a
hint only, stamped by each client's clock, and merely spares most races a second round; (4) marks
its claim held; (5) lists again and withdraws if any other live claim is held. At most one worker
gets past (5): if A and B both did, A's check (5) did not see B's mark, so it came before B's mark
(4), which came before B's check; B's check did not see A's mark, so it came before A's mark,
which came before A's check: a cycle, impossible in one order. (A claim judged dead in a check has
fenced itself already, see below, or its process is gone.) Both may withdraw in a symmetric race;
the caller then tries again after a random pause. A dead worker's run taken over to resume it
(`Claim.take_over`) is marked held and ours in one write while our elected claim still stands,
and only then is that claim withdrawn: a held claim of ours is visible throughout.

The lease (`--lease`, default 180 s). Others take a claim over only after they observed no
heartbeat change for `Lease.seconds`. The holder fences itself when its last beat that reached the
store started more than `Lease.fence` (half the lease) ago on its own monotonic clock, which keeps
running while the process is stopped (SIGSTOP, a suspended VM): it stops before anyone may take
over, with half a lease to spare. Each beat also reads the run back: no longer RUNNING, or another
worker's, and the claim is lost. Training asks `Claim.check()` before each write and stops without
writing anything more to the run or its checkpoint folder. Against an MLflow server the heartbeat's
own requests have a short timeout and one retry (`mlflow.utils.rest_utils.http_request` takes both
per call), instead of MLflow's retry loop of about four minutes; the training's other writes keep
that loop, and the fence is what bounds them. What no fence closes without compare-and-set in the
store: a process paused between its check and the write that follows may still land that one write.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from mlflow.entities import RunTag
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import http_request, verify_rest_response

from bench import keys
from bench.tracking.runs import is_held, reopen
from bench.tracking.worker_identity import pid_space, process_gone, worker_id, worker_of

LEASE_SECONDS = 180.0  # a claim whose heartbeat nobody saw change for this long is a dead worker's
ATTEMPTS = 4  # elections a worker tries for one cell when every candidate withdrew


@dataclass(frozen=True)
class Lease:
    seconds: float = LEASE_SECONDS
    settle: float = 2.0  # between creating a claim and the first check: lets rivals show up

    @property
    def heartbeat(self) -> float:
        """How often a holder beats: several times within the fence."""
        return min(30.0, max(0.05, self.seconds / 6))

    @property
    def fence(self) -> float:
        """A holder whose last successful beat is older than this stops: others wait a lease."""
        return self.seconds / 2

    @property
    def request_timeout(self) -> float:
        """Of each heartbeat request to a server, so that a beat ends well within the fence."""
        return max(1.0, min(10.0, self.seconds / 8))


def lease_for(tracking_uri: str, seconds: float = LEASE_SECONDS) -> Lease:
    """A local SQLite file answers at once: a short settle lets rivals show up. A server's
    workers may be other machines: wait out their requests' latency."""
    local = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    return Lease(seconds, 0.2 if local else min(2.0, max(0.2, seconds / 20)))


def retry_pause(lease: Lease) -> None:
    """A random pause, up to about two elections long, after an election that every candidate
    lost: workers that raced once do not race again in step."""
    time.sleep(random.uniform(0.0, 2 * lease.settle + 0.5))


# run id -> ((worker, heartbeat) last seen, time.monotonic() when first seen): this process's own
# observations, the only clock that liveness is measured on
_seen: dict[str, tuple[tuple[str, str], float]] = {}
_seen_lock = threading.Lock()


def is_live(run, lease: Lease, now: float | None = None) -> bool:
    """Whether `run` is a claim some worker still holds (see the module docstring). `now` is a
    reading of time.monotonic()."""
    if run.info.status != "RUNNING" or run.info.lifecycle_stage != "active":
        return False
    beat = run.data.tags.get(keys.TAG_HEARTBEAT)
    if beat is None or process_gone(run):
        return False
    now = time.monotonic() if now is None else now
    seen = (worker_of(run), beat)
    with _seen_lock:
        last = _seen.get(run.info.run_id)
        if last is None or last[0] != seen:
            last = _seen[run.info.run_id] = (seen, now)
    return now - last[1] < lease.seconds


def _order(run) -> tuple:
    return (run.info.start_time or 0, run.info.run_id)


def holder(runs: list, lease: Lease):
    """The claim to name as the cell's holder among its RUNNING runs: a live one marked held, else
    a live candidate still in its election; None when no claim is live."""
    live = [run for run in runs if is_live(run, lease)]
    return min(live, key=lambda run: (not is_held(run), _order(run)), default=None)


def withdraw(client: MlflowClient, run_id: str) -> None:
    """A claim that lost: deleted, so it never shows as a failed or duplicate run."""
    client.delete_run(run_id)


class ClaimLost(Exception):
    """This worker no longer holds its claim; str() says why, `worker` who has it (or None)."""

    def __init__(self, worker: str | None, detail: str):
        super().__init__(detail)
        self.worker = worker


class Election(NamedTuple):
    held: bool  # this claim holds the cell; else it was withdrawn
    rival: object | None = None  # the live claim it withdrew for, when there was one
    contested: bool = False  # withdrawn after marking itself held: the rival may withdraw too


class Claim:
    """This worker's claim on one cell: `new_claim` makes it a candidate, `elect` held (or
    withdrawn). Used as a context manager it beats from a background thread; `check()` raises
    ClaimLost once the claim is gone or fenced, and keeps raising."""

    def __init__(self, client: MlflowClient, lease: Lease, run_id: str, created_at: float):
        self.client, self.lease, self.run_id = client, lease, run_id
        self.count = 1  # the beat count of the heartbeat it was created with
        self.last_beat = created_at  # monotonic start of the last write that reached the store
        self.lost: ClaimLost | None = None
        self._beating = threading.Lock()  # one beat at a time; take_over waits for it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def elect(self, claims_of_cell: Callable[[], list]) -> Election:
        """Steps 2-5 of the module docstring on the cell's RUNNING runs (`claims_of_cell()`)."""
        time.sleep(self.lease.settle)
        found, rival = self._rival(claims_of_cell(), hint=True)
        if found and rival is None:
            marked_at = time.monotonic()  # the mark is a beat as well
            self._write(self.run_id, {keys.TAG_CLAIM: keys.CLAIM_HELD} | self._next_beat())
            self.last_beat = marked_at
            found, rival = self._rival(claims_of_cell(), hint=False)
            if found and rival is None:
                return Election(held=True)
            withdraw(self.client, self.run_id)
            return Election(held=False, rival=rival, contested=True)
        withdraw(self.client, self.run_id)
        return Election(held=False, rival=rival, contested=rival is None)

    def _rival(self, runs: list, hint: bool) -> tuple[bool, object | None]:
        """(whether our claim is still a RUNNING run, the live claim to withdraw for or None)."""
        mine = next((run for run in runs if run.info.run_id == self.run_id), None)
        others = [r for r in runs if r.info.run_id != self.run_id and is_live(r, self.lease)]
        held = [run for run in others if is_held(run)]
        if held:
            return mine is not None, min(held, key=_order)
        if mine is None:  # ended by a worker that found it dead (a very slow election)
            return False, min(others, key=_order, default=None)
        older = [run for run in others if hint and _order(run) < _order(mine)]
        return True, min(older, key=_order, default=None)

    def take_over(self, run_id: str) -> None:
        """Make `run_id` (an interrupted run of the cell, to resume) this claim: ours, held and
        RUNNING in place of the elected run, which is withdrawn only afterwards."""
        with self._beating:
            self.check()
            started = time.monotonic()
            self._write(run_id, claim_tags(keys.CLAIM_HELD) | self._next_beat())
            reopen(self.client, run_id)
            self.last_beat = started
            elected, self.run_id = self.run_id, run_id
        withdraw(self.client, elected)

    def check(self) -> None:
        """Raise ClaimLost when the claim was found gone or when no beat reached the store within
        the fence (a store that does not answer, a process that was stopped)."""
        self._fence_if_silent()
        if self.lost is not None:
            raise self.lost

    def _fence_if_silent(self) -> None:
        silent = time.monotonic() - self.last_beat
        if silent > self.lease.fence:
            self._lose(
                None,
                f"after {silent:.1f} s without a heartbeat reaching the store (a holder stops at "
                f"half the {self.lease.seconds:g} s lease)",
            )

    def _lose(self, worker: str | None, detail: str) -> None:
        if self.lost is None:  # the first reason stays
            self.lost = ClaimLost(worker, detail)

    def beat(self) -> None:
        """One beat: read the run back, then renew the heartbeat. A failed request only costs
        this beat; `check()` notices when too many failed."""
        started = time.monotonic()
        self._fence_if_silent()
        if self.lost is not None:
            return
        try:
            status, stage, worker = self._read(self.run_id)
            if worker != worker_id():
                self._lose(worker or None, f"to worker {worker or '(none)'}")
                return
            if status != "RUNNING" or stage != "active":
                self._lose(None, f"(its run {self.run_id} is {stage}, {status})")
                return
            self._write(self.run_id, self._next_beat())
        except Exception:  # noqa: BLE001 - the next beat tries again; the fence bounds the wait
            return
        self._fence_if_silent()  # fenced while the requests ran: lost, whoever asks first
        if self.lost is None:
            self.last_beat = started

    def _next_beat(self) -> dict[str, str]:
        self.count += 1
        return {keys.TAG_HEARTBEAT: f"{self.count} {time.time():.3f}"}

    def _read(self, run_id: str) -> tuple[str, str, str]:
        """(status, lifecycle stage, worker) of the run."""
        server = _server(self.client)
        if server is None:
            run = self.client.get_run(run_id)
            return run.info.status, run.info.lifecycle_stage, worker_of(run)
        endpoint = "/api/2.0/mlflow/runs/get"
        response = http_request(
            server, endpoint, "GET", params={"run_id": run_id}, **_quickly(self.lease)
        )
        run = verify_rest_response(response, endpoint).json()["run"]
        tags = {tag["key"]: tag["value"] for tag in run.get("data", {}).get("tags", [])}
        info = run["info"]
        return info["status"], info["lifecycle_stage"], tags.get(keys.TAG_WORKER, "")

    def _write(self, run_id: str, tags: dict[str, str]) -> None:
        server = _server(self.client)
        if server is None:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            return
        endpoint = "/api/2.0/mlflow/runs/log-batch"
        body = {"run_id": run_id, "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        response = http_request(server, endpoint, "POST", json=body, **_quickly(self.lease))
        verify_rest_response(response, endpoint)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.lease.heartbeat) and self.lost is None:
            with self._beating:
                if not self._stop.is_set():
                    self.beat()

    def __enter__(self) -> Claim:
        self._thread = threading.Thread(
            target=self._beat_until_stopped, name=f"heartbeat-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease.heartbeat + 4 * self.lease.request_timeout)


def claim_tags(state: str = keys.CLAIM_CANDIDATE) -> dict[str, str]:
    """The tags that make a run this worker's claim (its heartbeat aside)."""
    return {
        keys.TAG_WORKER: worker_id(),
        keys.TAG_WORKER_PID_SPACE: pid_space(),
        keys.TAG_CLAIM: state,
    }


def new_claim(client: MlflowClient, lease: Lease, create_run: Callable[[dict], str]) -> Claim:
    """A candidate claim: the run `create_run(tags)` makes with the claim's tags (step 1)."""
    created_at = time.monotonic()  # the creation is the first beat: the fence counts from it
    tags = claim_tags() | {keys.TAG_HEARTBEAT: f"1 {time.time():.3f}"}
    return Claim(client, lease, create_run(tags), created_at)


def _server(client: MlflowClient):
    """The host and credentials of an MLflow server behind `client`, else None (a local file)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store.get_host_creds() if isinstance(store, RestStore) else None


def _quickly(lease: Lease) -> dict:
    """A heartbeat request's retry policy: one quick retry, never MLflow's minutes of them."""
    return {"max_retries": 1, "backoff_factor": 0, "timeout": lease.request_timeout}
