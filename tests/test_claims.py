"""Claims on cells in the tracking store (bench/tracking/claims.py), on a real SQLite store: when a
claim is live (on the reader's own clock), who holds a cell when workers' clocks disagree, a holder
that finds out it lost its claim, and a `bench run` that meets another worker's live claim."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import models
from bench import keys, tracking
from bench.cli import main
from bench.run.cell import HeldElsewhere, claim_cell
from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.tracking import claims, worker_identity
from tests.test_reliability import VAE, runs_by_cell, suite_text

LEASE = claims.Lease(seconds=30, settle=0.0)
HOST = worker_identity.host()  # this machine, as worker ids name it


def claim_run(client, experiment, cell, worker: str, beat: str = "1 0", **tags) -> str:
    """A claim as another worker would leave it: its worker id, a heartbeat and `tags`."""
    tags = {keys.TAG_WORKER: worker, keys.TAG_HEARTBEAT: beat, **tags}
    return tracking.create_cell_run(client, experiment, cell, tags)


def a_cell(write_suite, tracking_uri):
    path = write_suite(suite_text(VAE, steps=4, log_every=2, checkpoint_every=4))
    (cell,) = expand(load_suite(path))
    client = MlflowClient(tracking_uri)
    return path, cell, client, tracking.experiment_id(client, cell.suite)


def by_id(client, experiment, cell) -> dict:
    return {r.info.run_id: r for r in tracking.running_runs(client, experiment, cell.id)}


def a_worker(client, experiment, lease=LEASE):
    """What claim_cell reads of a SuiteContext: one worker's view of the store."""
    evaluator = SimpleNamespace(inception_skip_reason=None)
    return SimpleNamespace(
        client=client, experiment=experiment, lease=lease, tags={}, evaluator=evaluator, rerun=False
    )


def test_a_claim_lives_while_its_beat_changes_on_the_readers_own_clock(write_suite, tracking_uri):
    """No wall clock is compared: a heartbeat stamped a minute ago (or ahead) is live when first
    seen, and dies only once this reader has seen it unchanged for the lease."""
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    behind = claim_run(client, experiment, cell, "machine-a/11/x", f"7 {time.time() - 60:.3f}")
    ahead = claim_run(client, experiment, cell, "machine-b/12/x", f"7 {time.time() + 60:.3f}")
    start = time.monotonic()
    runs = by_id(client, experiment, cell)
    assert all(claims.is_live(run, LEASE, now=start) for run in runs.values())  # first seen
    later = start + LEASE.seconds - 0.1
    assert all(claims.is_live(run, LEASE, now=later) for run in runs.values())
    client.set_tag(ahead, keys.TAG_HEARTBEAT, f"8 {time.time() + 60:.3f}")  # it beats once more
    runs = by_id(client, experiment, cell)
    assert claims.is_live(runs[ahead], LEASE, now=later)  # a change restarts the reader's timer
    expired = start + LEASE.seconds + 0.1
    assert not claims.is_live(runs[behind], LEASE, now=expired)  # unchanged for the lease: dead
    assert claims.is_live(runs[ahead], LEASE, now=expired)


def test_a_held_claim_is_named_before_candidates_and_an_ended_one_holds_nothing(
    write_suite, tracking_uri
):
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    candidate = claim_run(
        client, experiment, cell, "machine-a/11/x", **{keys.TAG_CLAIM: keys.CLAIM_CANDIDATE}
    )
    time.sleep(0.01)
    held = claim_run(client, experiment, cell, "machine-b/12/x", **{keys.TAG_CLAIM: "held"})
    runs = list(by_id(client, experiment, cell).values())
    assert claims.holder(runs, LEASE).info.run_id == held  # though the candidate is older
    claims.withdraw(client, candidate)
    assert list(by_id(client, experiment, cell)) == [held]  # withdrawn: deleted, not a run
    tracking.finish(client, held)
    assert claims.holder(list(by_id(client, experiment, cell).values()), LEASE) is None


