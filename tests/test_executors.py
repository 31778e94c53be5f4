"""Executors other than the plain sequential loop: `--parallel K` worker processes on one machine
and Ray tasks (a local Ray instance on the CPU). Both must leave the store exactly as the
sequential executor does: one FINISHED run per cell, intact metrics, histories and weights; and a
cell that fails inside a worker fails alone. A worker process that dies mid-cell costs its cell one
retry (resumed from its checkpoint), then that cell alone fails; a stop signal under --parallel
checkpoints every running cell, and the same command resumes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import models
from bench import keys
from bench.cli import main
from bench.run import checkpoint, parallel
from bench.run.runner import run_suite
from bench.suite.load import load_suite
from tests import faulty_models
from tests.test_reliability import (
    DCGANS,
    VAE,
    VAEGAN,
    assert_same_outcome,
    bench_run,
    outcome,
    runs_by_cell,
    suite_text,
)

REPO = Path(__file__).resolve().parent.parent
FOUR_CELLS = VAE + DCGANS + VAEGAN
PAUSED = ("vae", "vaegan")  # the labels whose cells pausing_worker_main pauses


def lost_workers_suite(marker: Path) -> str:
    """A plain VAE, a VAE whose worker is killed once after step 5 (`marker` records it) and one
    whose worker exits there every time (tests/faulty_models.py); 6 steps with a checkpoint at
    step 4, the budget of the `sequential` reference below."""
    return suite_text(
        VAE
        + f"  - label: dies-once\n    model: {faulty_models.DIES_ONCE}\n"
        + f"    options: {{marker: '{marker}'}}\n"
        + f"  - label: dies\n    model: {faulty_models.DIES}\n",
        steps=6,
    )


def run_lost_workers_suite(folder: Path, *executor_flags: str):
    """`bench run` of lost_workers_suite into a new store in `folder`: (result, uri, marker)."""
    marker = folder / "died-once"
    path = folder / "suite.yaml"
    path.write_text(lost_workers_suite(marker))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return bench_run(path, uri, folder / "checkpoints", *executor_flags), uri, marker


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The reference: the 4-cell suite run by the sequential executor, with the CPU threads of
    each of 2 `--parallel` workers (one on a 2-core machine): float sums split over another
    number of threads round differently."""
    folder = tmp_path_factory.mktemp("sequential")
    path = folder / "suite.yaml"
    path.write_text(suite_text(FOUR_CELLS, steps=6))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    threads = torch.get_num_threads()
    parallel.limit_resources("cpu", workers=2)
    try:
        result = bench_run(path, uri, folder / "checkpoints")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return path, uri


# Every test here that runs cells spawns, signals or kills worker processes, each of which imports
# torch and MLflow afresh (~10 s of 2 cores each; 1-2 min a test): they are marked slow and run in
# CI's second stage (`pytest -m slow`). The default run keeps the option check below, and
# tests/test_claims.py tests in one process the claims that keep workers from training a cell twice.
@pytest.mark.slow
def test_parallel_workers_leave_the_same_intact_store(sequential, tmp_path):
    path, reference_uri = sequential
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # 2 workers, each with the reference's CPU threads
    result = bench_run(path, uri, tmp_path / "checkpoints", "--parallel", "2")
    assert result.exit_code == 0, result.output
    assert "4 cells on 2 processes" in result.output
    assert_same_outcome(uri, reference_uri, tmp_path)
    again = bench_run(path, uri, tmp_path / "checkpoints", "--parallel", "2")
    assert again.exit_code == 0 and "4 skipped" in again.output


@pytest.fixture
def faulty_workers(monkeypatch):
    """The faulty models, known in this process and in the `--parallel` workers it spawns."""
    for name, cls in faulty_models.FAULTY.items():
        monkeypatch.setitem(models.REGISTRY, name, cls)  # as it was again after the test
    monkeypatch.setattr(parallel, "worker_main", faulty_models.worker_main)


def lost(how: str) -> str:
    return f"worker process died ({how}) while running the cell"


@pytest.mark.slow
def test_parallel_lost_worker_is_retried_once_then_its_cell_fails_alone(
    sequential, faulty_workers, tmp_path
):
    """dies-once's worker is killed after step 5: a fresh worker resumes the cell from its step-4
    checkpoint and finishes it, with the numbers of a VAE never killed. dies's worker exits there
    on both attempts: that cell alone fails, and its run is not left RUNNING."""
    _, reference_uri = sequential
    result, uri, marker = run_lost_workers_suite(tmp_path, "--parallel", "2")

    assert result.exit_code == 1, result.output
    out = result.output
    assert "Traceback" not in out
    assert marker.exists()  # the first worker of dies-once did die
    assert f"[2/3] dies-once/seed0: {lost('signal SIGKILL')}; trying it once more" in out
    assert f"[3/3] dies/seed0: {lost('exit 3')}; trying it once more" in out
    assert f"[3/3] dies/seed0: FAILED: {lost('exit 3')}" in out
    assert "suite resume: 2 finished, 0 skipped, 1 failed" in out, out  # the output if not
    summary = out[out.index("suite resume: 2 finished, 0 skipped, 1 failed") :]
    assert f"failed dies/seed0: {lost('exit 3')}" in summary
    assert statuses(uri) == {"vae": ["FINISHED"], "dies-once": ["FINISHED"], "dies": ["FAILED"]}
    runs = runs_by_label(uri)
    assert runs["dies"][0].data.tags[keys.TAG_FAILURE] == lost("exit 3")
    (reference,) = runs_by_label(reference_uri)["vae"]
    for label in ("vae", "dies-once"):  # both run exactly as a VAE left alone
        assert_same_run(uri, runs[label][0], reference_uri, reference, tmp_path / label)


