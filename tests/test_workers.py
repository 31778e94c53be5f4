"""Many workers, one tracking server: independent `bench run` processes of one suite against a real
`mlflow server` on the loopback (as a SLURM job array would run them) train every cell once, also
when one worker's clock runs behind, take over a killed worker's cell after its lease, leave a
worker that was paused past its lease to stop without writing, and make a search's choice as one
worker would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench import keys
from bench.tracking.store import experiment_id
from tests.local_web import free_port, wait_until_serving

BENCH = [sys.executable, "-c", "from bench.cli import main; main()", "run"]
# a worker on a machine whose clock runs 90 s behind: MLflow's client stamps start times with it
BEHIND = [
    sys.executable, "-c",
    "import time; wall, wall_ns = time.time, time.time_ns; time.time = lambda: wall() - 90; "
    "time.time_ns = lambda: wall_ns() - 90 * 10**9; from bench.cli import main; main()",
    "run",
]  # fmt: skip

SUITE = """
name: {name}
dataset: {{name: synthetic, train_limit: 64, eval_limit: 32}}
budget: {{steps: {steps}, batch_size: 16, latent_dim: 8, width: 8, n_critic: 2, log_every: 10,
          checkpoint_every: {checkpoint_every}}}
seeds: {seeds}
evaluation: {{num_samples: 32, batch_size: 16, calibration_samples: 64, grid_size: 16,
             feature_extractors: [domain]}}
models:
{models}
{search}
"""
MODELS = """  - {label: vae, model: vae}
  - {label: dcgan-bce, model: dcgan, options: {loss: bce}}