def test_a_claim_of_a_dead_process_on_this_machine_is_dead_at_once(write_suite, tracking_uri):
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    here = {keys.TAG_WORKER_PID_SPACE: worker_identity.pid_space()}
    dead = claim_run(client, experiment, cell, f"{HOST}/{gone}/x", **here)
    alive = claim_run(client, experiment, cell, f"{HOST}/{os.getppid()}/x", **here)
    legacy = client.create_run(experiment, tags={keys.TAG_CELL_ID: cell.id}).info.run_id
    runs = by_id(client, experiment, cell)
    assert worker_identity.pid_space()  # this machine has /proc: the test means something
    assert not claims.is_live(runs[dead], LEASE)  # its process is gone: no need to wait
    assert claims.is_live(runs[alive], LEASE)
    assert not claims.is_live(runs[legacy], LEASE)  # RUNNING without a heartbeat: no claim


def test_a_claim_of_a_process_that_exited_but_is_not_reaped_yet_is_dead_at_once(
    write_suite, tracking_uri
):
    """A worker that died is a zombie until its parent reaps it, and kill(pid, 0) still answers
    for it: a Ray worker that os._exit()ed waits for the raylet so, and the driver that ended its
    cell's run as failed left it RUNNING (the slow CI failure of 99c951d)."""
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    child = subprocess.Popen([sys.executable, "-c", "import os; os._exit(3)"])
    try:
        deadline = time.monotonic() + 60
        while "Z" not in open(f"/proc/{child.pid}/stat").read().rpartition(")")[2].split()[:1]:
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.05)
        here = {keys.TAG_WORKER_PID_SPACE: worker_identity.pid_space()}
        zombie = claim_run(client, experiment, cell, f"{HOST}/{child.pid}/x", **here)
        os.kill(child.pid, 0)  # no error: to kill(), the pid still exists
        assert not claims.is_live(by_id(client, experiment, cell)[zombie], LEASE)
    finally:
        child.wait()


def test_a_claim_from_another_pid_namespace_with_this_host_name_is_not_dead_at_once(
    write_suite, tracking_uri
):
    """Containers sharing the host name (docker --network host) each number their processes: a
    pid that does not exist here may be a live worker there. Its claim waits out the lease."""
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    worker = f"{HOST}/{gone}/x"
    boot = worker_identity.pid_space().partition("/")[0]
    container = {keys.TAG_WORKER_PID_SPACE: f"{boot}/pid:[4026599999]"}
    other_namespace = claim_run(client, experiment, cell, worker, **container)
    unknown = claim_run(client, experiment, cell, worker)  # a machine whose /proc lacks the ids
    runs = by_id(client, experiment, cell)
    assert claims.is_live(runs[other_namespace], LEASE)
    assert claims.is_live(runs[unknown], LEASE)
    assert not claims.is_live(runs[other_namespace], LEASE, now=time.monotonic() + 31)


def test_a_later_claim_stamped_earlier_by_a_slow_clock_withdraws_from_a_held_one(
    write_suite, tracking_uri
):
    """The interleaving that gave two holders when the oldest claim won: A claims and holds; B,
    whose clock runs 3 s behind, looked before A's claim existed and creates its own claim only
    after A decided, stamped earlier than A's. B must withdraw; A keeps the cell."""
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    lease = claims.Lease(seconds=30, settle=0.05)

    class ClockBehindWithAnOldLook(MlflowClient):
        created: list[str] = []
        looks = 0

        def create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
            behind = int(time.time() * 1000) - 3000
            run = super().create_run(experiment_id, behind, tags, run_name)
            self.created.append(run.info.run_id)
            return run

        def search_runs(self, *args, **kwargs):
            self.looks += 1  # its first look at the cell came before A's claim existed
            return [] if self.looks == 1 else super().search_runs(*args, **kwargs)

    a = claim_cell(cell, a_worker(client, experiment, lease))
    b_client = ClockBehindWithAnOldLook(tracking_uri)
    with pytest.raises(HeldElsewhere, match="held by worker"):
        claim_cell(cell, a_worker(b_client, experiment, lease))
    (b,) = b_client.created
    assert client.get_run(b).info.start_time < client.get_run(a.run_id).info.start_time
    assert client.get_run(b).info.lifecycle_stage == "deleted"  # withdrawn
    (holder,) = tracking.running_runs(client, experiment, cell.id)
    assert holder.info.run_id == a.run_id and tracking.is_held(holder)


