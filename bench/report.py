"""From the MLflow store to the numbers of a report: cells, the per-variant summary, the tests.

`load_report` reads one suite's experiment (the report needs nothing but the tracking store):
one row per cell with its final metrics, the loss and FID histories, provenance from the runs'
tags and params, and the cells that failed or never ran. `summarize` turns the finished cells into
mean / sample std (ddof=1) / 95 % Student t-interval / n per variant and metric; `cell_counts`
counts each variant's finished, failed and missing cells; `significance` compares the best variant
of each headline metric with every other one (Welch's t-test over seeds) and corrects all these
comparisons together (Holm-Bonferroni), which decides the best-mark of a column.

Every function here that computes numbers takes a plain DataFrame of cells (columns label, seed,
status and one column per metric key), so the statistics can be checked on hand-built frames.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from scipy import stats
from statsmodels.stats.multitest import multipletests

from . import keys, tracking
from .suite import SuiteError, expand, load_suite

ALPHA = 0.05  # family-wise level (Holm) of the Welch tests behind "beyond seed noise"
CONFIDENCE = 0.95  # of the Student t-interval of each mean over seeds
MAX_RUNS = 50_000
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
SEEDS = ("seeds", "n")  # summary column: finished cells (seeds) of the variant
NOT_RECORDED = "not recorded"
BUDGET_SIZES = ("batch_size", "latent_dim", "width")  # budget.* params besides steps / epochs
OPTIMIZER_PARAMS = ("lr_g", "lr_d", "betas", "n_critic")  # optimizer.* params, per variant
PARITY = {
    "generator_updates": "counted as generator updates (every variant gets the same number of "
    "generator/decoder updates; WGAN-GP critics take n_critic updates per step)",
    "batches": "counted as batches of data (every variant sees the same images; a WGAN-GP "
    "generator gets 1/n_critic of the updates)",
}
UNTAGGED = "untagged"  # name suffix of runs logged before the variant_id tag existed
ID_CHARS = 6  # characters of a variant_id that tell two configurations of one label apart


class ReportError(SuiteError):
    """Nothing to report (no store, no experiment, no runs); str() is the line to print."""


@dataclass(frozen=True)
class Metric:
    key: str
    title: str  # names its feature space where it has one
    lower_is_better: bool | None  # None: a count of the budget, neither better nor worse
    group: str
    about: str = ""
    headline: bool = False  # tested for "is the difference real?"

    @property
    def direction(self) -> str:
        if self.lower_is_better is None:
            return "budget, neither better nor worse"
        return "lower is better" if self.lower_is_better else "higher is better"

    @property
    def arrow(self) -> str:
        if self.lower_is_better is None:
            return ""
        return "↓" if self.lower_is_better else "↑"


QUALITY = "Sample quality"
LATENT = "Reconstruction, latent space and modes"
COST = "Cost"
SPACE_TITLES = {"domain": "domain classifier", "inception": "Inception"}
PAIR_TITLES = {"prior": "prior pairs", "encoded": "encoded pairs"}


def metric_specs() -> list[Metric]:
    """Every metric column of the report, in display order, with what it measures."""
    specs = []
    for space in keys.FEATURE_SPACES:
        name = SPACE_TITLES[space]
        specs += [
            Metric(
                keys.fid_key(space),
                f"FID ({name})",
                True,
                QUALITY,
                "Fréchet distance between generated and real evaluation images in the "
                f"{name} feature space",
                headline=True,
            ),
            Metric(
                keys.kid_key(space),
                f"KID ({name})",
                True,
                QUALITY,
                f"kernel inception distance in the {name} feature space, mean over subsets",
            ),
            Metric(
                keys.precision_key(space),
                f"Precision ({name})",
                False,
                QUALITY,
                "share of generated images inside the real images' manifold (k=3)",
                headline=True,
            ),
            Metric(
                keys.recall_key(space),
                f"Recall ({name})",
                False,
                QUALITY,
                "share of real images inside the generated images' manifold (k=3)",
                headline=True,
            ),
        ]
    specs.append(
        Metric(
            keys.RECON_MSE,
            "Reconstruction MSE",
            True,
            LATENT,
            "per-pixel squared error on the [0, 1] scale between evaluation images and "
            "decode(encode(x)); variants with an encoder only",
            headline=True,
        )
    )
    specs += interpolation_specs()
    specs += [
        Metric(
            keys.MODES_COVERED,
            "Modes covered",
            False,
            LATENT,
            "classes that receive at least half their real share among the samples",
        ),
        Metric(
            keys.CLASS_KL,
            "Class KL",
            True,
            LATENT,
            "KL(real class histogram || generated class histogram), classes by the domain "
            "classifier",
        ),
        Metric(
            keys.GENERATOR_UPDATES,
            "Generator updates",
            None,
            COST,
            "updates of the generator / decoder (and encoder) over training",
        ),
        Metric(
            keys.DISCRIMINATOR_UPDATES,
            "Discriminator updates",
            None,
            COST,
            "updates of the discriminator / critic over training (0 without one)",
        ),
        Metric(
            keys.IMAGES_SEEN,
            "Images seen",
            None,
            COST,
            "training images consumed (every training step call takes one batch)",
        ),
        Metric(
            keys.TRAIN_IMAGES_PER_S,
            "Images/s (training)",
            False,
            COST,
            "real training images consumed per second by the training loop",
        ),
        Metric(keys.TRAIN_SECONDS, "Training time (s)", True, COST, "wall time of training"),
        Metric(keys.EVAL_SECONDS, "Evaluation time (s)", True, COST, "wall time of evaluation"),
        Metric(
            keys.CELL_SECONDS,
            "Wall time per cell (s)",
            True,
            COST,
            "whole cell: training, evaluation and artifacts",
        ),
    ]
    return specs


def interpolation_specs() -> list[Metric]:
    """Energy, evenness and degenerate share of latent interpolations, per kind of pair."""
    specs = []
    for pairs in keys.INTERP_PAIRS:
        specs.append(
            Metric(
                keys.interp_energy_key(pairs),
                f"Interp. energy ({PAIR_TITLES[pairs]})",
                True,
                LATENT,
                "path energy relative to the endpoints' distance in domain features; "
                "1 = even straight path, ideal; lower is better",
            )
        )
    for pairs in keys.INTERP_PAIRS:
        specs.append(
            Metric(
                keys.interp_evenness_key(pairs),
                f"Interp. evenness ({PAIR_TITLES[pairs]})",
                True,
                LATENT,
                "largest step of an interpolation path over its length in domain features "
                "(1/T: even, the ideal; 1: one jump); lower is better",
            )
        )
    for pairs in keys.INTERP_PAIRS:
        specs.append(
            Metric(
                keys.interp_degenerate_key(pairs),
                f"Interp. degenerate ({PAIR_TITLES[pairs]})",
                True,
                LATENT,
                "share of interpolation pairs whose endpoint images coincide in domain features "
                "(1 for a constant generator, whose energy and evenness are then absent); "
                "lower is better",
            )
        )
    return specs


@dataclass
class Report:
    suite_name: str
    experiment_id: str
    tracking_uri: str
    variants: list[str]  # display order: the suite's, else the order the variants first ran
    cells: pd.DataFrame  # one row per cell (its latest finished run, else its latest attempt)
    histories: pd.DataFrame  # label, seed, run_id, key, step, value: losses and FID over training
    provenance: list[tuple[str, str]]
    options: dict[str, str]  # variant label -> "model(option=value, ...)"
    optimizer: dict[str, dict[str, str | None]]  # label -> OPTIMIZER_PARAMS (None: not set)
    variant_ids: dict[str, str]  # label -> variant_id tag of its runs
    suite_text: str | None
    suite_text_source: str
    runs_in_experiment: int
    runs_not_shown: int  # runs of cells that are not in the given suite file (other configs)
    client: MlflowClient = field(repr=False)

    @property
    def finished(self) -> pd.DataFrame:
        return self.cells[self.cells["status"] == keys.STATUS_FINISHED]

    @property
    def unfinished(self) -> pd.DataFrame:
        """Cells without a finished run: failed, never run, or still running / killed."""
        return self.cells[self.cells["status"] != keys.STATUS_FINISHED]

    @property
    def metrics(self) -> list[Metric]:
        """The metric columns with at least one value among the finished cells."""
        present = self.finished.columns
        return [
            m for m in metric_specs() if m.key in present and self.finished[m.key].notna().any()
        ]

    @property
    def seeds(self) -> list[int]:
        return sorted(set(self.finished["seed"]))


def load_report(suite: str, tracking_uri: str | None = None) -> Report:
    """SUITE is a suite file (its cells are the report's rows) or an experiment name (every run of
    the experiment is used)."""
    suite_file = _suite_file(suite)
    suite_config = load_suite(suite_file) if suite_file else None
    name = suite_config.name if suite_config else suite
    uri = tracking.resolve_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise ReportError(
            f"no tracking store at {uri}: run `bench run` first, or pass --tracking-uri"
        )
    client = tracking.connect(uri)
    experiment = tracking.experiment_id(client, name, create=False)
    if experiment is None:
        raise ReportError(
            f"no experiment named {name!r} in {uri}: run `bench run` on its suite first, "
            "or pass --tracking-uri"
        )
    runs = client.search_runs([experiment], max_results=MAX_RUNS, order_by=["start_time ASC"])
    if not runs:
        raise ReportError(f"experiment {name!r} in {uri} has no runs yet")

    rows = [_run_row(run) for run in runs]
    expected = None
    if suite_config:
        expected = {cell.id: cell for cell in expand(suite_config)}
    cells, not_shown = _cells(rows, expected)
    variants = list(dict.fromkeys(cells["label"]))
    # Provenance comes from the runs the tables use (else from the cells' failed attempts).
    used = [run for run in runs if run.info.run_id in set(cells["run_id"].dropna())]
    finished_ids = set(cells.loc[cells["status"] == keys.STATUS_FINISHED, "run_id"])
    sources = [run for run in used if run.info.run_id in finished_ids] or used
    suite_text, source = _suite_text(client, cells, suite_file)
    labels = _labels_by_run(cells)
    return Report(
        suite_name=name,
        experiment_id=experiment,
        tracking_uri=_without_credentials(client.tracking_uri),
        variants=variants,
        cells=cells,
        histories=histories(client, cells),
        provenance=provenance(sources, cells),
        options=_variant_options(used, labels),
        optimizer=optimizer_settings(used, labels),
        variant_ids=_variant_ids(used, labels),
        suite_text=suite_text,
        suite_text_source=source,
        runs_in_experiment=len(runs),
        runs_not_shown=not_shown,
        client=client,
    )


def _suite_file(suite: str) -> Path | None:
    path = Path(suite)
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or "/" in suite:
        load_suite(path)  # raises the usual one-line "cannot read suite file"
    return None


def _run_row(run: Run) -> dict:
    tags, info = run.data.tags, run.info
    if tags.get(keys.TAG_STATUS) == keys.STATUS_FINISHED and info.status == "FINISHED":
        status = keys.STATUS_FINISHED
    elif tags.get(keys.TAG_STATUS) == keys.STATUS_FAILED or info.status in ("FAILED", "KILLED"):
        status = keys.STATUS_FAILED
    else:
        status = "unfinished"
    reason = tags.get(keys.TAG_FAILURE, "")
    if status == "unfinished":
        reason = f"no result: the run is {info.status} (still running, or its process died)"
    return {
        "run_id": info.run_id,
        "cell_id": tags.get(keys.TAG_CELL_ID, info.run_id),
        "label": tags.get(keys.TAG_LABEL, info.run_name or info.run_id),
        "variant_id": tags.get(keys.TAG_VARIANT_ID),  # None: a run from before the tag existed
        "model": tags.get(keys.TAG_MODEL, ""),
        "seed": int(tags.get(keys.TAG_SEED, -1)),
        "status": status,
        "reason": reason.strip().splitlines()[0] if reason.strip() else "",
        "details": reason.strip(),
        "start_time": info.start_time,
        **run.data.metrics,
    }


def _cells(rows: list[dict], expected: dict | None) -> tuple[pd.DataFrame, int]:
    """One row per cell: its latest finished run, else its latest attempt; with a suite file,
    exactly the suite's cells (those never run get status "not run")."""
    frame = pd.DataFrame(rows)
    frame["finished_first"] = frame["status"] != keys.STATUS_FINISHED
    frame = frame.sort_values(["finished_first", "start_time"], ascending=[True, False])
    cells = frame.drop_duplicates("cell_id").drop(columns="finished_first")
    not_shown = 0
    if expected is not None:
        not_shown = int((~frame["cell_id"].isin(expected)).sum())
        cells = cells[cells["cell_id"].isin(expected)].set_index("cell_id")
        missing = [
            {
                "cell_id": cell_id,
                "label": cell.variant.label,
                "model": cell.variant.model,
                "seed": cell.seed,
                "variant_id": cell.variant_id,
                "status": "not run",
                "reason": "no run in the store for this cell (run `bench run` on the suite)",
                "details": "",
            }
            for cell_id, cell in expected.items()
            if cell_id not in cells.index
        ]
        cells = pd.concat([cells.reset_index(), pd.DataFrame(missing)], ignore_index=True)
        # the suite's label and order, even if a run was logged under an older label
        order = {cell_id: i for i, cell_id in enumerate(expected)}
        cells["label"] = [expected[c].variant.label for c in cells["cell_id"]]
        cells = cells.sort_values("cell_id", key=lambda ids: ids.map(order))
    else:
        # by configuration, not by label: an edited suite reuses labels for other settings
        cells = cells.assign(label=variant_names(cells))
        first_start = cells.groupby("label")["start_time"].transform("min")
        cells = cells.assign(_first=first_start).sort_values(["_first", "seed"])
        cells = cells.drop(columns="_first")
    return cells.reset_index(drop=True), not_shown