"""
VAE = "  - {label: vae, model: vae}\n"
SEARCH = """search:
  trials: 3
  budget: {steps: 3}
  seed: 0
  select: fid_domain
  seeds_of_best: 2
  space: {lr_g: {loguniform: [1.0e-4, 1.0e-2]}, lr_d: {loguniform: [1.0e-4, 1.0e-2]}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server on the loopback, with its own SQLite store."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    log = folder / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
        "--default-artifact-root", (folder / "artifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    environment = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with log.open("w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process, log)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def write(folder: Path, name: str, steps=4, seeds="[0, 1, 2]", search="", checkpoint_every=500,
          models=MODELS) -> Path:  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(
        SUITE.format(name=name, steps=steps, seeds=seeds, search=search, models=models,
                     checkpoint_every=checkpoint_every)
    )  # fmt: skip
    return path


def start(path: Path, uri: str, checkpoints: Path, log: Path, *extra: str, host: str | None = None,
          command=BENCH):  # fmt: skip
    environment = dict(os.environ)
    if host is not None:
        environment["BENCH_WORKER_HOST"] = host  # as if the worker ran on another machine
    with log.open("w") as output:
        return subprocess.Popen(
            [*command, str(path), "--tracking-uri", uri, "--checkpoint-dir", str(checkpoints),
             "--no-progress", *extra],
            stdout=output, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
        )  # fmt: skip


def finish(workers: list[tuple[subprocess.Popen, Path]], timeout: float = 600) -> list[str]:
    outputs = []
    for process, log in workers:
        process.wait(timeout=timeout)
        outputs.append(log.read_text())
        assert process.returncode == 0, outputs[-1][-4000:]
    return outputs


def cell_runs(uri: str, suite: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite).experiment_id
    runs = client.search_runs([experiment], max_results=5000)  # active runs: withdrawn are deleted
    return [run for run in runs if keys.TAG_CELL_ID in run.data.tags]


def by_cell(runs: list) -> dict[str, list]:
    found: dict[str, list] = {}
    for run in runs:
        found.setdefault(run.data.tags[keys.TAG_CELL_ID], []).append(run)
    return found


def test_workers_creating_the_suite_experiment_at_once_both_get_it(tmp_path, monkeypatch):
    """Two workers started together both find no experiment, then both create it: the loser of
    the race (RESOURCE_ALREADY_EXISTS) takes the winner's experiment instead of failing."""
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    ours, theirs = MlflowClient(uri), MlflowClient(uri)
    look = ours.get_experiment_by_name

    def look_then_lose_the_race(name):
        found = look(name)
        if found is None:  # the other worker creates it between our look and our create
            experiment_id(theirs, name)
        return found

    monkeypatch.setattr(ours, "get_experiment_by_name", look_then_lose_the_race)
    made = experiment_id(ours, "suite")
    assert made == theirs.get_experiment_by_name("suite").experiment_id
    assert len(theirs.search_experiments(filter_string="name = 'suite'")) == 1


@pytest.mark.slow  # 3 worker processes and a server: ~60 s on 2 cores
def test_three_workers_train_every_cell_exactly_once(server, tmp_path):
    path = write(tmp_path, "workers3")
    workers = [
        start(path, server, tmp_path / "ck", tmp_path / f"w{i}.log") for i in range(3)
    ]  # fmt: skip
    outputs = finish(list(zip(workers, [tmp_path / f"w{i}.log" for i in range(3)], strict=True)))
    runs = cell_runs(server, "workers3")
    cells = by_cell(runs)
    assert len(cells) == 6  # 2 variants x 3 seeds
    assert all([r.info.status for r in rs] == ["FINISHED"] for rs in cells.values()), cells
    updates = sum(run.data.metrics[keys.GENERATOR_UPDATES] for run in runs)
    assert updates == 6 * 4  # cells x steps: no training was done twice
    trained = sum(out.count(": finished\n") for out in outputs)
    assert trained == 6  # each cell's "finished" line in exactly one worker's output
    assert all("0 failed" in out for out in outputs)


@pytest.mark.slow  # 2 worker processes and a server: ~1-3 min on 2 cores
def test_a_worker_whose_clock_runs_90_s_behind_trains_no_cell_twice(server, tmp_path):
    """Neither liveness nor the election compares clocks: the worker behind stamps its claims 90 s
    earlier (older than any of the other's) and its heartbeats 90 s late, far beyond the lease."""
    path = write(tmp_path, "skewed", steps=30)  # cells long enough for both workers to train
    logs = [tmp_path / "on-time.log", tmp_path / "behind.log"]
    workers = [
        start(path, server, tmp_path / "ck", logs[0], "--lease", "30", host="machine-a"),
        start(path, server, tmp_path / "ck", logs[1], "--lease", "30", host="machine-b",
              command=BEHIND),
    ]  # fmt: skip
    outputs = finish(list(zip(workers, logs, strict=True)))
    runs = cell_runs(server, "skewed")
    cells = by_cell(runs)
    assert len(cells) == 6
    assert all([r.info.status for r in rs] == ["FINISHED"] for rs in cells.values()), cells
    assert sum(run.data.metrics[keys.GENERATOR_UPDATES] for run in runs) == 6 * 30
    assert sum(out.count(": finished\n") for out in outputs) == 6
    hosts = {run.data.tags[keys.TAG_WORKER].split("/")[0] for run in runs}
    assert hosts == {"machine-a", "machine-b"}  # both trained cells: the skew was in play


# The lease must outlast the second worker's start (imports, data, its first look at the claims):
# at 25 s a loaded CI machine once took longer, and the second worker found the claim already dead.
LEASE = "60"


@pytest.mark.slow  # two workers one after the other, the first killed: ~100 s on 2 cores
def test_a_killed_workers_cell_is_taken_over_after_its_lease(server, tmp_path):
    path = write(tmp_path, "takeover", steps=1500, seeds="[0]", checkpoint_every=50,
                 models="  - {label: vae, model: vae}\n")  # fmt: skip
    checkpoints = tmp_path / "ck"  # shared by both workers, as on a shared file system
    first = start(path, server, checkpoints, tmp_path / "a.log", "--lease", LEASE, host="machine-a")
    deadline = time.monotonic() + 240
    while not list(checkpoints.rglob("checkpoint.pt")):
        assert first.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the first worker wrote no checkpoint"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # mid-cell: its claim's heartbeat stops
    first.wait()
    (killed,) = cell_runs(server, "takeover")
    assert killed.info.status == "RUNNING"
    second = start(
        path, server, checkpoints, tmp_path / "b.log", "--lease", LEASE, host="machine-b"
    )
    (output,) = finish([(second, tmp_path / "b.log")])
    assert "waiting for 1 cells held by other workers: vae/seed0 (machine-a/" in output
    assert "taking over 1 cells whose workers stopped: vae/seed0" in output
    assert f"resuming run {killed.info.run_id} from step" in output
    (run,) = cell_runs(server, "takeover")  # the same run, resumed: one run for the cell
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.metrics[keys.GENERATOR_UPDATES] == 1500
    assert run.data.tags[keys.TAG_WORKER].startswith("machine-b/")


@pytest.mark.slow  # two workers one after the other, the first paused then continued: ~2 min
def test_a_worker_paused_past_its_lease_stops_without_writing(server, tmp_path):
    """Worker A is stopped (SIGSTOP) mid-cell; B watches A's claim stay silent for the lease and
    resumes A's run from A's checkpoint. Continued, A finds out at its next step boundary (its
    monotonic clock ran on while it was stopped) and writes nothing more: every step is logged
    once, and the run finishes once, by B."""
    path = write(tmp_path, "paused", steps=400, seeds="[0]", checkpoint_every=50, models=VAE)
    checkpoints = tmp_path / "ck"  # shared by both workers, as on a shared file system
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = start(path, server, checkpoints, logs[0], "--lease", "20", host="machine-a")
    deadline = time.monotonic() + 240
    while not list(checkpoints.rglob("checkpoint.pt")):
        assert first.poll() is None, logs[0].read_text()[-3000:]
        assert time.monotonic() < deadline, "the first worker wrote no checkpoint"
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        (paused,) = cell_runs(server, "paused")
        second = start(path, server, checkpoints, logs[1], "--lease", "20", host="machine-b")
        while f"resuming run {paused.info.run_id}" not in logs[1].read_text():
            assert second.poll() is None, logs[1].read_text()[-3000:]
            assert time.monotonic() < deadline + 240, "the second worker took nothing over"
            time.sleep(0.1)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    first_output, second_output = finish([(first, logs[0]), (second, logs[1])])
    assert "vae/seed0: lost its claim on cell vae/seed0" in first_output
    assert "; stopping without writing" in first_output
    assert "vae/seed0: finished\n" not in first_output
    (run,) = cell_runs(server, "paused")
    assert run.info.run_id == paused.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags[keys.TAG_WORKER].startswith("machine-b/")
    assert run.data.metrics[keys.GENERATOR_UPDATES] == 400
    client = MlflowClient(server)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, keys.train_key("loss"))]
    assert sorted(steps) == list(range(10, 401, 10))  # each once: A logged nothing after


