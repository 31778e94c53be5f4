"""What MLflow makes of a suite run: one tiny run of all 7 variants, read back through the MLflow
client (experiment tags, dataset inputs, the logged model through mlflow.pyfunc, the run note) and
through the MLflow UI itself in headless Chromium.

BENCH_UPDATE_SCREENSHOTS=1 also writes the browser test's screenshot to the README's
reports/mlflow_ui/runs-table.png."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import textwrap
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision.utils import save_image

from bench import keys, tracking
from bench.cli import main
from bench.data import load_dataset
from tests.local_web import HEADLESS, NO_CHROMIUM, chromium, start_bench_ui, wait_until_serving
from tests.tiny_suites import INTERPOLATION, SEVEN_LABELS, tiny_suite

SUITE = tiny_suite(
    "tiny-mlflow-ui",
    train_limit=32,
    length="steps: 2",
    budget="  n_critic: 2\n",
    log_every=1,
    evaluation=INTERPOLATION,
)
SCREENSHOT = Path(__file__).resolve().parents[1] / "reports" / "mlflow_ui" / "runs-table.png"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The suite run once into a fresh store: (folder, tracking URI, client, experiment id,
    {variant label: run})."""
    folder = tmp_path_factory.mktemp("mlflow-ui")
    suite = folder / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    arguments = ["run", str(suite), "--tracking-uri", uri, "--device", "cpu", "--no-progress"]
    arguments += ["--checkpoint-dir", str(folder / "checkpoints")]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny-mlflow-ui").experiment_id
    runs = {run.data.tags[keys.TAG_VARIANT]: run for run in client.search_runs([experiment])}
    assert sorted(runs) == sorted(SEVEN_LABELS)
    return folder, uri, client, experiment, runs


def test_the_experiment_is_model_training_and_suggests_a_view_grouped_by_variant(store):
    _, _, client, experiment, runs = store
    tags = client.get_experiment(experiment).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags[f"mlflow.sharedViewState.{keys.RUNS_VIEW}"])
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "variant"}]
    assert view["selectedColumns"][:2] == ["attributes.`Dataset`", "metrics.`fid_domain`"]
    for label, run in runs.items():
        assert run.data.tags["variant"] == run.data.tags[keys.TAG_LABEL] == label


def test_an_experiment_made_before_the_tags_gets_them(tracking_uri):
    client = tracking.connect(tracking_uri)
    made = client.create_experiment("older")
    assert tracking.experiment_id(client, "older") == made
    assert client.get_experiment(made).tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.experiment_id(client, "absent", create=False) is None


def test_every_run_logs_its_training_and_evaluation_split_with_content_digests(store):
    _, _, _, _, runs = store
    data = load_dataset("synthetic", train_limit=32, eval_limit=32)

    def digest(images: torch.Tensor) -> str:  # sha256 of the split's uint8 tensor, 12 hex digits
        return hashlib.sha256(images.numpy().tobytes()).hexdigest()[:12]

    expected = {
        "training": ("train", digest(data.train.images)),
        "evaluation": ("test", digest(data.eval.images)),
    }
    assert expected["training"][1] != expected["evaluation"][1]
    for run in runs.values():
        found = {}
        for item in run.inputs.dataset_inputs:
            tags = {tag.key: tag.value for tag in item.tags}
            found[tags["mlflow.data.context"]] = (tags["split"], item.dataset.digest)
            assert item.dataset.name == "synthetic"
            assert json.loads(item.dataset.profile) == {"num_images": 32}
            assert item.dataset.source_type == "code"  # generated data: the harness's generator
            assert "bench.data.synthetic_split" in item.dataset.source
            assert "[-1, 1, 28, 28]" in item.dataset.schema  # uint8 images (N, C, H, W)
        assert found == expected