def variant_names(cells: pd.DataFrame) -> pd.Series:
    """The row name of each cell's variant when reporting a whole experiment: its label, or
    "label [abcdef]" (the start of its variant_id) where the label has cells of several
    configurations (a suite edited between runs), so that they are never averaged together. Runs
    without the tag (older harness) count as one configuration per label, "label [untagged]"."""
    ids = cells.get("variant_id", pd.Series(None, index=cells.index, dtype=object))
    suffix = ids.map(lambda vid: vid[:ID_CHARS] if isinstance(vid, str) and vid else UNTAGGED)
    full = ids.map(lambda vid: vid if isinstance(vid, str) and vid else UNTAGGED)
    configurations = full.groupby(cells["label"]).transform("nunique")
    return cells["label"].where(configurations == 1, cells["label"] + " [" + suffix + "]")


def summarize(cells: pd.DataFrame, metrics: list[Metric], variants: list[str]) -> pd.DataFrame:
    """Finished cells -> one row per variant; columns (metric key, "mean" | "std" | "ci" | "n"),
    with the sample std (ddof=1; NaN for one seed) and "ci" the half-width of the CONFIDENCE
    Student t-interval of the mean over seeds (NaN below two seeds), and SEEDS. Variants without
    finished cells have n = 0."""
    by_variant = cells[cells["status"] == keys.STATUS_FINISHED].groupby("label")
    columns = {}
    for metric in metrics:
        values = by_variant[metric.key].agg(["mean", "std", "count"]).reindex(variants)
        count = values["count"].fillna(0).astype(int)
        columns[(metric.key, "mean")] = values["mean"]
        columns[(metric.key, "std")] = values["std"]
        columns[(metric.key, "ci")] = t_half_width(values["std"], count)
        columns[(metric.key, "n")] = count
    columns[SEEDS] = by_variant.size().reindex(variants).fillna(0).astype(int)
    return pd.DataFrame(columns, index=pd.Index(variants, name="label"))


