"""Executors other than the plain sequential loop: `--parallel K` worker processes on one machine
and Ray tasks (a local Ray instance on the CPU). Both must leave the store exactly as the
sequential executor does: one FINISHED run per cell, intact metrics, histories and weights; and a
cell that fails inside a worker fails alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bench import keys
from bench.cli import main
from bench.runner import run_suite
from bench.suite import load_suite
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


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The reference: the 4-cell suite run by the sequential executor, with one CPU thread like
    each worker below (float sums split over another number of threads round differently)."""
    folder = tmp_path_factory.mktemp("sequential")
    path = folder / "suite.yaml"
    path.write_text(suite_text(FOUR_CELLS, steps=6))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = bench_run(path, uri, folder / "checkpoints")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return path, uri


def test_parallel_workers_leave_the_same_intact_store(sequential, tmp_path):
    path, reference_uri = sequential
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # 2 workers on this 2-core machine: one thread each, as the reference
    result = bench_run(path, uri, tmp_path / "checkpoints", "--parallel", "2")
    assert result.exit_code == 0, result.output
    assert "4 cells on 2 processes" in result.output
    assert_same_outcome(uri, reference_uri, tmp_path)
    again = bench_run(path, uri, tmp_path / "checkpoints", "--parallel", "2")
    assert again.exit_code == 0 and "4 skipped" in again.output


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


def test_ray_executor_leaves_the_same_finished_runs(sequential, local_ray, tmp_path):
    path, reference_uri = sequential
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = bench_run(path, uri, tmp_path / "checkpoints", "--executor", "ray")
    assert result.exit_code == 0, result.output
    assert "4 finished" in result.output
    assert_same_training_close_metrics(uri, reference_uri, tmp_path)


def assert_same_training_close_metrics(uri: str, reference_uri: str, tmp_path: Path) -> None:
    """The reference's runs up to rounding: every metric and every logged step within rel 1e-4 /
    abs 1e-4, weights within rtol 1e-4 / atol 1e-6. A Ray worker's process differs from this one
    in its threading setup (Ray sets OMP_NUM_THREADS=1 for a 1-CPU task, which also puts NumPy's
    BLAS on one thread), which rounds float sums differently in the last bits (measured: 1e-7
    relative on losses; the spread of KID over subsets, ~4e-5 beside a KID of 924, is rounding
    noise). The --parallel test
    above compares exactly."""
    runs, reference = runs_by_cell(uri), runs_by_cell(reference_uri)
    assert runs.keys() == reference.keys()
    for cell_id, cell_runs in runs.items():
        assert [run.info.status for run in cell_runs] == ["FINISHED"], cell_id
        got = outcome(uri, cell_runs[0], tmp_path / "got" / cell_id)
        want = outcome(reference_uri, reference[cell_id][0], tmp_path / "want" / cell_id)
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
    statuses = {
        runs[0].data.tags[keys.TAG_LABEL]: runs[0].info.status
        for runs in runs_by_cell(uri).values()
    }
    assert statuses == {"vae": "FINISHED", "broken": "FAILED"}


def test_ray_options_are_checked(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text())
    result = CliRunner().invoke(main, ["run", str(path), "--address", "ray://nowhere:10001"])
    assert result.exit_code == 2 and "--executor ray" in result.output