# `bench run` whose --parallel workers pause their vae and vaegan cells after step 5 until they
# are told to stop (tests/faulty_models.py: pause_at)
PAUSING_BENCH = [
    sys.executable,
    "-c",
    "import bench.run.parallel, tests.faulty_models as faulty; "
    "bench.run.parallel.worker_main = faulty.pausing_worker_main; "
    "from bench.cli import main; main()",
]


def wait_for_pauses(folder: Path, count: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while len(list(folder.iterdir())) < count:
        if process.poll() is not None:
            raise AssertionError(f"bench run ended ({process.returncode}): {log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} workers did not pause in 180 s: {log.read_text()}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "whole_group", "exit_code"),
    [
        # Ctrl-C in a terminal: every process of the foreground group gets SIGINT at once
        (signal.SIGINT, True, 130),
        # `kill PID`: only the main process gets it
        (signal.SIGTERM, False, 143),
    ],
    ids=["ctrl-c-to-group", "sigterm-to-main"],
)
def test_stop_signal_under_parallel_checkpoints_the_running_cells_and_resumes_exactly(
    sequential, tmp_path, signum, whole_group, exit_code
):
    """Two workers: one pauses in vae after step 5; the other finishes both DCGANs, then pauses in
    vaegan after step 5, and both wait for the SIGTERM the main process passes on. Each then stops
    at the boundary of step 5 with a checkpoint; the finished cells stay finished, nothing stays
    RUNNING, the exit status is the signal the user sent, and the same command run again resumes
    both runs and ends exactly as the uninterrupted sequential run."""
    path, reference_uri = sequential
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    checkpoints = tmp_path / "checkpoints"
    args = ["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(checkpoints)]
    pauses, log, errors = tmp_path / "pauses", tmp_path / "out.txt", tmp_path / "err.txt"
    pauses.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), faulty_models.PAUSE_DIR: str(pauses)}
    with open(log, "w") as out, open(errors, "w") as err:
        process = subprocess.Popen(
            [*PAUSING_BENCH, *args, "--parallel", "2", "--no-progress"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group, as a job in a shell
            # a terminal's foreground job takes Ctrl-C, even when pytest itself ignores SIGINT
            # (started by nohup or as a background job), which `bench run` would inherit and keep
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            wait_for_pauses(pauses, 2, process, log)
            if whole_group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    out, err = log.read_text(), errors.read_text()
    assert process.returncode == exit_code, out + err
    assert "Traceback" not in out + err
    hint = f'interrupted: rerun "bench run {" ".join(args[1:])} --parallel 2" to resume from step 5'
    assert hint in err, err
    assert "dcgan-bce/seed0: finished" in out and "dcgan-wgan-gp/seed0: finished" in out
    assert statuses(uri) == {
        "vae": ["KILLED"],
        "dcgan-bce": ["FINISHED"],
        "dcgan-wgan-gp": ["FINISHED"],
        "vaegan": ["KILLED"],
    }
    killed = [runs[0] for label, runs in runs_by_label(uri).items() if label in PAUSED]
    for run in killed:
        assert run.data.tags[keys.TAG_FAILURE] == "interrupted by SIGTERM at step 5"
        folder = checkpoint.cell_folder(checkpoints, "resume", run.data.tags[keys.TAG_CELL_ID])
        assert checkpoint.load(folder)["step"] == 5

    again = bench_run(path, uri, checkpoints, "--parallel", "2")
    assert again.exit_code == 0, again.output
    assert "suite resume: 2 finished, 2 skipped, 0 failed" in again.output
    for run in killed:  # the same runs, resumed
        (finished,) = runs_by_cell(uri)[run.data.tags[keys.TAG_CELL_ID]]
        assert finished.info.run_id == run.info.run_id
    assert_same_outcome(uri, reference_uri, tmp_path)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the module; its workers know the faulty models."""
    ray = pytest.importorskip("ray", reason="the Ray executor needs the 'ray' extra")
    faulty_models.register()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={
            "worker_process_setup_hook": "tests.faulty_models.register",
            "env_vars": {"PYTHONPATH": str(REPO)},
        },
    )
    yield ray
    ray.shutdown()
    faulty_models.unregister()


@pytest.mark.slow
def test_ray_executor_leaves_the_same_finished_runs(sequential, local_ray, tmp_path):
    path, reference_uri = sequential
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = bench_run(path, uri, tmp_path / "checkpoints", "--executor", "ray")
    assert result.exit_code == 0, result.output
    assert "4 finished" in result.output
    runs, reference = runs_by_cell(uri), runs_by_cell(reference_uri)
    assert runs.keys() == reference.keys()
    for cell_id, cell_runs in runs.items():
        assert [run.info.status for run in cell_runs] == ["FINISHED"], cell_id
        want = reference[cell_id][0]
        assert_close_run(uri, cell_runs[0], reference_uri, want, tmp_path / cell_id)


def assert_close_run(uri: str, run, reference_uri: str, reference_run, folder: Path) -> None:
    """A run of a Ray task against the reference's run up to rounding: every metric and every
    logged step within rel 1e-4 / abs 1e-4, weights within rtol 1e-4 / atol 1e-6. A Ray worker's
    process differs from this one in its threading setup (Ray sets OMP_NUM_THREADS=1 for a 1-CPU
    task, which also puts NumPy's BLAS on one thread), which rounds float sums differently in the
    last bits (measured: 1e-7 relative on losses; the spread of KID over subsets, ~4e-5 beside a
    KID of 924, is rounding noise). The --parallel tests above compare exactly."""
    got = outcome(uri, run, folder / "got")
    want = outcome(reference_uri, reference_run, folder / "want")
    assert got["metrics"].keys() == want["metrics"].keys()
    for key, history in want["histories"].items():
        if key.endswith("_encoded"):  # ratios of ~4e-9 path lengths here: rounding noise
            continue
        assert [step for step, _ in got["histories"][key]] == [step for step, _ in history]
        values = [value for _, value in history]
        assert [v for _, v in got["histories"][key]] == pytest.approx(values, 1e-4, 1e-4), key
    for name, tensor in want["weights"].items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            torch.testing.assert_close(got["weights"][name], tensor, rtol=1e-4, atol=1e-6)


def assert_same_run(uri: str, run, reference_uri: str, reference_run, folder: Path) -> None:
    """One run against a reference run, exactly: final metrics, every history, the weights."""
    got = outcome(uri, run, folder / "got")
    want = outcome(reference_uri, reference_run, folder / "want")
    assert got["metrics"] == want["metrics"]
    assert got["histories"] == want["histories"]  # every step once, same values
    assert got["weights"].keys() == want["weights"].keys()
    for name, tensor in want["weights"].items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(got["weights"][name], tensor), name


def runs_by_label(uri: str) -> dict[str, list]:
    return {runs[0].data.tags[keys.TAG_LABEL]: runs for runs in runs_by_cell(uri).values()}


def statuses(uri: str) -> dict[str, list[str]]:
    return {label: [run.info.status for run in runs] for label, runs in runs_by_label(uri).items()}


@pytest.mark.slow
def test_ray_cell_that_raises_in_its_worker_fails_alone(local_ray, tmp_path):
    variants = VAE + f"  - label: broken\n    model: {faulty_models.RAISES}\n"
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(variants, steps=4))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_suite(
        load_suite(path),
        tracking_uri=uri,
        progress=False,
        checkpoint_dir=tmp_path / "checkpoints",
        executor="ray",
        echo=lambda line: None,
    )
    assert summary.finished == ["vae/seed0"]
    assert [name for name, _ in summary.failed] == ["broken/seed0"]
    assert faulty_models.MESSAGE in summary.failed[0][1]
    assert statuses(uri) == {"vae": ["FINISHED"], "broken": ["FAILED"]}


@pytest.mark.slow
def test_ray_lost_worker_is_retried_once_then_its_cell_fails_alone(sequential, local_ray, tmp_path):
    """Ray retries a task whose worker process died (max_retries=1): dies-once resumes from its
    step-4 checkpoint and finishes with a VAE's numbers; dies is lost twice and fails alone, its
    run not left RUNNING."""
    _, reference_uri = sequential
    result, uri, marker = run_lost_workers_suite(tmp_path, "--executor", "ray")

    assert result.exit_code == 1, result.output
    out = result.output
    assert marker.exists()  # the first worker of dies-once did die
    assert "[3/3] dies/seed0: FAILED: Ray task failed: WorkerCrashedError" in out
    assert "suite resume: 2 finished, 0 skipped, 1 failed" in out, out  # the output if not
    summary = out[out.index("suite resume: 2 finished, 0 skipped, 1 failed") :]
    assert "failed dies/seed0: Ray task failed: WorkerCrashedError" in summary
    assert statuses(uri) == {"vae": ["FINISHED"], "dies-once": ["FINISHED"], "dies": ["FAILED"]}
    runs = runs_by_label(uri)
    assert "WorkerCrashedError" in runs["dies"][0].data.tags[keys.TAG_FAILURE]
    (reference,) = runs_by_label(reference_uri)["vae"]
    for label in ("vae", "dies-once"):
        assert_close_run(uri, runs[label][0], reference_uri, reference, tmp_path / label)


def test_ray_options_are_checked(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text())
    result = CliRunner().invoke(main, ["run", str(path), "--address", "ray://nowhere:10001"])
    assert result.exit_code == 2 and "--executor ray" in result.output