def test_workers_whose_candidates_all_withdrew_elect_again(write_suite, tracking_uri, monkeypatch):
    """A symmetric race: after marking its claim held, a worker sees another held claim and
    withdraws, and so does the other. It tries again after a random pause and holds the cell."""
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    listed = tracking.running_runs
    rivals: list[str] = []

    def racing(*args):
        runs = listed(*args)
        if not rivals and any(tracking.is_held(run) for run in runs):  # our mark, then the check
            rivals.append(claim_run(client, experiment, cell, "machine-b/12/x"))  # marked too
            return listed(*args)
        return runs

    def pause(lease):
        claims.withdraw(client, rivals[0])  # meanwhile the rival withdrew as well

    monkeypatch.setattr(tracking, "running_runs", racing)
    monkeypatch.setattr(claims, "retry_pause", pause)
    claim = claim_cell(cell, a_worker(client, experiment))
    assert len(rivals) == 1  # one election lost in the race, the next one won
    (holder,) = listed(client, experiment, cell.id)
    assert holder.info.run_id == claim.run_id and tracking.is_held(holder)


def test_two_workers_claiming_a_cell_at_once_hold_it_once(write_suite, tracking_uri):
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    lease = claims.Lease(seconds=30, settle=0.1)
    for _ in range(3):
        outcomes: list[object] = []

        def worker(outcomes=outcomes):
            context = a_worker(MlflowClient(tracking_uri), experiment, lease)
            try:
                outcomes.append(claim_cell(cell, context))
            except HeldElsewhere as err:
                outcomes.append(err)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        holders = [o for o in outcomes if isinstance(o, claims.Claim)]
        assert len(holders) == 1, outcomes
        claims.withdraw(client, holders[0].run_id)  # the next round starts from no claim


def a_held_claim(client, experiment, cell, lease) -> claims.Claim:
    claim = claims.new_claim(
        client, lease, lambda tags: tracking.create_cell_run(client, experiment, cell, tags)
    )
    assert claim.elect(lambda: tracking.running_runs(client, experiment, cell.id)).held
    return claim


def test_a_heartbeat_keeps_renewing_the_claim(write_suite, tracking_uri):
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    claim = a_held_claim(client, experiment, cell, claims.Lease(seconds=1.2, settle=0))
    with claim:
        time.sleep(0.8)
        beat = client.get_run(claim.run_id).data.tags[keys.TAG_HEARTBEAT]
        claim.check()  # still ours
    assert int(beat.split()[0]) >= 4  # created at 1, marked held at 2, beaten every 0.2 s


def test_a_holder_finds_out_that_another_worker_took_its_run_over(write_suite, tracking_uri):
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    lease = claims.Lease(seconds=1.2, settle=0)
    claim = a_held_claim(client, experiment, cell, lease)
    with claim:
        client.set_tag(claim.run_id, keys.TAG_WORKER, "machine-b/12/x")  # as take_over does
        time.sleep(0.5)  # a few beats
        with pytest.raises(claims.ClaimLost, match="to worker machine-b/12/x") as lost:
            claim.check()
    assert lost.value.worker == "machine-b/12/x"
    beat = client.get_run(claim.run_id).data.tags[keys.TAG_HEARTBEAT]
    time.sleep(0.5)
    assert client.get_run(claim.run_id).data.tags[keys.TAG_HEARTBEAT] == beat  # no more beats


def test_a_holder_whose_beats_do_not_reach_the_store_fences_itself_within_half_the_lease(
    write_suite, tracking_uri, monkeypatch
):
    """The store stops answering (a server in MLflow's retry loop): the holder stops at half the
    lease on its own clock, before any other worker may take the cell over (a whole lease)."""
    _, cell, client, experiment = a_cell(write_suite, tracking_uri)
    lease = claims.Lease(seconds=1.2, settle=0)
    claim = a_held_claim(client, experiment, cell, lease)
    stuck = threading.Event()
    monkeypatch.setattr(claim, "_read", lambda run_id: stuck.wait(5))  # a request that hangs
    with claim:
        claim.check()  # its election's mark was a beat
        time.sleep(0.7)
        with pytest.raises(claims.ClaimLost, match="without a heartbeat reaching the store"):
            claim.check()
        stuck.set()


