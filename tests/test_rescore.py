"""`bench evaluate`: finished runs re-scored from their logged weights, the same numbers for the
same code, new metrics added once, a rerun adding nothing."""

from __future__ import annotations

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench import keys
from bench.cli import main
from bench.metrics import evaluate

SUITE = """
name: rescore
dataset: {name: synthetic, train_limit: 128, eval_limit: 64}
budget: {steps: 4, batch_size: 16, latent_dim: 8, width: 8, log_every: 2}
seeds: [0]
evaluation: {num_samples: 64, batch_size: 32, grid_size: 16, interp_pairs: 2,
             feature_extractors: [domain]}
models:
  - {label: vae, model: vae}
  - {label: dcgan, model: dcgan}
"""


def test_bench_evaluate_rescores_old_runs_once_with_the_same_numbers(tmp_path, monkeypatch):
    path = tmp_path / "rescore.yaml"
    path.write_text(SUITE)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setattr(evaluate, "EVALUATION_VERSION", "0")  # runs of an older evaluation
    ran = CliRunner().invoke(
        main, ["run", str(path), "--tracking-uri", uri, "--no-progress",
               "--checkpoint-dir", str(tmp_path / "c")],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rescore").experiment_id
    before = {r.info.run_id: r for r in client.search_runs([experiment])}
    assert {r.data.tags[keys.TAG_EVALUATION_VERSION] for r in before.values()} == {"0"}

    monkeypatch.setattr(evaluate, "EVALUATION_VERSION", "1")
    rescored = CliRunner().invoke(main, ["evaluate", str(path), "--tracking-uri", uri])
    assert rescored.exit_code == 0, rescored.output
    assert "2 re-scored, 0 already at the current evaluation version" in rescored.output
    again = CliRunner().invoke(main, ["evaluate", str(path), "--tracking-uri", uri])
    assert "0 re-scored, 2 already at the current evaluation version" in again.output

    fid = keys.fid_key("domain")
    for run_id, old in before.items():
        new = client.get_run(run_id)
        assert new.data.tags[keys.TAG_EVALUATION_VERSION] == "1"
        # the rebuilt model is the trained one: the same numbers from the same code
        assert new.data.metrics[fid] == old.data.metrics[fid]
        history = client.get_metric_history(run_id, keys.SHARPNESS_SAMPLES)
        # one value from the run, one from the re-score, none from the rerun; same final step
        assert len(history) == 2 and history[0].step == history[1].step
        assert history[0].value == history[1].value
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert keys.ARTIFACT_NEAREST in artifacts
