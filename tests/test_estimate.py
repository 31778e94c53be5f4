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
    assert "device: cpu (" in result.output and "bf16 native: " in result.output
    assert "estimated training time (fp32, channels_last):" in result.output
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


def test_the_timed_steps_run_under_the_cells_own_precision_and_memory_format(
    write_suite, monkeypatch
):
    """A bf16 or NHWC suite is timed as it will train, not as fp32 NCHW."""
    import models
    from bench.suite.expand import expand
    from bench.suite.schema import ComputeConfig

    seen = []
    vae = models.REGISTRY["vae"]
    step = vae.train_step

    def recording_step(self, x):
        seen.append((torch.is_autocast_enabled("cpu"), x.is_contiguous()))
        return step(self, x)

    monkeypatch.setattr(vae, "train_step", recording_step)
    suite = load_suite(write_suite())
    for compute, expected in (
        (ComputeConfig(precision="bf16"), (True, False)),  # auto: NHWC on the CPU
        (ComputeConfig(channels_last=False), (False, True)),
    ):
        seen.clear()
        cell = expand(suite.model_copy(update={"compute": compute}))[0]
        estimate.step_seconds(cell, (3, 32, 32), torch.device("cpu"))  # C > 1: NHWC shows
        assert seen and set(seen) == {expected}