@pytest.mark.slow  # one worker, then two at once, on a 10-cell search: ~90 s on 2 cores
def test_a_search_split_across_two_workers_makes_the_choice_of_one(server, tmp_path):
    path = write(tmp_path, "search2", search=SEARCH)
    alone = f"sqlite:///{tmp_path / 'alone.db'}"
    finish([(start(path, alone, tmp_path / "ck-alone", tmp_path / "alone.log"),
             tmp_path / "alone.log")])  # fmt: skip
    logs = [tmp_path / f"s{i}.log" for i in range(2)]
    finish([(start(path, server, tmp_path / "ck", log), log) for log in logs])

    def outcome(uri: str) -> tuple[dict, set]:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("search2").experiment_id
        runs = client.search_runs([experiment], max_results=5000)
        parents = [r for r in runs if r.data.tags.get(keys.TAG_STAGE) == keys.STAGE_SEARCH]
        choice = {r.data.tags[keys.TAG_LABEL]: r.data.tags[keys.TAG_BEST_TRIAL] for r in parents}
        assert len(parents) == len(choice)  # one parent run per variant
        finals = {
            r.data.tags[keys.TAG_CELL_ID]
            for r in runs
            if r.data.tags.get(keys.TAG_STAGE) == keys.STAGE_FINAL
        }
        cells = by_cell([r for r in runs if keys.TAG_CELL_ID in r.data.tags])
        assert all([r.info.status for r in rs] == ["FINISHED"] for rs in cells.values())
        return choice, finals

    assert outcome(server) == outcome(alone)