def artifact_image(client, run_id: str, name: str, folder: Path) -> np.ndarray:
    path = client.download_artifacts(run_id, name, str(folder))
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def as_grid(images: np.ndarray, columns: int, path: Path) -> np.ndarray:
    """Images in [0, 1] as the harness's grid PNG files hold them (torchvision's save_image)."""
    save_image(torch.from_numpy(images), path, nrow=columns)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("label", ["dcgan-bce", "vaegan-pixel-bce"])
def test_the_logged_model_samples_and_reconstructs_as_the_evaluation_did(store, label, tmp_path):
    _, uri, client, _, runs = store
    run_id = runs[label].info.run_id
    mlflow.set_tracking_uri(uri)  # what runs:/ URIs resolve against
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert set(model.metadata.signature.inputs.input_names()) == {"n", "seed", "images"}

    samples = model.predict({"n": 16})
    assert samples.shape == (16, 1, 28, 28) and samples.dtype == np.float32
    assert 0.0 <= samples.min() and samples.max() <= 1.0 and samples.std() > 0
    # seed 0 on the CPU: the very latents of the run's sample grid, decoded with the batch-norm
    # statistics the evaluation used, so the logged samples.png comes back (up to rounding)
    seeded = model.predict({"n": 16, "seed": 0})
    logged = artifact_image(client, run_id, keys.ARTIFACT_SAMPLES, tmp_path)
    assert np.abs(as_grid(seeded, 4, tmp_path / "samples.png") - logged).max() <= 1

    real = load_dataset("synthetic", train_limit=32, eval_limit=32).eval.images[:8]
    x = real.numpy().astype(np.float32) / 255
    if label.startswith("dcgan"):
        with pytest.raises(Exception, match="has no encoder"):
            model.predict({"images": x})
        return
    recons = model.predict({"images": x})
    assert recons.shape == x.shape and recons.dtype == np.float32
    assert 0.0 <= recons.min() and recons.max() <= 1.0
    # reconstructions.png: rows of 4 evaluation images, each followed by their reconstructions
    rows = [x[0:4], recons[0:4], x[4:8], recons[4:8]]
    logged = artifact_image(client, run_id, keys.ARTIFACT_RECONSTRUCTIONS, tmp_path)
    assert np.abs(as_grid(np.concatenate(rows), 4, tmp_path / "recons.png") - logged).max() <= 1


def test_loading_the_model_unpickles_nothing(store, tmp_path):
    _, uri, _, _, runs = store
    run_id = runs["vae"].info.run_id
    mlflow.set_tracking_uri(uri)
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=tmp_path))
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".cloudpickle"))]
    # the model is code (this harness's bench/tracking/served_model.py)
    assert "served_model.py" in files
    weights = next(folder.rglob("weights.pt"))
    saved = torch.load(weights, weights_only=True)  # tensors and plain containers only
    assert set(saved["decoder_statistics"]) == {"prior", "encoded"}
    # the weights-only training checkpoint is still beside it, for whoever resumes from it
    checkpoint = mlflow.artifacts.download_artifacts(
        f"runs:/{run_id}/{keys.ARTIFACT_CHECKPOINT_DIR}/{keys.CHECKPOINT_FILE}", dst_path=tmp_path
    )
    assert set(torch.load(checkpoint, weights_only=True)) == {"model", "optimizers", "config"}


def test_the_note_tells_the_run_and_holds_its_headline_metrics(store):
    _, _, _, _, runs = store
    for label, run in runs.items():
        note = run.data.tags["mlflow.note.content"]
        metrics = run.data.metrics
        assert note.startswith(f"**{label}**, seed 0: fid_domain {metrics['fid_domain']:.4g}")
        for key in ("fid_domain", "kid_domain", "precision_domain", "recall_domain", "class_kl"):
            assert f"| `{key}` | {metrics[key]:.4g} |" in note
        assert ("`recon_mse`" in note) == (not label.startswith("dcgan"))  # encoders only
        assert "budget: 2 generator updates, batch 16, latent 8, width 8" in note
        assert "reports/tiny-mlflow-ui/report.html" in note and "bench report" in note
        assert f"runs:/{run.info.run_id}/model" in note


# ---- the UI in a real browser

