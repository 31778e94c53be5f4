"""Many workers, one tracking server: independent `bench run` processes of one suite against a real
`mlflow server` on the loopback (as a SLURM job array would run them) train every cell once, take
over a killed worker's cell after its lease, and make a search's choice as one worker would."""

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
from tests.test_ui import free_port, wait_until_serving

BENCH = [sys.executable, "-c", "from bench.cli import main; main()", "run"]

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


def start(path: Path, uri: str, checkpoints: Path, log: Path, *extra: str, host: str | None = None):
    environment = dict(os.environ)
    if host is not None:
        environment["BENCH_WORKER_HOST"] = host  # as if the worker ran on another machine
    with log.open("w") as output:
        return subprocess.Popen(
            [*BENCH, str(path), "--tracking-uri", uri, "--checkpoint-dir", str(checkpoints),
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
