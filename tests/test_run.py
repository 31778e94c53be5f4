"""End to end: a tiny suite of all 7 variants into a temporary MLflow store, read back."""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import models
from bench import keys
from bench.cli import main
from bench.suite.expand import expand
from bench.suite.load import load_suite
from tests.conftest import TINY_SUITE


@pytest.fixture(scope="module")
def ran_suite(tmp_path_factory):
    """The tiny suite run once for the module: (suite path, CLI result, tracking URI)."""
    folder = tmp_path_factory.mktemp("ran")
    path = folder / "suite.yaml"
    path.write_text(TINY_SUITE)
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = CliRunner().invoke(
        main, ["run", str(path), "--tracking-uri", tracking_uri, "--device", "cpu", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    return path, result, tracking_uri


def test_one_finished_run_per_cell_with_params_losses_and_artifacts(ran_suite):
    path, _, tracking_uri = ran_suite
    cells = expand(load_suite(path))
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(cells) == 7
    by_cell = {run.data.tags[keys.TAG_CELL_ID]: run for run in runs}
    assert set(by_cell) == {cell.id for cell in cells}

    for cell in cells:
        run = by_cell[cell.id]
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags[keys.TAG_STATUS] == keys.STATUS_FINISHED
        assert tags[keys.TAG_SUITE] == "tiny"
        assert tags[keys.TAG_LABEL] == cell.variant.label
        assert tags[keys.TAG_MODEL] == cell.variant.model
        assert tags[keys.TAG_SEED] == "0"
        params = run.data.params
        assert params["budget.batch_size"] == "16"
        assert params["model"] == cell.variant.model
        assert params["dataset.name"] == "synthetic"
        for option, value in cell.variant.options.items():
            assert params[f"options.{option}"] == str(value)

        metrics = run.data.metrics
        assert metrics[keys.TRAIN_IMAGES_PER_S] > 0
        assert metrics[keys.TRAIN_SECONDS] > 0
        loss_keys = [k for k in metrics if k.startswith(keys.TRAIN_PREFIX)]
        assert loss_keys, f"no losses logged for {cell.name}"
        history = client.get_metric_history(run.info.run_id, loss_keys[0])
        assert [m.step for m in history] == [2, 4]  # log_every 2, 4 steps

        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        expected = {
            keys.ARTIFACT_CONFIG,
            keys.ARTIFACT_SUITE,
            keys.ARTIFACT_SAMPLES,
            keys.ARTIFACT_INTERPOLATION,
            keys.ARTIFACT_CHECKPOINT_DIR,
        }
        assert expected <= artifacts
        has_encoder = models.model_class(cell.variant.model).has_encoder
        assert (keys.ARTIFACT_RECONSTRUCTIONS in artifacts) == has_encoder

        # evaluation: domain-space sample quality for all, encoder metrics only with an encoder
        for key in (
            keys.fid_key("domain"),
            keys.kid_key("domain"),
            keys.precision_key("domain"),
            keys.recall_key("domain"),
            keys.DOMAIN_ACCURACY,
            keys.MODES_COVERED,
            keys.CLASS_KL,
            keys.interp_degenerate_key("prior"),
        ):
            assert math.isfinite(metrics[key]), (cell.name, key)
        for key in (keys.RECON_MSE, keys.interp_degenerate_key("encoded")):
            assert (key in metrics) == has_encoder, (cell.name, key)
        assert 0 <= metrics[keys.MODES_COVERED] <= 10
        # the tiny suite asks for the domain space only: no Inception metrics, no Inception tags
        assert keys.fid_key("inception") not in metrics
        assert keys.TAG_INCEPTION_SKIPPED not in tags and keys.TAG_INCEPTION_SOURCE not in tags
        assert tags[keys.TAG_DEVICE].startswith("cpu")
        assert tags[keys.TAG_VERSION_PREFIX + "torch"] == metadata.version("torch")


def test_every_variant_gets_the_same_generator_updates(ran_suite):
    """Budget parity (default: generator updates): 4 steps are 4 generator updates for every
    variant; the WGAN-GP critics (n_critic 2 in the tiny suite) make 2 updates per step, each on
    its own batch of 16; the VAE has no discriminator."""
    path, _, tracking_uri = ran_suite
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    counts = {
        run.data.tags[keys.TAG_LABEL]: (
            run.data.metrics[keys.GENERATOR_UPDATES],
            run.data.metrics[keys.DISCRIMINATOR_UPDATES],
            run.data.metrics[keys.IMAGES_SEEN],
        )
        for run in client.search_runs([experiment.experiment_id])
    }
    assert counts == {
        "vae": (4, 0, 64),
        "dcgan-bce": (4, 4, 64),
        "dcgan-wgan-gp": (4, 8, 128),
        "vaegan-pixel-bce": (4, 4, 64),
        "vaegan-pixel-wgan-gp": (4, 8, 128),
        "vaegan-disfeat-bce": (4, 4, 64),
        "vaegan-disfeat-wgan-gp": (4, 8, 128),
    }
    for run in client.search_runs([experiment.experiment_id]):
        assert run.data.params["budget.parity"] == "generator_updates"
        # the loss curves' steps count generator updates for every variant
        history = client.get_metric_history(run.info.run_id, "train/loss_d")
        assert [m.step for m in history] in ([], [2, 4])


def test_batch_parity_gives_every_variant_the_same_data(write_suite, tmp_path):
    text = TINY_SUITE.replace("  steps: 4\n", "  steps: 4\n  parity: batches\n")
    text = text[: text.index("models:")] + (
        "models:\n  - label: dcgan-wgan-gp\n    model: dcgan\n    options: {loss: wgan-gp}\n"
    )
    uri = f"sqlite:///{tmp_path / 'batches.db'}"
    result = CliRunner().invoke(
        main, ["run", str(write_suite(text)), "--tracking-uri", uri, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    (run,) = [
        r
        for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
        if r.data.tags[keys.TAG_MODEL] == "dcgan"
    ]
    metrics = run.data.metrics
    # 4 batches: 4 critic updates, 4 // 2 generator updates
    assert (metrics[keys.GENERATOR_UPDATES], metrics[keys.DISCRIMINATOR_UPDATES]) == (2, 4)
    assert metrics[keys.IMAGES_SEEN] == 4 * 16


def test_checkpoint_and_config_load_back(ran_suite, tmp_path):
    path, _, tracking_uri = ran_suite
    cell = expand(load_suite(path))[-1]  # vaegan-disfeat-wgan-gp
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.cell_id = '{cell.id}'"
    )
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    config = json.loads((local / keys.ARTIFACT_CONFIG).read_text())
    assert config["cell_id"] == cell.id
    assert config["options"] == cell.variant.options

    checkpoint = torch.load(
        local / keys.ARTIFACT_CHECKPOINT_DIR / keys.CHECKPOINT_FILE, weights_only=True
    )
    model = models.build(cell.variant.model, cell.variant.options, (1, 28, 28), cell.hparams())
    model.load_state_dict(checkpoint["model"])
    model.load_optimizer_state(checkpoint["optimizers"])
    # 4 generator updates (the budget's steps), each after n_critic = 2 critic updates
    assert model.num_steps == 4 * 2
    assert torch.isfinite(model.sample(4)).all()


def test_rerun_skips_finished_cells(ran_suite):
    path, _, tracking_uri = ran_suite
    result = CliRunner().invoke(
        main, ["run", str(path), "--tracking-uri", tracking_uri, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped") >= 7
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([experiment.experiment_id])) == 7


def test_runs_are_deterministic_on_cpu(write_suite, tmp_path):
    one_variant = TINY_SUITE[: TINY_SUITE.index("  - label: dcgan")]
    path = write_suite(one_variant.replace("model: vae", "model: vaegan"))
    losses = []
    for name in ("a", "b"):
        uri = f"sqlite:///{tmp_path / name}.db"
        result = CliRunner().invoke(
            main, ["run", str(path), "--tracking-uri", uri, "--no-progress"]
        )
        assert result.exit_code == 0, result.output
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
        losses.append({k: v for k, v in run.data.metrics.items() if k.startswith("train/")})
    assert losses[0] == losses[1]


def test_dry_run_lists_cells_and_writes_nothing(write_suite, tmp_path):
    path = write_suite()
    uri = f"sqlite:///{tmp_path / 'never.db'}"
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--tracking-uri", uri])
    assert result.exit_code == 0
    assert "7 cells" in result.output
    for cell in expand(load_suite(path)):
        assert cell.id in result.output
    assert not (tmp_path / "never.db").exists()


def test_user_errors_exit_2_with_one_line(write_suite, tmp_path):
    path = write_suite("name: x\nmodels: [\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_missing_dataset_is_one_clear_line(write_suite, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    text = TINY_SUITE.replace("  name: synthetic\n", f"  name: mnist\n  root: {empty}\n")
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    result = CliRunner().invoke(main, ["run", str(write_suite(text)), "--tracking-uri", uri])
    assert result.exit_code == 2
    assert "dataset 'mnist' not found" in result.output and str(empty) in result.output
    assert "--data-root" in result.output


def test_models_command_lists_every_registered_option():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    for name in models.REGISTRY:
        assert f"{name}:" in result.output
        for option, _, _ in models.option_table(name):
            assert option in result.output


def test_mlflow_installed_as_mlflow_skinny_still_logs_its_version(monkeypatch):
    """The GPU machine's bundle carries mlflow-skinny (benchmarks/device_bundle.sh): no "mlflow"
    distribution there. Its served models and version tags must not need one."""
    from importlib import metadata as real

    from bench.tracking import provenance, served_model

    installed = real.version

    def version(name: str) -> str:
        if name == "mlflow":
            raise real.PackageNotFoundError(name)
        return "9.9.9" if name == "mlflow-skinny" else installed(name)

    monkeypatch.setattr(served_model, "version", version)
    monkeypatch.setattr(provenance.metadata, "version", version)
    import mlflow

    assert f"mlflow=={mlflow.__version__}" in served_model.requirements()
    tags = provenance.tags(torch.device("cpu"))
    assert tags[keys.TAG_VERSION_PREFIX + "mlflow"] == "9.9.9"