def t_half_width(std: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the two-sided CONFIDENCE Student t-interval of a mean over n seeds,
    t_{(1+CONFIDENCE)/2, n-1} * sd / sqrt(n); NaN below two seeds (no interval from one value)."""
    enough = n >= 2
    df = (n - 1).where(enough).astype(float)
    quantile = stats.t.ppf((1 + CONFIDENCE) / 2, df)
    return (quantile * std / np.sqrt(n.where(enough).astype(float))).where(enough)


def cell_counts(cells: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Per variant: its cells, and how many finished, failed (the run failed, diverged or was
    killed) and are missing (never run, or still running / its process died)."""
    status = cells["status"]
    flags = pd.DataFrame(
        {
            "cells": 1,
            "finished": status == keys.STATUS_FINISHED,
            "failed": status == keys.STATUS_FAILED,
            "missing": ~status.isin([keys.STATUS_FINISHED, keys.STATUS_FAILED]),
        }
    )
    counts = flags.groupby(cells["label"]).sum().reindex(variants)
    return counts.fillna(0).astype(int)


@dataclass
class Versus:
    label: str
    values: list[float]
    p_value: float | None  # raw Welch p; None: not testable (one seed on a side, or no spread)
    adjusted_p: float | None = None  # Holm-adjusted over the report's family (holm_adjust)

    @property
    def verdict(self) -> str:
        if self.p_value is None:
            return "not testable"
        if self.adjusted_p is None:
            return "not corrected"  # compare() alone: holm_adjust decides
        return "beyond seed noise" if self.adjusted_p < ALPHA else "within seed noise"


@dataclass
class Comparison:
    metric: Metric
    best: str  # best mean (the first in variant order among equal means)
    best_values: list[float]
    others: list[Versus]  # every other variant with values, by mean: runner-up first

    @property
    def winner(self) -> str | None:
        """The best variant where it is beyond seed noise of every other variant after the Holm
        correction (so of the runner-up too), else None: a best mean alone earns no mark."""
        if not self.others:
            return None
        beyond = all(v.verdict == "beyond seed noise" for v in self.others)
        return self.best if beyond else None

    @property
    def tied(self) -> list[str]:
        """The best and every variant it is not separated from (not significant after the
        correction, or not testable); just the best where it is the winner."""
        return [self.best] + [v.label for v in self.others if v.verdict != "beyond seed noise"]


@dataclass
class Significance:
    comparisons: list[Comparison]  # one per headline metric with values
    family_size: int  # testable comparisons, corrected together

    @property
    def untestable(self) -> int:
        return sum(v.p_value is None for c in self.comparisons for v in c.others)

    def comparison(self, key: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.metric.key == key), None)


