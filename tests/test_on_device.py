"""The harness end to end on pytest's --device (default cpu; `pytest -m device --device cuda` on a
lent GPU, benchmarks/gpu_run.py's stages 2 and 3): a suite trains and evaluates there (fused Adam,
the uint8 split and the evaluation batches on the device), --parallel workers share it under their
memory cap, and a cell killed mid-way resumes from a checkpoint that carries the device's random
state.

Resumed vs uninterrupted: on the CPU the same numbers exactly (tests/test_reliability.py proves
it for every metric and weight). On CUDA some kernels (cuDNN's convolution backward, atomics in
reductions) are not bit-deterministic, and training amplifies the last bits step by step, so the
final losses and metrics are compared within RESUME_TOLERANCE of max(1, |uninterrupted|).
"""

from __future__ import annotations

import math
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench import keys
from bench.cli import main
from bench.suite.expand import expand
from bench.suite.load import load_suite
from tests.device import chosen_device
from tests.test_reliability import BENCH, VAE, VAEGAN, runs_by_cell, suite_text, wait_for

pytestmark = pytest.mark.device
DEVICE = chosen_device()
RESUME_TOLERANCE = 0.1  # CUDA only; exact on the CPU
TIMINGS = {keys.TRAIN_SECONDS, keys.TRAIN_IMAGES_PER_S, keys.CELL_SECONDS, keys.EVAL_SECONDS}


def run_on_device(path: Path, uri: str, checkpoints: Path, *extra: str):
    args = ["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(checkpoints)]
    return CliRunner().invoke(main, [*args, "--device", str(DEVICE), "--no-progress", *extra])


def final_values(uri: str) -> dict[str, dict[str, float]]:
    """Per cell: its one FINISHED run's metrics, timings left out."""
    found = {}
    for cell_id, runs in runs_by_cell(uri).items():
        assert [run.info.status for run in runs] == ["FINISHED"], cell_id
        metrics = runs[0].data.metrics
        found[cell_id] = {k: v for k, v in metrics.items() if k not in TIMINGS}
    return found


def test_a_suite_trains_and_evaluates_on_the_device(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE + VAEGAN, steps=6, log_every=2, checkpoint_every=4))
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    result = run_on_device(path, uri, tmp_path / "ck")
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    for cell_id, runs in runs_by_cell(uri).items():
        (run,) = runs
        assert run.info.status == "FINISHED", cell_id
        assert run.data.tags[keys.TAG_DEVICE].startswith(DEVICE.type)
        assert run.data.metrics[keys.GENERATOR_UPDATES] == 6
        assert math.isfinite(run.data.metrics[keys.fid_key("domain")])
        assert math.isfinite(run.data.metrics[keys.RECON_MSE])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert keys.ARTIFACT_CHECKPOINT_DIR in artifacts


@pytest.mark.slow  # two worker processes: ~40 s on 2 CPU cores
def test_parallel_workers_share_the_device(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE + VAEGAN, steps=6, log_every=2, checkpoint_every=4))
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    result = run_on_device(path, uri, tmp_path / "ck", "--parallel", "2")
    assert result.exit_code == 0, result.output
    assert len(final_values(uri)) == 2


@pytest.mark.slow  # a real process killed mid-cell, then resumed: ~40 s on 2 CPU cores
def test_a_cell_killed_on_the_device_resumes_to_the_uninterrupted_outcome(tmp_path, monkeypatch):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE + VAEGAN, steps=200, log_every=10, checkpoint_every=20))
    _, second = expand(load_suite(path))
    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    checkpoints = tmp_path / "ck"
    command = [*BENCH, "run", str(path), "--tracking-uri", uri, "--device", str(DEVICE),
               "--checkpoint-dir", str(checkpoints), "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(checkpoints / "resume" / second.id / "checkpoint.pt", process, timeout=300)
    process.send_signal(signal.SIGKILL)  # mid-training of the second cell
    process.communicate()
    assert [run.info.status for run in runs_by_cell(uri)[second.id]] == ["RUNNING"]

    rerun = CliRunner().invoke(main, command[len(BENCH) :])
    assert rerun.exit_code == 0, rerun.output
    assert f"{second.name}: resuming run" in rerun.output
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    result = run_on_device(path, reference, tmp_path / "ck-reference")
    assert result.exit_code == 0, result.output

    got, want = final_values(uri), final_values(reference)
    assert got.keys() == want.keys()
    worst = 0.0
    for cell_id, metrics in want.items():
        assert got[cell_id].keys() == metrics.keys(), cell_id
        for name, value in metrics.items():
            if DEVICE.type == "cpu":
                assert got[cell_id][name] == value, (cell_id, name)
            else:
                worst = max(worst, abs(got[cell_id][name] - value) / max(1.0, abs(value)))
    print(f"resumed vs uninterrupted on {DEVICE}: worst relative difference {worst:.3g}")
    assert worst <= RESUME_TOLERANCE