OVERVIEW_TEXT = ("Token Usage", "Detect Issues", "No data available")  # the GenAI overview


def page_text(dom: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


@pytest.mark.slow  # an MLflow server and a browser: ~35 s on 2 cores beside the suite run
def test_bench_ui_opens_the_runs_table_of_the_suite_in_chromium(store, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip(NO_CHROMIUM)
    folder, uri, _, experiment, _ = store
    log = tmp_path / "ui.log"
    server, base = start_bench_ui(uri, folder, log)
    try:
        wait_until_serving(base, server, log)
        link = tracking.runs_view_url(base, experiment)
        assert f"tiny-mlflow-ui: {link}" in log.read_text()  # bench ui prints the suite's link
        browse = [browser, *HEADLESS, "--window-size=2200,950"]
        text = ""
        for attempt, budget in enumerate((15000, 30000, 60000)):  # the React app renders late
            dom = subprocess.run(
                [*browse, f"--user-data-dir={tmp_path / f'profile{attempt}'}",
                 f"--virtual-time-budget={budget}", "--dump-dom", link],
                capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            text = page_text(dom.stdout)
            if all(f"{label}-s0" in text for label in SEVEN_LABELS):
                break
        for label in SEVEN_LABELS:
            assert f"{label}-s0" in text, text[:3000]
            assert f"Group: {label}" in text  # grouped by the variant tag
        assert "fid_domain" in text and "synthetic (" in text  # headline metric and dataset
        assert not [phrase for phrase in OVERVIEW_TEXT if phrase in text], text[:3000]

        screenshot = tmp_path / "runs-table.png"
        subprocess.run(
            [*browse, f"--user-data-dir={tmp_path / 'profile-shot'}",
             "--virtual-time-budget=20000", f"--screenshot={screenshot}", link],
            capture_output=True, timeout=180,
        )  # fmt: skip
        assert screenshot.is_file(), "Chromium wrote no screenshot"
        with Image.open(screenshot) as shot:
            assert shot.size == (2200, 950)
            colours = shot.convert("RGB").getcolors(maxcolors=1_000_000)
            assert colours is not None and len(colours) > 100  # a rendered page, not blank
        if os.environ.get("BENCH_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(screenshot, SCREENSHOT)
    finally:
        server.send_signal(signal.SIGTERM)  # bench ui stops its server's process group itself
        server.wait(timeout=30)


def test_dataset_inputs_survive_losing_the_insert_race(tmp_path):
    """Two cells starting at once both miss the dataset in MLflow's SQL store and the second
    insert breaks the unique key; log_inputs tries again and links the run (the lost race is
    replayed by failing the first call the way the store does)."""
    from mlflow.entities import DatasetInput
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("race"))
    split = load_dataset("synthetic", train_limit=32, eval_limit=32).train
    dataset = tracking.ImageSplit(
        tracking.dataset_source("generated"), "synthetic", split.digest, None, len(split.images)
    )
    inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[])]
    calls = []
    real = client.log_inputs

    def racing(run_id, datasets):
        calls.append(run_id)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets")
        return real(run_id, datasets=datasets)

    client.log_inputs = racing
    tracking.log_inputs(client, run.info.run_id, inputs)
    assert len(calls) == 2
    logged = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert [d.dataset.digest for d in logged] == [split.digest]

    client.log_inputs = lambda run_id, datasets: (_ for _ in ()).throw(MlflowException("other"))
    with pytest.raises(MlflowException, match="other"):  # any other error is not retried
        tracking.log_inputs(client, run.info.run_id, inputs)


def test_a_folder_source_resolves_without_mlflows_ambiguity_warning(tmp_path):
    """MLflow's two local artifact sources ("" and "file") both match a file URI; resolving a
    folder's source must not print "can be interpreted in multiple ways" for every cell."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = tracking.dataset_source(str(tmp_path))
    assert [str(w.message) for w in caught if "multiple ways" in str(w.message)] == []
    assert source.to_dict() == {"uri": tmp_path.resolve().as_uri()}