def significance(cells: pd.DataFrame, metrics: list[Metric], variants: list[str]) -> Significance:
    """Best against every other variant for each headline metric, with one Holm correction over
    every testable comparison of the report."""
    comparisons = [compare(cells, m, variants) for m in metrics if m.headline]
    comparisons = [c for c in comparisons if c is not None]
    return Significance(comparisons, holm_adjust(comparisons))


def holm_adjust(comparisons: list[Comparison]) -> int:
    """Holm-Bonferroni over all testable comparisons of all the given metrics as one family
    (testing several metrics and variants at 5 % each would find "real" gaps by chance); sets
    each one's adjusted_p and returns the family size. Untestable ones are not in the family."""
    family = [v for c in comparisons for v in c.others if v.p_value is not None]
    if family:
        _, adjusted, _, _ = multipletests([v.p_value for v in family], ALPHA, method="holm")
        for versus, p_value in zip(family, adjusted, strict=True):
            versus.adjusted_p = float(p_value)
    return len(family)


def compare(cells: pd.DataFrame, metric: Metric, variants: list[str]) -> Comparison | None:
    """The best variant (by mean) against every other variant with values: raw p-values of
    Welch's two-sided t-test over the per-seed values (holm_adjust corrects them)."""
    finished = cells[(cells["status"] == keys.STATUS_FINISHED)]
    if metric.key not in finished or metric.lower_is_better is None:
        return None
    values = {
        label: finished.loc[finished["label"] == label, metric.key].dropna().tolist()
        for label in variants
    }
    values = {label: v for label, v in values.items() if v}
    if not values:
        return None
    sign = 1 if metric.lower_is_better else -1
    ranked = sorted(values, key=lambda label: sign * statistics.fmean(values[label]))  # stable
    best = ranked[0]
    others = [
        Versus(label, values[label], welch_p_value(values[best], values[label]))
        for label in ranked[1:]
    ]
    return Comparison(metric, best, values[best], others)


