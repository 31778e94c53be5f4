"""`bench report` on a temporary MLflow store filled by one real tiny run (module fixture).

The run: vae, dcgan-bce and dcgan-wgan-gp x seeds 0 and 1 on synthetic data, 2 epochs of 4 steps
with the cheap evaluation after the first (FID over training). One cell fails for
real inside the runner: dcgan-wgan-gp seed 1, whose train_step is patched in-process to raise, so
the runner ends its MLflow run as failed with the reason (as it would any crashing cell).

The statistics (t-intervals, Welch tests, the Holm family, the best-mark) are checked on small
hand-built frames of cells against scipy and statsmodels; an edited suite (one label, two
configurations) on a store filled by hand, without training.

A second real run (module fixture `search_store`) is a tiny search: 3 trials per variant at 2
steps (one trial fails), then 2 follow-up seeds of each variant's best at 4 steps; its report must
compare the follow-up cells only and show the trials in their own section.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import textwrap

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from PIL import Image
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bench import keys, tracking
from bench.cli import main
from bench.metrics.table import metric_specs
from bench.report.cells import variant_names
from bench.report.load import load_report
from bench.report.render import write_report
from bench.report.search import best_so_far
from bench.report.stats import cell_counts, significance, summarize, welch_p_value
from bench.report.tables import best_row, failed_text, format_mean_ci, table_rows
from bench.suite.load import load_suite
from bench.suite.search import follow_up_cells, follow_up_seeds, trial_cells
from models.dcgan import Dcgan
from tests.faulty_models import raise_in_seeded_cell
from tests.local_web import HEADLESS, NO_CHROMIUM, chromium
from tests.tiny_suites import DCGANS, INTERPOLATION, VAE, tiny_suite

SUITE = tiny_suite(
    "tiny-report",
    VAE + DCGANS,
    length="epochs: 2",
    budget="  n_critic: 2\n",
    seeds="[0, 1]",
    evaluation="  every_epochs: 1\n" + INTERPOLATION,
)
VARIANTS = ["vae", "dcgan-bce", "dcgan-wgan-gp"]
FAILING = ("dcgan-wgan-gp", 1)
INJECTED = "injected failure for the report test"


def run_failing_wgan_dcgan(folder, suite_text: str, seed: int, message: str):
    """`bench run` of `suite_text` into a fresh store in `folder`, with the WGAN-GP DCGAN cell
    seeded `seed` raising `message` inside the runner: (folder, suite path, uri, CLI result)."""
    suite = folder / "suite.yaml"
    suite.write_text(textwrap.dedent(suite_text))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        raise_in_seeded_cell(patch, Dcgan, seed, message, when=lambda model: model.wgan)
        result = CliRunner().invoke(
            main, ["run", str(suite), "--tracking-uri", uri, "--device", "cpu", "--no-progress"]
        )
    return folder, suite, uri, result


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder, suite, uri, result = run_failing_wgan_dcgan(
        tmp_path_factory.mktemp("report"), SUITE, FAILING[1], INJECTED
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
                half = 0.0  # the same value on every seed (e.g. update counts): zero width
                if statistics.stdev(values) > 0:
                    low, high = stats.t.interval(
                        0.95, len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values)
                    )
                    half = (high - low) / 2
                assert row[(metric.key, "ci")] == pytest.approx(half)
            else:
                assert row[(metric.key, "std")] != row[(metric.key, "std")]  # NaN for one seed
                assert row[(metric.key, "ci")] != row[(metric.key, "ci")]  # and no interval

    keys_shown = {m.key for m in report.metrics}
    assert {keys.fid_key("domain"), keys.RECON_MSE, keys.TRAIN_IMAGES_PER_S} <= keys_shown
    assert {keys.GENERATOR_UPDATES, keys.DISCRIMINATOR_UPDATES, keys.IMAGES_SEEN} <= keys_shown
    assert {keys.interp_energy_key("prior"), keys.interp_degenerate_key("prior")} <= keys_shown
    assert summary.loc["dcgan-bce", (keys.RECON_MSE, "n")] == 0  # no encoder: a dash
    assert list(summary[("seeds", "n")]) == [2, 2, 1]


def test_markdown_table_states_values_directions_and_feature_spaces(store, rendered):
    markdown = (rendered / "report.md").read_text()
    report = load_report(str(store["suite"]), store["uri"])
    summary = summarize(report.cells, report.metrics, report.variants)
    fid = keys.fid_key("domain")
    row = summary.loc["vae"]
    expected = format_mean_ci(row[(fid, "mean")], row[(fid, "ci")], 2)
    assert "±" in expected
    lines = markdown.splitlines()
    vae_line = next(line for line in lines if line.startswith("| vae | 2 | 100% (2/2) | 0/2 |"))
    assert expected in vae_line
    assert "95% confidence interval over seeds, a Student t-interval" in markdown
    assert "FID (domain classifier) ↓" in markdown
    assert "Precision (domain classifier) ↑" in markdown
    assert "FID (Inception)" not in markdown  # no Inception weights offline: never mislabelled
    assert "Inception: not computed" in markdown
    wgan_line = next(line for line in markdown.splitlines() if line.startswith("| dcgan-wgan-gp |"))
    # 1 seed in the means, 1 failed: half the attempts succeeded
    assert wgan_line.startswith("| dcgan-wgan-gp | 1 | 50% (1/2) | **1/2** |")
    assert "±" not in wgan_line and "(1 seed)" in wgan_line  # one finished seed: no interval
    assert "Welch" in markdown and "Holm" in markdown
    assert "| *Best (tested)* |" in markdown
    assert "![FID over training](images/fid.png)" in markdown  # evaluated at steps 4 and 8
    # C_T is a z-score that grows with the sample count: the count is stated beside it
    copying = next(line for line in lines if line.startswith("| Data copying C_T |"))
    assert "32 samples against the test split's images" in copying
    assert "compare C_T only between reports at the same count" in copying


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


def test_provenance_states_parity_subsets_and_optimizer_settings_per_variant(rendered):
    markdown = (rendered / "report.md").read_text()
    budget = next(line for line in markdown.splitlines() if line.startswith("| Budget |"))
    assert "2 epochs, counted as generator updates (every variant gets the same number" in budget
    # the optimizer settings are per variant now (their own table), not part of the budget
    assert budget.endswith("per step); batch_size 16, latent_dim 8, width 8 |")
    assert "lr_g" not in budget and "lr_d" not in budget and "betas" not in budget
    assert "budget per cell: 2 epochs, counted as generator updates" in markdown  # header
    assert "seeded class-stratified subset of 64 images, seed 0" in markdown
    assert "(first 64 images)" not in markdown

    optimizer = markdown[markdown.index("Optimizer settings per variant") :]
    rows = {line.split(" | ")[0].strip("| "): line for line in optimizer.splitlines()[:8]}
    assert rows["vae"] == "| vae | 0.0002 | – | [0.5, 0.999] | 1 |"  # no discriminator: no lr_d
    assert rows["dcgan-bce"] == "| dcgan-bce | 0.0002 | 0.0002 | [0.5, 0.999] | 1 |"
    assert rows["dcgan-wgan-gp"] == "| dcgan-wgan-gp | 0.0002 | 0.0002 | [0.5, 0.999] | 2 |"

    cost = markdown[markdown.index("### Cost") : markdown.index("## Is it real?")]
    assert "Generator updates" in cost and "Discriminator updates" in cost
    assert "Images seen" in cost and "Training time (s)" in cost


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
    assert "beyond seed noise |" not in markdown  # every comparison is "not testable"
    assert "domain family: 0 testable comparisons" in markdown
    assert "★ " not in markdown.split("## Is it real?")[0].replace("★ marks", "")
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
    by_name = load_report("tiny-report", store["uri"])
    assert by_name.variants == VARIANTS  # one configuration per label: the labels themselves

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
    assert {keys.interp_energy_key("prior"), keys.interp_evenness_key("encoded")} <= lower
    assert {keys.interp_degenerate_key("prior"), keys.CLASS_KL, keys.CELL_SECONDS} <= lower
    assert {keys.precision_key("domain"), keys.recall_key("inception")} <= higher
    assert {keys.MODES_COVERED, keys.TRAIN_IMAGES_PER_S} <= higher
    # Welch by hand: means 2 and 5.167, variances 1 and 1.583, t = -3.41, df = 3.81, p = 0.029
    assert welch_p_value([1.0, 2.0, 3.0], [4.0, 5.0, 6.5]) == pytest.approx(0.0291, abs=1e-3)
    assert welch_p_value([1.0], [2.0, 3.0]) is None  # one seed: not testable
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) == 0.0  # no spread, different: certain
    assert welch_p_value([1.0, 1.0], [1.0, 1.0]) is None  # the same value everywhere
    counts = {keys.GENERATOR_UPDATES, keys.DISCRIMINATOR_UPDATES, keys.IMAGES_SEEN}
    baselines = {keys.probe_key(f, random=True) for f in ("encoder", "discriminator")}
    no_direction = {m.key for m in metric_specs() if m.lower_is_better is None}
    assert no_direction == counts | baselines
    assert format_mean_ci(12.123, 0.4321, 3) == "12.12 ± 0.43"
    assert format_mean_ci(12.123, float("nan"), 1) == "12.12 (1 seed)"
    assert format_mean_ci(1.086e-9, 9.3e-11, 3) == "(1.086 ± 0.093)e-9"
    assert format_mean_ci(38400.0, 0.0, 3) == "38400"  # the same on every seed: no interval


SPECS = {m.key: m for m in metric_specs()}
FID = SPECS[keys.fid_key("domain")]  # headline, lower is better
COVERAGE = SPECS[keys.coverage_key("domain")]  # headline, higher is better
CLASS_KL = SPECS[keys.CLASS_KL]  # not a headline metric: never tested


def cells_frame(values: dict[str, dict[str, list[float]]], failed: dict | None = None):
    """A frame of cells as load_report builds it: label -> metric key -> per-seed values
    (finished cells), plus `failed` label -> number of failed cells (no metrics)."""
    rows = []
    for label, per_metric in values.items():
        for seed in range(max(len(v) for v in per_metric.values())):
            row = {"label": label, "seed": seed, "status": keys.STATUS_FINISHED}
            row |= {key: v[seed] for key, v in per_metric.items() if seed < len(v)}
            rows.append(row)
    for label, count in (failed or {}).items():
        rows += [
            {"label": label, "seed": 100 + i, "status": keys.STATUS_FAILED} for i in range(count)
        ]
    return pd.DataFrame(rows)


def test_summary_gives_the_student_t_interval_over_seeds():
    fid = keys.fid_key("domain")
    a, b = [10.0, 10.5, 9.8, 10.9], [11.0, 13.0]
    cells = cells_frame({"a": {fid: a}, "b": {fid: b}, "c": {fid: [7.0]}}, failed={"a": 1})
    summary = summarize(cells, [FID], ["a", "b", "c", "never"])

    for label, values in (("a", a), ("b", b)):
        row = summary.loc[label]
        low, high = stats.t.interval(
            0.95, len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values)
        )
        assert row[(fid, "mean")] == pytest.approx((low + high) / 2)
        assert row[(fid, "ci")] == pytest.approx((high - low) / 2)
        assert row[(fid, "std")] == pytest.approx(statistics.stdev(values))  # kept beside it
        assert row[(fid, "n")] == len(values)
    # by hand for two seeds: t_{0.975, 1} = 12.706, sd = sqrt(2), sem = 1
    assert summary.loc["b", (fid, "ci")] == pytest.approx(12.7062, abs=1e-4)
    assert summary.loc["a", ("seeds", "n")] == 4  # the failed cell is not in the mean
    assert summary.loc["c", (fid, "n")] == 1 and pd.isna(summary.loc["c", (fid, "ci")])
    assert summary.loc["never", (fid, "n")] == 0
    assert format_mean_ci(7.0, float("nan"), 1) == "7 (1 seed)"  # one seed says so
    assert format_mean_ci(11.0, 12.7062, 2) == "11 ± 13"


def test_one_holm_correction_covers_every_headline_comparison_and_only_those():
    fid, coverage, kl = FID.key, COVERAGE.key, CLASS_KL.key
    values = {
        "a": {fid: [10.0, 10.5, 9.8], coverage: [0.50, 0.52, 0.55], kl: [0.1, 0.2, 0.1]},
        "b": {fid: [11.0, 11.6, 10.9], coverage: [0.60, 0.58, 0.65], kl: [0.1, 0.2, 0.3]},
        "c": {fid: [20.0, 21.0, 19.0], coverage: [0.30, 0.31, 0.29], kl: [1.0, 1.1, 0.9]},
        "d": {fid: [15.0], coverage: [0.2], kl: [0.5]},  # one seed: not testable
    }
    cells = cells_frame(values)
    result = significance(cells, [FID, COVERAGE, CLASS_KL], list(values))

    assert [c.metric.key for c in result.comparisons] == [fid, coverage]  # KL is not tested
    assert [(c.best, [v.label for v in c.others]) for c in result.comparisons] == [
        ("a", ["b", "d", "c"]),  # others by mean, runner-up first
        ("b", ["a", "c", "d"]),
    ]
    pairs = [("a", "b", fid), ("a", "c", fid), ("b", "a", coverage), ("b", "c", coverage)]
    raw = [
        stats.ttest_ind(values[x][key], values[y][key], equal_var=False).pvalue
        for x, y, key in pairs
    ]
    adjusted = multipletests(raw, method="holm")[1]
    assert result.family_size == 4 and result.untestable == 2
    found = {(c.best, v.label, c.metric.key): v for c in result.comparisons for v in c.others}
    for pair, p_raw, p_holm in zip(pairs, raw, adjusted, strict=True):
        assert found[pair].p_value == pytest.approx(p_raw)
        assert found[pair].adjusted_p == pytest.approx(p_holm)
    for pair in (("a", "d", fid), ("b", "d", coverage)):
        assert found[pair].p_value is None and found[pair].adjusted_p is None
        assert found[pair].verdict == "not testable"
    # by hand: a vs b on FID has the third smallest of four p-values, which Holm multiplies by 2
    versus_b = found[("a", "b", fid)]
    assert versus_b.adjusted_p == pytest.approx(2 * versus_b.p_value)


def test_star_only_where_the_best_is_beyond_seed_noise_of_the_runner_up_after_holm():
    fid = FID.key
    clear = {"a": [10.0, 10.1, 9.9], "b": [12.0, 12.2, 11.9], "c": [20.0, 21.0, 19.5]}
    close = {"a": [10.0, 10.6, 9.7], "b": [10.3, 10.9, 10.1], "c": [20.0, 21.0, 19.5]}
    for values, winner, tied in ((clear, "a", ["a"]), (close, None, ["a", "b"])):
        cells = cells_frame({label: {fid: v} for label, v in values.items()})
        result = significance(cells, [FID], list(values))
        comparison = result.comparison(fid)
        runner_up = comparison.others[0]
        assert runner_up.label == "b"
        assert (runner_up.adjusted_p < 0.05) == (winner is not None)
        assert comparison.winner == winner and comparison.tied == tied

        summary = summarize(cells, [FID], list(values))
        counts = cell_counts(cells, list(values))
        starred = {fid: [winner]} if winner else {}
        rows = table_rows(summary, counts, [FID], starred)
        assert [row["cells"][0]["best"] for row in rows] == [label == winner for label in values]
        assert best_row([FID], result) == ([f"★ {winner}"] if winner else ["tied: a, b"])
    assert best_row([CLASS_KL], result) == ["not tested"]


def test_raw_p_below_five_percent_is_no_star_when_holm_lifts_it_above():
    fid, coverage = FID.key, COVERAGE.key
    values = {
        "a": {fid: [10.0, 10.5, 9.8], coverage: [0.50, 0.52, 0.55]},
        "b": {fid: [11.0, 11.5, 10.7], coverage: [0.60, 0.58, 0.65]},
    }
    result = significance(cells_frame(values), [FID, COVERAGE], list(values))
    assert result.family_size == 2
    for key in (fid, coverage):  # each gap alone would pass at 5 %, not both together
        versus = result.comparison(key).others[0]
        assert versus.p_value < 0.05 <= versus.adjusted_p
        assert versus.verdict == "within seed noise"
        assert result.comparison(key).winner is None
    assert best_row([FID, COVERAGE], result) == ["tied: a, b", "tied: b, a"]


def test_untestable_variant_is_tied_with_the_best_not_beaten():
    fid = FID.key
    values = {"a": [10.0, 10.1, 9.9], "b": [12.0, 12.2, 11.9], "one-seed": [30.0]}
    cells = cells_frame({label: {fid: v} for label, v in values.items()})
    comparison = significance(cells, [FID], list(values)).comparison(fid)
    assert comparison.others[0].verdict == "beyond seed noise"
    assert comparison.winner is None and comparison.tied == ["a", "one-seed"]


def test_failures_are_counted_per_variant_and_kept_out_of_the_means():
    fid = FID.key
    cells = cells_frame({"a": {fid: [1.0, 2.0]}, "b": {fid: [3.0]}}, failed={"b": 2})
    missing = {"label": "a", "seed": 9, "status": "not run"}
    cells = pd.concat([cells, pd.DataFrame([missing])], ignore_index=True)
    counts = cell_counts(cells, ["a", "b"])
    counted = ["cells", "finished", "failed", "missing"]  # (and diverged_attempts: none here)
    assert counts.loc["a", counted].to_dict() == {
        "cells": 3,
        "finished": 2,
        "failed": 0,
        "missing": 1,
    }
    assert counts.loc["b", counted].to_dict() == {
        "cells": 3,
        "finished": 1,
        "failed": 2,
        "missing": 0,
    }
    assert counts["diverged_attempts"].tolist() == [0, 0]
    assert failed_text(counts.loc["a"]) == "0/3 (+1 missing)"
    assert failed_text(counts.loc["b"]) == "2/3"
    summary = summarize(cells, [FID], ["a", "b"])
    rows = table_rows(summary, counts, [FID], {})
    assert [(r["label"], r["seeds"], r["failed"]) for r in rows] == [
        ("a", 2, "0/3 (+1 missing)"),
        ("b", 1, "2/3"),
    ]
    assert rows[1]["cells"][0]["text"] == "3 (1 seed)"


def test_rows_by_experiment_name_split_one_label_with_two_configurations():
    cells = pd.DataFrame(
        {
            "label": ["vae", "vae", "vae", "vae", "gan", "old", "gan"],
            "variant_id": ["aaaaaa11", "aaaaaa11", "bbbbbb22", None, "cccccc33", None, "cccccc33"],
        }
    )
    assert variant_names(cells).tolist() == [
        "vae [aaaaaa]",
        "vae [aaaaaa]",
        "vae [bbbbbb]",
        "vae [untagged]",  # an old run without the tag: a configuration of its own
        "gan",
        "old",  # untagged runs alone: grouped by label, as before the tag
        "gan",
    ]


def test_report_by_experiment_name_keeps_an_edited_suites_configurations_apart(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    experiment = client.create_experiment("edited")
    fid = keys.fid_key("domain")
    runs = [("aaaaaa11", 0, 10.0), ("aaaaaa11", 1, 11.0), ("bbbbbb22", 0, 20.0)]
    runs += [("bbbbbb22", 1, 22.0)]
    for variant_id, seed, value in runs:
        tags = {
            keys.TAG_LABEL: "vae",
            keys.TAG_MODEL: "vae",
            keys.TAG_VARIANT_ID: variant_id,
            keys.TAG_CELL_ID: f"{variant_id}-{seed}",
            keys.TAG_SEED: str(seed),
            keys.TAG_STATUS: keys.STATUS_FINISHED,
        }
        run_id = client.create_run(experiment, tags=tags).info.run_id
        client.log_param(run_id, "optimizer.lr_g", "0.0002" if variant_id[0] == "a" else "0.001")
        client.log_metric(run_id, fid, value)
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    report = load_report("edited", uri)
    assert report.variants == ["vae [aaaaaa]", "vae [bbbbbb]"]
    summary = summarize(report.cells, report.metrics, report.variants)
    assert summary[(fid, "mean")].tolist() == [10.5, 21.0]  # never averaged together
    assert report.optimizer["vae [bbbbbb]"]["lr_g"] == "0.001"
    assert report.variant_ids == {"vae [aaaaaa]": "aaaaaa11", "vae [bbbbbb]": "bbbbbb22"}
    markdown = write_report(report, tmp_path / "out", ("md",))[0].read_text()
    # p = 0.027, family of 1
    assert "| vae [aaaaaa] | 2 | 100% (2/2) | 0/2 | **10.5 ± 6.4** ★ |" in markdown
    assert "| vae [bbbbbb] | 2 | 100% (2/2) | 0/2 | 21 ± 13 |" in markdown


def test_an_interrupted_run_is_a_missing_seed_not_a_failed_one(tmp_path):
    """A run killed from outside (SIGTERM, Ctrl-C: `bench run` marks it KILLED and resumes it) says
    nothing about its model: the cell has no result yet, as a cell still running. Only a raised
    or diverged run is a failed seed, which blocks the variant's star for good."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    experiment = client.create_experiment("interrupted")
    fid = keys.fid_key("domain")
    ended = {("a", 0): 10.0, ("a", 1): 11.0, ("a", 2): None, ("b", 0): 20.0, ("b", 1): 21.0}
    ended[("b", 2)] = None
    for (label, seed), value in ended.items():
        tags = {
            keys.TAG_LABEL: label,
            keys.TAG_MODEL: "vae",
            keys.TAG_VARIANT_ID: f"{label}-variant",
            keys.TAG_CELL_ID: f"{label}-{seed}",
            keys.TAG_SEED: str(seed),
        }
        run_id = client.create_run(experiment, tags=tags).info.run_id
        if value is not None:
            client.log_metric(run_id, fid, value)
            tracking.finish(client, run_id)
        elif label == "a":  # what `bench run` writes on SIGTERM
            tracking.fail(client, run_id, "interrupted by SIGTERM at step 12", killed=True)
        else:
            tracking.fail(client, run_id, "RuntimeError: boom")

    report = load_report("interrupted", uri)
    counts = cell_counts(report.cells, report.variants)
    assert counts.loc["a", ["finished", "failed", "missing"]].tolist() == [2, 0, 1]
    assert counts.loc["b", ["finished", "failed", "missing"]].tolist() == [2, 1, 0]
    assert failed_text(counts.loc["a"]) == "0/3 (+1 missing)"
    interrupted = report.cells.set_index("cell_id").loc["a-2"]
    assert interrupted["status"] == "interrupted"
    assert "interrupted by SIGTERM at step 12" in interrupted["reason"]
    assert "resumes" in interrupted["reason"]
    markdown = write_report(report, tmp_path / "out", ("md",))[0].read_text()
    assert "| a | 2 | 67% (2/3) | **0/3 (+1 missing)** |" in markdown
    assert "| b | 2 | 67% (2/3) | **1/3** |" in markdown


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
        pytest.skip(NO_CHROMIUM)
    html = (rendered / "report.html").read_text()
    probe = tmp_path / "probe.html"  # a copy with a script that reports each image's state
    probe.write_text(html.replace("</body>", IMAGE_PROBE + "</body>"))
    base = [browser, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
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


# ---- a searched suite: trials choose each variant's setting, the tables hold its follow-ups

SEARCH_SUITE = tiny_suite(
    "tiny-search-report",
    VAE + "  - label: dcgan-wgan-gp\n    model: dcgan\n    options: {loss: wgan-gp}\n",
    seeds="[0, 1]",
    evaluation=INTERPOLATION,
    sections="""\
search:
  trials: 3
  budget: {steps: 2}
  space:
    lr_g: {loguniform: [1.0e-4, 1.0e-2]}
    n_critic: {choice: [1, 2]}
""",
)
SEARCH_VARIANTS = ["vae", "dcgan-wgan-gp"]
FAILING_TRIAL = ("dcgan-wgan-gp", 1)  # trial 1 trains with seed trial_seed + 1 = 1001
TRIAL_FAILURE = "injected failure of a search trial"


@pytest.fixture(scope="module")
def search_store(tmp_path_factory):
    """A real tiny search: 3 trials per variant (dcgan-wgan-gp's trial 1 raises), then the two
    follow-up seeds of each variant's best trial."""
    folder, suite, uri, result = run_failing_wgan_dcgan(
        tmp_path_factory.mktemp("search-report"),
        SEARCH_SUITE,
        1000 + FAILING_TRIAL[1],  # a trial trains with seed trial_seed + its number
        TRIAL_FAILURE,
    )
    finals = search_runs(uri, keys.STAGE_FINAL)
    assert len(finals) == 4 and len(search_runs(uri, keys.STAGE_TRIAL)) == 6, result.output
    out = folder / "out"
    args = ["report", str(suite), "--tracking-uri", uri, "--out", str(out)]
    rendered = CliRunner().invoke(main, args)
    assert rendered.exit_code == 0, rendered.output
    return {"folder": folder, "suite": suite, "uri": uri, "out": out}


def search_runs(uri: str, stage: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny-search-report").experiment_id
    return client.search_runs([experiment], filter_string=f"tags.{keys.TAG_STAGE} = '{stage}'")


def test_searched_suite_tables_hold_only_the_follow_up_cells_of_the_chosen_trials(search_store):
    suite = load_suite(search_store["suite"])
    report = load_report(str(search_store["suite"]), search_store["uri"])
    trials = trial_cells(suite)
    follow_ups = []
    for parent in search_runs(search_store["uri"], keys.STAGE_SEARCH):
        label, number = parent.data.tags[keys.TAG_LABEL], int(parent.data.tags["best_trial"])
        best = next(c for c in trials if c.variant.label == label and c.trial == number)
        follow_ups += follow_up_cells(suite, best)
    assert set(report.cells["cell_id"]) == {cell.id for cell in follow_ups}
    assert report.unfinished.empty and report.variants == SEARCH_VARIANTS
    assert report.seeds == follow_up_seeds(suite) == [0, 1]
    assert report.runs_not_shown == 0  # the trials are not "other configurations" either
    summary = summarize(report.cells, report.metrics, report.variants)
    assert list(summary[("seeds", "n")]) == [2, 2]  # follow-up seeds, never the 3 trials

    markdown = (search_store["out"] / "report.md").read_text()
    main_tables = markdown[: markdown.index("## Search")]
    for label in SEARCH_VARIANTS:
        # the failed trial is no failed cell
        assert f"| {label} | 2 | 100% (2/2) | 0/2 |" in main_tables
    assert "4 of 4 cells finished" in markdown
    assert TRIAL_FAILURE not in markdown[markdown.index("## Failed and missing cells") :]
    seeds = next(line for line in markdown.splitlines() if line.startswith("| Seeds |"))
    assert seeds == "| Seeds | 0, 1 |"


def test_search_section_states_the_protocol_and_one_row_per_variant(search_store):
    markdown = (search_store["out"] / "report.md").read_text()
    section = markdown[markdown.index("## Search") : markdown.index("## Training curves")]
    assert "3 trials, each a setting drawn by Optuna's RandomSampler (seed 0)" in section
    assert "`lr_g` log-uniform on [0.0001, 0.01]; `n_critic` one of 1, 2." in section
    assert "each trial trains once for 2 generator updates; each follow-up cell for 4" in section
    assert "(`fid_domain`, lower is better)" in section
    assert "counts as the worst value" in section and "ties go to the lower trial" in section
    assert "seed 1000 + n (seeds 1000–1002)" in section and "follow-up seeds 0, 1" in section

    head = "| Variant | Trials ended / planned | Failed trials | Best trial | Chosen setting |"
    rows = section[section.index(head) :].split("\n\n")[0].splitlines()[2:]
    table = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in rows}
    assert len(rows) == len(SEARCH_VARIANTS)
    assert [label for label in table if label in SEARCH_VARIANTS] == SEARCH_VARIANTS
    assert table["vae"][1:3] == ["3/3", "0"]
    assert table["dcgan-wgan-gp"][1:3] == ["3/3", "**1**"]

    values = {label: [] for label in SEARCH_VARIANTS}
    for run in search_runs(search_store["uri"], keys.STAGE_TRIAL):
        if run.info.status == "FINISHED":
            values[run.data.tags[keys.TAG_LABEL]].append(run.data.metrics["fid_domain"])
    for parent in search_runs(search_store["uri"], keys.STAGE_SEARCH):
        label = parent.data.tags[keys.TAG_LABEL]
        row = table[label]
        assert row[3] == parent.data.tags["best_trial"]
        assert min(values[label]) == pytest.approx(parent.data.metrics["best_fid_domain"])
        assert row[5] == f"{parent.data.metrics['best_fid_domain']:.4g}"
        assert row[6].strip(" |") == f"{statistics.median(values[label]):.4g}"
        assert row[4].startswith("lr_g ")  # the chosen setting, from the parent's best.* params
    assert "n_critic" not in table["vae"][4]  # a VAE has no critic: never searched for it

    failed = [line for line in section.splitlines() if TRIAL_FAILURE in line]
    assert len(failed) == 1 and failed[0].startswith("| dcgan-wgan-gp | 1 | 1001 | failed |")
    for image in ("search-trials.png", "search-progress.png"):
        assert f"](images/{image})" in section
        with Image.open(search_store["out"] / "images" / image) as figure:
            figure.verify()
    html = (search_store["out"] / "report.html").read_text()
    html_section = html[html.index('<h2 id="search">') : html.index('<h2 id="training-curves">')]
    assert html_section.count("data:image/png;base64,") == 2
    assert TRIAL_FAILURE in html_section and "RandomSampler (seed 0)" in html_section


def test_best_so_far_follows_the_trials_in_order_and_skips_failed_ones():
    trials = pd.DataFrame(
        {
            "label": ["a", "a", "a", "a", "b", "b"],
            "trial": [0, 1, 2, 3, 0, 1],
            "status": ["failed", "finished", "finished", "not run", "finished", "finished"],
            "value": [None, 5.0, 7.0, None, 0.2, 0.9],
        }
    )
    lower = best_so_far(trials, lower_is_better=True)
    assert lower[lower["label"] == "a"]["best"].tolist()[1:] == [5.0, 5.0]
    assert pd.isna(lower.iloc[0]["best"])  # a failed first trial: no best yet
    assert lower[lower["label"] == "a"]["trial"].tolist() == [0, 1, 2]  # not run: no point
    higher = best_so_far(trials, lower_is_better=False)
    assert higher[higher["label"] == "b"]["best"].tolist() == [0.2, 0.9]


def test_edited_search_lists_follow_ups_as_search_not_finished(search_store, tmp_path):
    edited = tmp_path / "edited.yaml"  # one more trial: another search, nothing chosen for it
    edited.write_text(textwrap.dedent(SEARCH_SUITE).replace("trials: 3", "trials: 4"))
    report = load_report(str(edited), search_store["uri"])
    assert report.finished.empty and len(report.cells) == 4
    assert all(reason.startswith("search not finished") for reason in report.cells["reason"])
    assert report.cells["label"].tolist() == ["vae", "vae", "dcgan-wgan-gp", "dcgan-wgan-gp"]
    assert report.search.choices == {}  # the old parents belong to the 3-trial search
    # the same sampler seed draws the same first three settings: those trials keep their runs
    ended = report.search.trials.groupby("label")["status"].apply(lambda s: (s != "not run").sum())
    assert ended.to_dict() == {"dcgan-wgan-gp": 3, "vae": 3}

    markdown = write_report(report, tmp_path / "out", ("md",))[0].read_text()
    assert markdown.count("search not finished: no best trial chosen yet") == 4
    assert "| vae | 3/4 | 0 | not chosen yet |" in markdown
    assert "2 planned trials have no run yet" in markdown


def test_csv_export_of_a_search_has_every_trial_and_follow_up_run(search_store, tmp_path):
    args = ["report", str(search_store["suite"]), "--tracking-uri", search_store["uri"]]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path), "--format", "csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "runs.csv")
    assert len(table) == 6 + 4  # 3 trials x 2 variants, 2 follow-up seeds x 2; no parent runs
    assert table["stage"].value_counts().to_dict() == {"trial": 6, "final": 4}
    failed = table[table["status"] == "FAILED"]
    assert failed[["label", "trial"]].values.tolist() == [list(FAILING_TRIAL)]
    assert TRIAL_FAILURE in failed["failure_reason"].iloc[0]
    assert not (tmp_path / "report.md").exists()  # csv alone renders nothing
