"""`bench run --dry-run` says what a suite will cost: timed steps of each variant x the budget."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from bench.cli import main
from bench.run import estimate
from bench.suite.load import load_suite
from tests.conftest import TINY_SUITE


def dry_run(path):
    return CliRunner().invoke(main, ["run", str(path), "--dry-run", "--device", "cpu"])


def test_dry_run_estimates_the_training_time_and_writes_nothing(write_suite, tmp_path):
    result = dry_run(write_suite())
    assert result.exit_code == 0, result.output
    assert "estimated training time on cpu:" in result.output
    for label in ("vae", "dcgan-wgan-gp", "vaegan-disfeat-wgan-gp"):
        assert f"  {label} " in result.output and "x 4 steps x 1 cells" in result.output
    assert "warning" not in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_a_cpu_run_of_hours_is_warned_about(write_suite):
    result = dry_run(write_suite(TINY_SUITE.replace("steps: 4", "steps: 100000000")))
    assert result.exit_code == 0, result.output
    assert "warning: about" in result.output and "meant for a GPU (--device cuda)" in result.output


def test_the_estimate_is_the_timed_steps_times_the_budget(write_suite, monkeypatch):
    monkeypatch.setattr(estimate, "step_seconds", lambda cell, shape, device: 0.5)
    suite = load_suite(write_suite())
    found = estimate.estimate(suite, torch.device("cpu"))
    assert found.seconds == 7 * 4 * 0.5  # 7 cells of 4 steps
    epochs = TINY_SUITE.replace("steps: 4", "epochs: 2")  # 64 images / batch 16 = 4 steps
    found = estimate.estimate(load_suite(write_suite(epochs)), torch.device("cpu"))
    assert found.seconds == 7 * 8 * 0.5


def test_image_files_of_unknown_size_get_no_estimate(write_suite, tmp_path):
    text = TINY_SUITE.replace(
        "  name: synthetic\n", f"  name: folder\n  root: {tmp_path / 'images'}\n"
    )
    found = estimate.estimate(load_suite(write_suite(text)), torch.device("cpu"))
    assert isinstance(found, str) and "image_size" in found