def welch_p_value(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None when it cannot be computed:
    fewer than two values on a side, or no spread on either side."""
    if len(a) < 2 or len(b) < 2:
        return None
    spread = statistics.variance(a) + statistics.variance(b)
    if spread <= 1e-12 * max(1.0, *(x * x for x in a + b)):
        return None  # identical (or numerically identical) values: nothing to test
    with warnings.catch_warnings():
        # scipy warns about precision loss when one side's values are nearly equal; the p-value
        # is still the right one for the data as logged
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def histories(client: MlflowClient, cells: pd.DataFrame) -> pd.DataFrame:
    """Loss curves (train/<loss>) and evaluation metrics over training (FID per feature space,
    when logged at more than one step) of every finished cell, long format."""
    over_training = {keys.fid_key(space) for space in keys.FEATURE_SPACES}
    rows = []
    for cell in cells[cells["status"] == keys.STATUS_FINISHED].itertuples():
        run = client.get_run(cell.run_id)
        wanted = [
            key
            for key in run.data.metrics
            if key.startswith(keys.TRAIN_PREFIX) or key in over_training
        ]
        for key in wanted:
            for point in client.get_metric_history(cell.run_id, key):
                rows.append((cell.label, cell.seed, cell.run_id, key, point.step, point.value))
    return pd.DataFrame(rows, columns=["label", "seed", "run_id", "key", "step", "value"])


def provenance(runs: list[Run], cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(what, value) rows read from the runs: what a reader needs to reproduce or trust them."""

    def tag(key: str) -> str:
        return _distinct([run.data.tags.get(key) for run in runs])

    def param(key: str) -> str:
        return _distinct([run.data.params.get(key) for run in runs])

    def dataset_split(split: str, limit: str) -> str:
        count = param(f"dataset.{limit}")
        if count in ("None", NOT_RECORDED):
            return param(f"dataset.{split}")
        seed = param("dataset.subset_seed")
        return (
            f"{param(f'dataset.{split}')} (seeded class-stratified subset of {count} images, "
            f"seed {seed})"
        )

    versions = sorted(
        {
            key.removeprefix(keys.TAG_VERSION_PREFIX)
            for run in runs
            for key in run.data.tags
            if key.startswith(keys.TAG_VERSION_PREFIX)
        }
    )
    version_text = (
        ", ".join(f"{name} {tag(keys.TAG_VERSION_PREFIX + name)}" for name in versions)
        or NOT_RECORDED
    )
    seeds = sorted(set(cells["seed"]))
    return [
        ("Dataset", param("dataset.name")),
        ("Training split", dataset_split("train_split", "train_limit")),
        ("Evaluation split", dataset_split("eval_split", "eval_limit")),
        ("Budget", budget_text(param)),
        ("Evaluation", evaluation_text(param)),
        ("Seeds", ", ".join(str(s) for s in seeds)),
        ("Feature spaces", feature_spaces(runs)),
        ("Code version", f"git {tag(keys.TAG_GIT_COMMIT)}; harness {param('code_version')}"),
        ("Libraries", version_text),
        ("Device", tag(keys.TAG_DEVICE)),
    ]


def budget_text(param) -> str:
    """'1500 steps, counted as generator updates (...); batch_size 64, ...' from the budget.*
    params (param: name -> the runs' value, NOT_RECORDED, or "mixed: ...")."""
    steps, epochs = param("budget.steps"), param("budget.epochs")
    length = [f"{_whole(value)} {unit}" for value, unit in ((steps, "steps"), (epochs, "epochs"))]
    length = [text for text, value in zip(length, (steps, epochs), strict=True) if _given(value)]
    parity = param("budget.parity")
    counted = (
        PARITY.get(parity, f"counted as {parity}")
        if _given(parity)
        else ("unit not recorded (generator updates or batches)")
    )
    sizes = ", ".join(
        f"{name} {param('budget.' + name)}"
        for name in BUDGET_SIZES
        if _given(param("budget." + name))
    )
    head = ", ".join([*length, counted]) if length else NOT_RECORDED
    return f"{head}; {sizes}" if sizes else head


def evaluation_text(param) -> str:
    """Sample count and how the decoder's batch norm was set for evaluation."""
    samples = param("evaluation.num_samples")
    if not _given(samples):
        return NOT_RECORDED
    text = f"{samples} generated images per metric"
    policy = param("evaluation.batch_norm")
    if policy == "recalibrate":
        latents = param("evaluation.calibration_samples")
        text += f"; decoder batch-norm statistics re-estimated on {latents} latents first"
    elif _given(policy):
        text += f"; decoder batch norm: {policy}"
    return text


def _whole(text: str) -> str:
    """'2.0' -> '2' (epochs are logged as floats); anything else unchanged."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _given(value: str) -> bool:
    return value not in ("None", NOT_RECORDED)


def feature_spaces(runs: list[Run]) -> str:
    """Which feature space each FID/KID/precision/recall number used, and why one is absent."""
    parts = []
    accuracies = [run.data.metrics.get(keys.DOMAIN_ACCURACY) for run in runs]
    accuracies = sorted({round(a, 4) for a in accuracies if a is not None})
    if any(keys.fid_key("domain") in run.data.metrics for run in runs):
        accuracy = ", ".join(f"{a:.4f}" for a in accuracies) or NOT_RECORDED
        parts.append(
            "domain: features of the harness's own classifier trained on the dataset's "
            f"labelled train split (test accuracy {accuracy}); not comparable to Inception FIDs"
        )
    if any(keys.fid_key("inception") in run.data.metrics for run in runs):
        parts.append("Inception: standard Inception-v3 pool features (torch-fidelity)")
    else:
        skipped = _distinct([run.data.tags.get(keys.TAG_INCEPTION_SKIPPED) for run in runs])
        parts.append(f"Inception: not computed ({skipped})")
    return "; ".join(parts)


def _labels_by_run(cells: pd.DataFrame) -> dict[str, str]:
    """run_id -> the report's name of its variant (which, by experiment name, may not be the
    label tag alone)."""
    present = cells.dropna(subset=["run_id"])
    return dict(zip(present["run_id"], present["label"], strict=True))


def _runs_by_label(runs: list[Run], labels: dict[str, str]) -> dict[str, list[Run]]:
    """Runs per variant name, in the report's variant order (labels follows the cells)."""
    by_id = {run.info.run_id: run for run in runs}
    grouped: dict[str, list[Run]] = {}
    for run_id, label in labels.items():
        if run_id in by_id:
            grouped.setdefault(label, []).append(by_id[run_id])
    return grouped


