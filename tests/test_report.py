"""`bench report` on a temporary MLflow store filled by one real tiny run (module fixture).

The run: vae, dcgan-bce and dcgan-wgan-gp x seeds 0 and 1 on synthetic data, 2 epochs of 4 steps
with the cheap evaluation after the first (FID over training). One cell fails for
real inside the runner: dcgan-wgan-gp seed 1, whose train_step is patched in-process to raise, so
the runner ends its MLflow run as failed with the reason (as it would any crashing cell).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import textwrap

import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from bench import keys
from bench.cli import main
from bench.render import format_mean_std
from bench.report import load_report, metric_specs, summarize, welch_p_value
from models.dcgan import Dcgan

SUITE = """
name: tiny-report
dataset:
  name: synthetic
  train_limit: 64
  eval_limit: 32
budget:
  epochs: 2
  batch_size: 16
  latent_dim: 8
  width: 8
  n_critic: 2
  log_every: 2
seeds: [0, 1]
evaluation:
  num_samples: 32
  batch_size: 16
  grid_size: 16
  every_epochs: 1
  interp_pairs: 2
  interp_steps: 4
  interp_strips: 2
models:
  - label: vae
    model: vae
  - label: dcgan-{loss}
    model: dcgan
    grid:
      loss: [bce, wgan-gp]