class Unanswering(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server interface
        time.sleep(30)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_heartbeat_requests_to_a_server_give_up_in_seconds_not_minutes():
    """MLflow's default retries take about four minutes; a beat must end well within the fence."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unanswering)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = MlflowClient(f"http://127.0.0.1:{server.server_address[1]}")
        lease = claims.Lease(seconds=8, settle=0)  # a 1 s timeout per request
        claim = claims.Claim(client, lease, "0" * 32, time.monotonic())
        started = time.monotonic()
        claim.beat()
        assert time.monotonic() - started < lease.fence
        assert claim.lost is None and claim.count == 1  # nothing written, nothing decided
    finally:
        server.shutdown()


def test_a_run_meeting_a_live_claim_waits_and_trains_nothing_that_another_worker_did(
    write_suite, tracking_uri, tmp_path, monkeypatch
):
    """Another worker (another machine) holds the only cell and finishes it while `bench run`
    waits: it says what it waits for, and ends with the cell skipped, trained once in all."""
    path, cell, client, experiment = a_cell(write_suite, tracking_uri)
    other = claim_run(client, experiment, cell, "machine-b/99/x")
    looked = threading.Event()
    holder = claims.holder

    def watched_holder(*args, **kwargs):
        found = holder(*args, **kwargs)
        if found is not None and found.info.run_id == other:
            looked.set()  # bench run has met the claim
        return found

    monkeypatch.setattr(claims, "holder", watched_holder)

    def other_worker() -> None:  # keeps its claim beating until met twice, then finishes the cell
        met = 0
        while met < 2:
            client.set_tag(other, keys.TAG_HEARTBEAT, f"{time.monotonic_ns()} {time.time():.3f}")
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
    """A claim from another machine whose heartbeat never changes: once this worker has watched
    it for the lease, the cell is trained here, and the dead run is ended as KILLED (no checkpoint
    of it in this folder)."""
    path, cell, client, experiment = a_cell(write_suite, tracking_uri)
    dead = claim_run(client, experiment, cell, "machine-b/99/x")
    args = ["run", str(path), "--tracking-uri", tracking_uri, "--lease", "1.5"]
    result = CliRunner().invoke(main, [*args, "--checkpoint-dir", str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    assert "waiting for 1 cells held by other workers" in result.output
    assert "taking over 1 cells whose workers stopped: vae/seed0" in result.output
    runs = {r.info.run_id: r for r in runs_by_cell(tracking_uri)[cell.id]}
    assert runs.pop(dead).info.status == "KILLED"
    (finished,) = runs.values()
    assert finished.info.status == "FINISHED"
    assert finished.data.tags[keys.TAG_WORKER] == worker_identity.worker_id()


def test_a_worker_that_lost_its_claim_mid_training_stops_without_writing(
    write_suite, tracking_uri, tmp_path, monkeypatch
):
    """At step 5 another worker takes the run over (its worker tag changes): this one stops at the
    step boundary without a checkpoint or a status, waits for the new holder, and once that one
    goes silent for the lease, resumes the run from the step-4 checkpoint: each step logged once."""
    path = write_suite(suite_text(VAE, steps=12, log_every=1, checkpoint_every=4))
    (cell,) = expand(load_suite(path))
    cls = models.model_class("vae")
    original = cls.train_step
    taken: list[str] = []

    def taken_over_at_step_5(self, x):
        losses = original(self, x)
        if self.num_steps == 5 and not taken:
            (run,) = tracking.running_runs(MlflowClient(tracking_uri), *experiment_and(cell))
            MlflowClient(tracking_uri).set_tag(run.info.run_id, keys.TAG_WORKER, "machine-z/1/x")
            taken.append(run.info.run_id)
            time.sleep(1.0)  # a few beats read the run back
        return losses

    def experiment_and(cell):
        return tracking.experiment_id(MlflowClient(tracking_uri), cell.suite), cell.id

    monkeypatch.setattr(cls, "train_step", taken_over_at_step_5)
    args = ["run", str(path), "--tracking-uri", tracking_uri, "--lease", "2", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--checkpoint-dir", str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    assert (
        "vae/seed0: lost its claim on cell vae/seed0 to worker machine-z/1/x; "
        "stopping without writing"
    ) in result.output
    assert f"resuming run {taken[0]} from step 4" in result.output  # not 5: no checkpoint then
    (run,) = runs_by_cell(tracking_uri)[cell.id]
    assert run.info.run_id == taken[0] and run.info.status == "FINISHED"
    history = MlflowClient(tracking_uri).get_metric_history(run.info.run_id, keys.train_key("loss"))
    assert sorted(m.step for m in history) == list(range(1, 13))  # step 5 on: once, after resuming