def optimizer_settings(runs: list[Run], labels: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """label -> resolved optimizer settings (optimizer.* params) of its runs; None where the
    variant has no such setting (lr_d without a discriminator) or its runs predate them."""
    settings = {}
    for label, group in _runs_by_label(runs, labels).items():
        values = {
            name: _distinct([run.data.params.get(f"optimizer.{name}") for run in group])
            for name in OPTIMIZER_PARAMS
        }
        settings[label] = {k: (None if v == NOT_RECORDED else v) for k, v in values.items()}
    return settings


def _variant_ids(runs: list[Run], labels: dict[str, str]) -> dict[str, str]:
    return {
        label: _distinct([run.data.tags.get(keys.TAG_VARIANT_ID) for run in group])
        for label, group in _runs_by_label(runs, labels).items()
    }


def _variant_options(runs: list[Run], labels: dict[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for label, group in _runs_by_label(runs, labels).items():
        run = group[0]
        params = run.data.params
        chosen = sorted(
            (k.removeprefix("options."), v) for k, v in params.items() if k.startswith("options.")
        )
        model = run.data.tags.get(keys.TAG_MODEL, "?")
        options[label] = f"{model}({', '.join(f'{k}={v}' for k, v in chosen)})"
    return options


def _suite_text(
    client: MlflowClient, cells: pd.DataFrame, suite_file: Path | None
) -> tuple[str | None, str]:
    """The suite file as logged with the runs, else the file given on the command line."""
    for run_id in cells.sort_values("start_time", ascending=False)["run_id"].dropna():
        names = {a.path for a in client.list_artifacts(run_id)}
        if keys.ARTIFACT_SUITE in names:
            with tempfile.TemporaryDirectory() as folder:
                local = download(client, run_id, keys.ARTIFACT_SUITE, folder)
                return local.read_text(), f"logged with run {run_id}"
    if suite_file is not None:
        return suite_file.read_text(), f"{suite_file} (not logged with the runs)"
    return None, "not logged with the runs"


def download(client: MlflowClient, run_id: str, name: str, folder: Path | str) -> Path:
    """One artifact of a run to a local folder, without MLflow's progress bar."""
    previous = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    try:
        return Path(client.download_artifacts(run_id, name, str(folder)))
    finally:
        if previous is None:
            del os.environ[PROGRESS_BAR]
        else:
            os.environ[PROGRESS_BAR] = previous


def variant_images(report: Report, folder: Path) -> dict[str, dict[str, Path]]:
    """label -> {artifact name: local file} for samples, reconstructions and interpolation strips,
    from each variant's lowest finished seed."""
    names = (keys.ARTIFACT_SAMPLES, keys.ARTIFACT_RECONSTRUCTIONS, keys.ARTIFACT_INTERPOLATION)
    images: dict[str, dict[str, Path]] = {}
    finished = report.finished.sort_values("seed")
    for label, cell in finished.groupby("label", sort=False).first().iterrows():
        present = {a.path for a in report.client.list_artifacts(cell["run_id"])}
        target = folder / f"{label}-seed{cell['seed']}"
        target.mkdir(parents=True, exist_ok=True)
        images[label] = {
            name: download(report.client, cell["run_id"], name, target)
            for name in names
            if name in present
        }
    return {label: images[label] for label in report.variants if label in images}


def image_seed(report: Report, label: str) -> int | None:
    seeds = report.finished.loc[report.finished["label"] == label, "seed"]
    return int(seeds.min()) if len(seeds) else None


def generated_at() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _distinct(values: list[str | None]) -> str:
    """One value, NOT_RECORDED, or "mixed: a (n runs), b (m runs)" when runs disagree."""
    present = [v for v in values if v not in (None, "")]
    if not present:
        return NOT_RECORDED
    counts = pd.Series(present).value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return "mixed: " + ", ".join(f"{value} ({n} runs)" for value, n in counts.items())


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