"""
VARIANTS = ["vae", "dcgan-bce", "dcgan-wgan-gp"]
FAILING = ("dcgan-wgan-gp", 1)
INJECTED = "injected failure for the report test"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    suite = folder / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    original = Dcgan.train_step

    def train_step(self, x):
        if self.wgan and torch.initial_seed() == FAILING[1]:  # the runner seeds torch per cell
            raise RuntimeError(INJECTED)
        return original(self, x)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Dcgan, "train_step", train_step)
        result = CliRunner().invoke(
            main, ["run", str(suite), "--tracking-uri", uri, "--device", "cpu", "--no-progress"]
        )
    assert result.exit_code == 1, result.output  # 1: a cell failed, the others finished
    return {"folder": folder, "suite": suite, "uri": uri}


@pytest.fixture(scope="module")
def rendered(store):
    out = store["folder"] / "out"
    args = ["report", str(store["suite"]), "--tracking-uri", store["uri"], "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "1 failed or missing" in result.output
    return out


def finished_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny-report")
    runs = client.search_runs([experiment.experiment_id])
    return [run for run in runs if run.data.tags.get(keys.TAG_STATUS) == keys.STATUS_FINISHED]


def test_table_has_one_row_per_variant_with_means_and_stds_of_the_runs(store):
    report = load_report(str(store["suite"]), store["uri"])
    summary = summarize(report.cells, report.metrics, report.variants)
    assert list(summary.index) == VARIANTS

    runs = finished_runs(store["uri"])
    assert len(runs) == 5
    for metric in report.metrics:
        for label in VARIANTS:
            values = [
                run.data.metrics[metric.key]
                for run in runs
                if run.data.tags[keys.TAG_LABEL] == label and metric.key in run.data.metrics
            ]
            row = summary.loc[label]
            assert row[(metric.key, "n")] == len(values), (label, metric.key)
            if not values:
                assert row[(metric.key, "mean")] != row[(metric.key, "mean")]  # NaN: a dash
                continue
            assert row[(metric.key, "mean")] == pytest.approx(statistics.mean(values))
            if len(values) > 1:
                assert row[(metric.key, "std")] == pytest.approx(statistics.stdev(values))
            else:
                assert row[(metric.key, "std")] != row[(metric.key, "std")]  # NaN for one seed

    keys_shown = {m.key for m in report.metrics}
    assert {keys.fid_key("domain"), keys.RECON_MSE, keys.TRAIN_IMAGES_PER_S} <= keys_shown
    assert summary.loc["dcgan-bce", (keys.RECON_MSE, "n")] == 0  # no encoder: a dash
    assert list(summary[("seeds", "n")]) == [2, 2, 1]


def test_markdown_table_states_values_directions_and_feature_spaces(store, rendered):
    markdown = (rendered / "report.md").read_text()
    report = load_report(str(store["suite"]), store["uri"])
    summary = summarize(report.cells, report.metrics, report.variants)
    fid = keys.fid_key("domain")
    row = summary.loc["vae"]
    expected = format_mean_std(row[(fid, "mean")], row[(fid, "std")], 2)
    assert "±" in expected
    vae_line = next(line for line in markdown.splitlines() if line.startswith("| vae | 2 |"))
    assert expected in vae_line
    assert "FID (domain classifier) ↓" in markdown
    assert "Precision (domain classifier) ↑" in markdown
    assert "FID (Inception)" not in markdown  # no Inception weights offline: never mislabelled
    assert "Inception: not computed" in markdown
    assert "★" in markdown
    wgan_line = next(line for line in markdown.splitlines() if line.startswith("| dcgan-wgan-gp |"))
    assert "±" not in wgan_line  # one finished seed: the value alone
    assert "Welch" in markdown
    assert "![FID over training](images/fid.png)" in markdown  # evaluated at steps 4 and 8


def test_failed_cells_have_their_own_section_with_the_reason(store, rendered):
    report = load_report(str(store["suite"]), store["uri"])
    failed = report.unfinished
    assert [(row.label, row.seed) for row in failed.itertuples()] == [FAILING]
    assert INJECTED in failed.iloc[0]["reason"]

    headings = {
        "report.md": ("## Failed and missing cells", "## Provenance"),
        "report.html": ('<h2 id="failures">', '<h2 id="provenance">'),
    }
    for name, (start, end) in headings.items():
        text = (rendered / name).read_text()
        section = text[text.index(start) : text.index(end)]
        assert "dcgan-wgan-gp" in section and INJECTED in section, name
    assert "5 of 6 cells finished" in (rendered / "report.md").read_text()


def test_every_image_the_markdown_references_exists(rendered):
    markdown = (rendered / "report.md").read_text()
    references = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown)
    references += re.findall(r"<img[^>]+src=\"([^\"]+)\"", markdown)
    assert len(references) >= 4 + 2 + 1 + 2 + 1  # 3 metric groups + losses, images per variant
    for reference in references:
        assert not reference.startswith(("http:", "https:", "/")), reference
        path = rendered / reference
        assert path.is_file(), reference
        with Image.open(path) as image:
            image.verify()
    written = {f"images/{path.name}" for path in (rendered / "images").iterdir()}
    assert written == set(references)  # and no image is left unreferenced
    for label in VARIANTS:
        assert f"images/{label}-{keys.ARTIFACT_SAMPLES}" in references
    assert f"images/vae-{keys.ARTIFACT_RECONSTRUCTIONS}" in references
    assert f"images/dcgan-bce-{keys.ARTIFACT_INTERPOLATION}" in references


def test_html_is_one_file_without_external_references(rendered):
    html = (rendered / "report.html").read_text()
    targets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert targets
    for target in targets:
        assert target.startswith(("data:image/png;base64,", "#")), target[:80]
    assert not re.search(r"url\((?!\s*['\"]?data:)", html)
    assert "<link" not in html and "@import" not in html
    assert html.count("<img") == html.count('src="data:image/png;base64,')


def test_single_seed_report_says_one_seed_cannot_separate_variants(store, tmp_path):
    one_seed = tmp_path / "one-seed.yaml"
    one_seed.write_text(textwrap.dedent(SUITE).replace("seeds: [0, 1]", "seeds: [0]"))
    report = load_report(str(one_seed), store["uri"])
    assert report.seeds == [0]
    assert report.runs_not_shown == 3  # the seed-1 runs belong to the other configuration
    assert report.unfinished.empty

    out = tmp_path / "out"
    args = ["report", str(one_seed), "--tracking-uri", store["uri"], "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--format", "md"])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert "One seed per variant: seed noise cannot be estimated" in markdown
    assert "Beyond seed noise" not in markdown
    assert not (out / "report.html").exists()


def test_changed_suite_lists_its_cells_as_not_run_instead_of_mixing_configs(store, tmp_path):
    changed = tmp_path / "changed.yaml"
    changed.write_text(textwrap.dedent(SUITE).replace("epochs: 2", "epochs: 3"))
    out = tmp_path / "out"
    args = ["report", str(changed), "--tracking-uri", store["uri"], "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--format", "md"])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert "0 of 6 cells finished" in markdown
    assert "6 run(s) of this experiment belong to other configurations" in markdown
    assert markdown.count("| not run |") == 6
    assert "nothing to compare" in markdown


def test_report_by_experiment_name_and_user_errors(store, tmp_path):
    out = tmp_path / "by-name"
    args = ["report", "tiny-report", "--tracking-uri", store["uri"], "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--format", "html"])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and not (out / "images").exists()

    unknown = CliRunner().invoke(main, ["report", "nope", "--tracking-uri", store["uri"]])
    assert unknown.exit_code == 2
    assert unknown.output.startswith("error: no experiment named 'nope'")
    missing = tmp_path / "missing.db"
    no_store = CliRunner().invoke(main, ["report", "x", "--tracking-uri", f"sqlite:///{missing}"])
    assert no_store.exit_code == 2 and "no tracking store" in no_store.output
    assert not missing.exists()


def test_metric_directions_and_welch():
    lower = {m.key for m in metric_specs() if m.lower_is_better}
    higher = {m.key for m in metric_specs() if not m.lower_is_better}
    assert {keys.fid_key("domain"), keys.kid_key("inception"), keys.RECON_MSE} <= lower
    assert {keys.interp_ppl_key("prior"), keys.CLASS_KL, keys.CELL_SECONDS} <= lower
    assert {keys.precision_key("domain"), keys.recall_key("inception")} <= higher
    assert {keys.MODES_COVERED, keys.TRAIN_IMAGES_PER_S} <= higher
    # Welch by hand: means 2 and 5.167, variances 1 and 1.583, t = -3.41, df = 3.81, p = 0.029
    assert welch_p_value([1.0, 2.0, 3.0], [4.0, 5.0, 6.5]) == pytest.approx(0.0291, abs=1e-3)
    assert welch_p_value([1.0], [2.0, 3.0]) is None  # one seed: not testable
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) is None  # no spread
    assert format_mean_std(12.123, 0.4321, 3) == "12.12 ± 0.43"
    assert format_mean_std(12.123, float("nan"), 1) == "12.12"
    assert format_mean_std(1.086e-9, 9.3e-11, 3) == "(1.086 ± 0.093)e-9"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


IMAGE_PROBE = """<script>
window.addEventListener("load", function () {
  var found = Array.prototype.map.call(document.images, function (img) {
    return {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight};
  });
  var out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def test_html_opens_in_headless_chromium_and_every_image_decodes(rendered, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium found: install Debian's `chromium` package (.ci/run does)")
    html = (rendered / "report.html").read_text()
    probe = tmp_path / "probe.html"  # a copy with a script that reports each image's state
    probe.write_text(html.replace("</body>", IMAGE_PROBE + "</body>"))
    base = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*base, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"Chromium gave no DOM: {dom.stderr[-2000:]}"
    images = json.loads(found.group(1))
    assert len(images) == html.count("<img") >= 10
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image

    screenshot = tmp_path / "report.png"
    page = (rendered / "report.html").as_uri()
    subprocess.run(
        [*base, "--window-size=1366,2400", f"--screenshot={screenshot}", page],
        capture_output=True,
        timeout=120,
    )
    assert screenshot.is_file(), "Chromium wrote no screenshot"
    with Image.open(screenshot) as shot:
        assert shot.size == (1366, 2400)
        colours = shot.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 100  # text, tables and figures, not blank
