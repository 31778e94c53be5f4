"""Claims on cells in the tracking store (bench/tracking/claims.py), on a real SQLite store: who
holds a cell, when a claim is dead, and a `bench run` that meets another worker's live claim."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench import keys, tracking
from bench.cli import main
from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.tracking import claims
from tests.test_reliability import SUITE, VAE, runs_by_cell

LEASE = claims.Lease(seconds=30, settle=0.0)


def claim_run(client, experiment, cell, worker: str, beat: float) -> str:
    tags = {keys.TAG_WORKER: worker, keys.TAG_HEARTBEAT: f"{beat:.3f}"}
    return tracking.create_cell_run(client, experiment, cell, tags)


def a_cell(write_suite, tracking_uri):
    path = write_suite(SUITE.format(steps=4, log_every=2, checkpoint_every=4, models=VAE))
    (cell,) = expand(load_suite(path))
    client = MlflowClient(tracking_uri)
    return path, cell, client, tracking.experiment_id(client, cell.suite)


def test_the_oldest_live_claim_holds_the_cell(write_suite, tracking_uri):
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    now = time.time()
    stale = claim_run(client, experiment, cell, "machine-a/11/x", now - 60)  # lease 30 s
    first = claim_run(client, experiment, cell, "machine-b/12/x", now)
    time.sleep(0.01)
    second = claim_run(client, experiment, cell, "machine-c/13/x", now)
    runs = tracking.running_runs(client, experiment, cell.id)
    live = {r.info.run_id for r in runs if claims.is_live(r, LEASE)}
    assert live == {first, second}  # a heartbeat older than the lease is a dead worker's
    assert claims.holder(runs, LEASE).info.run_id == first
    assert claims.holder(runs, LEASE, mine=second).info.run_id == first  # the later one withdraws
    claims.withdraw(client, second)
    assert {r.info.run_id for r in tracking.running_runs(client, experiment, cell.id)} == {
        stale,
        first,
    }  # a withdrawn claim is deleted, not left as a run of the cell
    tracking.finish(client, first)
    runs = tracking.running_runs(client, experiment, cell.id)
    assert claims.holder(runs, LEASE) is None  # an ended run holds nothing


def test_a_claim_of_a_dead_process_on_this_machine_is_dead_at_once(write_suite, tracking_uri):
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    now = time.time()
    dead = claim_run(client, experiment, cell, f"{claims.host()}/{gone}/x", now)
    alive = claim_run(client, experiment, cell, f"{claims.host()}/{os.getppid()}/x", now)
    legacy = client.create_run(experiment, tags={keys.TAG_CELL_ID: cell.id}).info.run_id
    by_id = {r.info.run_id: r for r in tracking.running_runs(client, experiment, cell.id)}
    assert not claims.is_live(by_id[dead], LEASE)  # its process is gone: no need to wait
    assert claims.is_live(by_id[alive], LEASE)
    assert not claims.is_live(by_id[legacy], LEASE)  # RUNNING without a heartbeat: no claim


def test_a_heartbeat_keeps_renewing_the_claim(write_suite, tracking_uri):
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    run_id = claim_run(client, experiment, cell, claims.worker_id(), time.time() - 100)
    with claims.heartbeat(client, run_id, claims.Lease(seconds=1.2, settle=0)):
        time.sleep(0.8)
        beat = float(client.get_run(run_id).data.tags[keys.TAG_HEARTBEAT])
    assert time.time() - beat < 1.0


def test_a_run_meeting_a_live_claim_waits_and_trains_nothing_that_another_worker_did(
    write_suite, tracking_uri, tmp_path, monkeypatch
):
    """Another worker (another machine) holds the only cell and finishes it while `bench run`
    waits: it says what it waits for, and ends with the cell skipped, trained once in all."""
    path, cell, client, experiment = a_cell(write_suite, tracking_uri)
    other = claim_run(client, experiment, cell, "machine-b/99/x", time.time())
    looked = threading.Event()
    holder = claims.holder

    def watched_holder(*args, **kwargs):
        found = holder(*args, **kwargs)
        if found is not None and found.info.run_id == other:
            looked.set()  # bench run has met the claim
        return found

    monkeypatch.setattr(claims, "holder", watched_holder)

    def other_worker() -> None:  # keeps its claim fresh until met twice, then finishes the cell
        met = 0
        while met < 2:
            client.set_tag(other, keys.TAG_HEARTBEAT, f"{time.time():.3f}")
            if looked.wait(0.2):
                looked.clear()
                met += 1
        tracking.log_metrics(client, other, {keys.GENERATOR_UPDATES: 4.0}, 4)
        tracking.finish(client, other)

    worker = threading.Thread(target=other_worker, daemon=True)
    worker.start()
    args = ["run", str(path), "--tracking-uri", tracking_uri, "--lease", "5"]
    result = CliRunner().invoke(main, [*args, "--checkpoint-dir", str(tmp_path / "ck")])
    worker.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert "vae/seed0: held by worker machine-b/99/x" in result.output
    assert "waiting for 1 cells held by other workers: vae/seed0 (machine-b/99/x)" in result.output
    assert "vae/seed0: finished by another worker" in result.output
    assert "1 skipped, 0 failed" in result.output
    (run,) = runs_by_cell(tracking_uri)[cell.id]  # nothing else ran the cell
    assert run.info.run_id == other and run.info.status == "FINISHED"


def test_a_dead_workers_claim_is_taken_over_after_the_lease(write_suite, tracking_uri, tmp_path):
    """A claim from another machine whose heartbeat stopped: after the lease the cell is trained
    here, and the dead run is ended as KILLED (no checkpoint of it in this folder)."""
    path, cell, client, experiment = a_cell(write_suite, tracking_uri)
    dead = claim_run(client, experiment, cell, "machine-b/99/x", time.time())
    args = ["run", str(path), "--tracking-uri", tracking_uri, "--lease", "1.5"]
    result = CliRunner().invoke(main, [*args, "--checkpoint-dir", str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    assert "waiting for 1 cells held by other workers" in result.output
    assert "taking over 1 cells whose workers stopped: vae/seed0" in result.output
    runs = {r.info.run_id: r for r in runs_by_cell(tracking_uri)[cell.id]}
    assert runs.pop(dead).info.status == "KILLED"
    (finished,) = runs.values()
    assert finished.info.status == "FINISHED"
    assert finished.data.tags[keys.TAG_WORKER] == claims.worker_id()
