"""Evaluation over training: evaluation.every_epochs logs the cheap metrics with their step."""

from __future__ import annotations

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench import keys
from bench.cli import main
from tests.conftest import TINY_SUITE


def test_cheap_metrics_are_logged_every_k_epochs(write_suite, tracking_uri):
    text = TINY_SUITE[: TINY_SUITE.index("  - label: dcgan")]  # the VAE only
    text = text.replace("steps: 4", "epochs: 3").replace(
        "grid_size: 16", "grid_size: 16\n  every_epochs: 1"
    )
    result = CliRunner().invoke(
        main, ["run", str(write_suite(text)), "--tracking-uri", tracking_uri, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    per_epoch = 64 // 16
    fid = client.get_metric_history(run.info.run_id, keys.fid_key("domain"))
    # epochs 1 and 2 (cheap), then the final evaluation at the last step
    assert [m.step for m in fid] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    recon = client.get_metric_history(run.info.run_id, keys.RECON_MSE)
    assert [m.step for m in recon] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    # precision/recall and interpolation only in the final evaluation
    precision = client.get_metric_history(run.info.run_id, keys.precision_key("domain"))
    assert [m.step for m in precision] == [3 * per_epoch]
    ppl = client.get_metric_history(run.info.run_id, keys.interp_degenerate_key("prior"))
    assert [m.step for m in ppl] == [3 * per_epoch]
