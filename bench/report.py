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

import math
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
from .suite import (
    Cell,
    SearchConfig,
    Suite,
    SuiteError,
    expand,
    follow_up_cells,
    follow_up_seeds,
    load_suite,
    search_id,
    trial_cells,
)

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
    search: SearchReport | None = None  # the search that chose each variant's settings, if any
    runs: list[Run] = field(default_factory=list, repr=False)  # every run of the experiment

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


@dataclass(frozen=True)
class Store:
    """Where a report's runs live: the experiment of a suite (by file or by name) in a store."""

    name: str
    client: MlflowClient
    experiment_id: str
    uri: str
    suite_file: Path | None
    suite: Suite | None


def open_experiment(
    suite: str, tracking_uri: str | None = None, overrides: tuple[str, ...] = ()
) -> Store:
    """SUITE is a suite file (with the --set overrides it ran with) or an experiment name; a
    missing store or experiment is a ReportError (one line saying what to run)."""
    suite_file = _suite_file(suite)
    if overrides and suite_file is None:
        raise ReportError(f"--set applies to a suite file; {suite!r} is an experiment name")
    suite_config = load_suite(suite_file, overrides) if suite_file else None
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
    return Store(name, client, experiment, uri, suite_file, suite_config)


def experiment_runs(store: Store) -> list[Run]:
    """Every run of the experiment, oldest first (later runs of a cell replace earlier ones)."""
    runs = store.client.search_runs(
        [store.experiment_id], max_results=MAX_RUNS, order_by=["start_time ASC"]
    )
    if not runs:
        raise ReportError(f"experiment {store.name!r} in {store.uri} has no runs yet")
    return runs


def load_report(
    suite: str, tracking_uri: str | None = None, overrides: tuple[str, ...] = ()
) -> Report:
    """SUITE is a suite file (its cells are the report's rows) or an experiment name (every run of
    the experiment is used). With a search, the rows are the follow-up cells only: the trials
    chose the settings, so their numbers would flatter the variants they selected."""
    store = open_experiment(suite, tracking_uri, overrides)
    suite_config, client = store.suite, store.client
    runs = experiment_runs(store)
    stages = runs_by_stage(runs)
    cell_runs = stages[keys.STAGE_FINAL]

    trials = trial_cells(suite_config) if suite_config and suite_config.search else None
    parents = latest_parents(stages[keys.STAGE_SEARCH], _search_ids(suite_config, trials))
    expected, pending = None, []
    if trials is not None:
        expected, pending = follow_up_plan(suite_config, trials, parents)
    elif suite_config:
        expected = {cell.id: cell for cell in expand(suite_config)}
    cells, not_shown = _cells([_run_row(run) for run in cell_runs], expected)
    if trials is not None:
        cells = _with_pending(cells, pending, list(_trials_by_label(trials)))
    variants = list(dict.fromkeys(cells["label"]))
    # Provenance comes from the runs the tables use (else from the cells' failed attempts).
    used = [run for run in cell_runs if run.info.run_id in set(cells["run_id"].dropna())]
    finished_ids = set(cells.loc[cells["status"] == keys.STATUS_FINISHED, "run_id"])
    sources = [run for run in used if run.info.run_id in finished_ids] or used
    logged_with = _newest_first(cells) + [r.info.run_id for r in reversed(stages[keys.STAGE_TRIAL])]
    suite_text, source = _suite_text(client, logged_with, store.suite_file)
    labels = _labels_by_run(cells)
    return Report(
        suite_name=store.name,
        experiment_id=store.experiment_id,
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
        search=load_search(suite_config, trials, stages, parents),
        runs=runs,
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


ROW_COLUMNS = (
    "run_id",
    "cell_id",
    "label",
    "variant_id",
    "model",
    "seed",
    "status",
    "reason",
    "details",
    "start_time",
)


def _cells(rows: list[dict], expected: dict | None) -> tuple[pd.DataFrame, int]:
    """One row per cell: its latest finished run, else its latest attempt; with a suite file,
    exactly the suite's cells (those never run get status "not run")."""
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(ROW_COLUMNS))
    frame["finished_first"] = frame["status"] != keys.STATUS_FINISHED
    frame = frame.sort_values(["finished_first", "start_time"], ascending=[True, False])
    cells = frame.drop_duplicates("cell_id").drop(columns="finished_first")
    not_shown = 0
    if expected is not None:
        not_shown = int((~frame["cell_id"].isin(expected)).sum())
        cells = cells[cells["cell_id"].isin(expected)].set_index("cell_id")
        missing = [
            not_run_row(
                cell.variant.label,
                cell.variant.model,
                cell.seed,
                "no run in the store for this cell (run `bench run` on the suite)",
                cell_id,
                cell.variant_id,
            )
            for cell_id, cell in expected.items()
            if cell_id not in cells.index
        ]
        parts = [cells.reset_index(), pd.DataFrame(missing, columns=list(ROW_COLUMNS))]
        parts = [part for part in parts if not part.empty]  # (pandas warns on empty parts)
        if not parts:  # a search that has chosen nothing yet: no cell has an identity
            return pd.DataFrame(columns=list(ROW_COLUMNS)), not_shown
        cells = pd.concat(parts, ignore_index=True)
        # the suite's label and order, even if a run was logged under an older label
        order = {cell_id: i for i, cell_id in enumerate(expected)}
        cells["label"] = [expected[c].variant.label for c in cells["cell_id"]]
        cells = cells.sort_values("cell_id", key=lambda ids: ids.map(order))
    elif not cells.empty:
        # by configuration, not by label: an edited suite reuses labels for other settings
        cells = cells.assign(label=variant_names(cells))
        first_start = cells.groupby("label")["start_time"].transform("min")
        cells = cells.assign(_first=first_start).sort_values(["_first", "seed"])
        cells = cells.drop(columns="_first")
    return cells.reset_index(drop=True), not_shown


def not_run_row(
    label: str,
    model: str,
    seed: int,
    reason: str,
    cell_id: str | None = None,
    variant_id: str | None = None,
) -> dict:
    """A cell the report expects but the store has no run of (cell_id None: a follow-up cell of
    a search that has not chosen its setting, so the cell has no identity yet)."""
    return {
        "run_id": None,
        "cell_id": cell_id,
        "label": label,
        "variant_id": variant_id,
        "model": model,
        "seed": seed,
        "status": "not run",
        "reason": reason,
        "details": "",
        "start_time": None,
    }


# ---- the search that chose each variant's settings (suites with a `search:` block)

NOT_ENDED = "not ended"  # a trial run still running or killed: it resumes on the next bench run


@dataclass(frozen=True)
class SearchChoice:
    """What one variant's search parent run records about its choice."""

    run_id: str
    best_trial: int | None  # None: not chosen yet, or every trial failed
    values: dict[str, str]  # searched name -> the chosen value, as logged (params best.<name>)
    best_value: float | None  # the chosen trial's selection metric (metric best_<select>)
    status: str  # the parent's MLflow status: FINISHED once chosen, FAILED when all trials failed
    reason: str  # its failure_reason tag, when it failed


@dataclass
class SearchReport:
    select: str | None  # the selection metric; None when neither the suite nor a parent says
    suite: Suite | None  # the suite file's settings (None: reported by experiment name)
    labels: list[str]  # the searched variants, in the suite's order
    trials: pd.DataFrame  # one row per trial: label, trial, seed, run_id, status, value, reason
    choices: dict[str, SearchChoice]  # label -> its latest search's parent run
    trial_runs: int  # trial runs in the experiment (every attempt, every search)
    parent_runs: int
    trials_not_shown: int  # trial runs of other searches (an edited space, budget or metric)

    @property
    def config(self) -> SearchConfig | None:
        return self.suite.search if self.suite else None

    @property
    def lower_is_better(self) -> bool | None:
        return keys.selection_metrics().get(self.select) if self.select else None

    @property
    def planned(self) -> int | None:
        """Trials per variant the suite asks for (None without the suite file)."""
        return self.config.trials if self.config else None


def runs_by_stage(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by their stage tag, order kept; a run from before stages existed (no tag) is
    a cell of the suite proper, a final run."""
    grouped: dict[str, list[Run]] = {
        keys.STAGE_SEARCH: [],
        keys.STAGE_TRIAL: [],
        keys.STAGE_FINAL: [],
    }
    for run in runs:
        stage = run.data.tags.get(keys.TAG_STAGE, keys.STAGE_FINAL)
        grouped[stage if stage in grouped else keys.STAGE_FINAL].append(run)
    return grouped


def _trials_by_label(trials: list[Cell]) -> dict[str, list[Cell]]:
    """label -> its trial cells in trial order; labels in the suite's order."""
    grouped: dict[str, list[Cell]] = {}
    for cell in trials:
        grouped.setdefault(cell.variant.label, []).append(cell)
    return grouped


def _search_ids(suite: Suite | None, trials: list[Cell] | None) -> dict[str, str] | None:
    """label -> the id of the suite's search of that variant (the runner tags its parent and
    trials with it); None without a suite file."""
    if suite is None or trials is None:
        return None
    return {label: search_id(suite, cells) for label, cells in _trials_by_label(trials).items()}


def latest_parents(parents: list[Run], search_ids: dict[str, str] | None) -> dict[str, Run]:
    """label -> the parent run of its latest search (runs oldest first). With the suite's search
    ids only parents of the suite's searches count: an edited space or budget is another search,
    whose trial numbers name other settings."""
    latest: dict[str, Run] = {}
    for run in parents:
        label = run.data.tags.get(keys.TAG_LABEL, run.info.run_name or run.info.run_id)
        if search_ids is None or run.data.tags.get(keys.TAG_SEARCH_ID) == search_ids.get(label):
            latest[label] = run
    return latest


def search_choice(parent: Run, select: str | None) -> SearchChoice:
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    number = tags.get(keys.TAG_BEST_TRIAL)
    values = {
        name.removeprefix(keys.SEARCH_PARAM_PREFIX): value
        for name, value in params.items()
        if name.startswith(keys.SEARCH_PARAM_PREFIX)
    }
    best_value = metrics.get(keys.best_key(select)) if select else None
    return SearchChoice(
        run_id=parent.info.run_id,
        best_trial=int(number) if number is not None and number.isdigit() else None,
        values=values,
        best_value=best_value,
        status=parent.info.status,
        reason=tags.get(keys.TAG_FAILURE, ""),
    )


def follow_up_plan(
    suite: Suite, trials: list[Cell], parents: dict[str, Run]
) -> tuple[dict[str, Cell], list[dict]]:
    """The cells a searched suite's tables hold: the follow-up cells of each variant's chosen
    trial (cell id -> cell), and not-run rows for the follow-ups of variants whose search has
    not chosen (their settings, hence their cells, are not known yet)."""
    expected: dict[str, Cell] = {}
    pending: list[dict] = []
    for label, cells in _trials_by_label(trials).items():
        parent = parents.get(label)
        choice = search_choice(parent, None) if parent else None
        best = next((c for c in cells if choice and c.trial == choice.best_trial), None)
        if best is not None:
            expected |= {cell.id: cell for cell in follow_up_cells(suite, best)}
            continue
        reason = _no_choice_reason(choice)
        model = cells[0].variant.model
        pending += [not_run_row(label, model, seed, reason) for seed in follow_up_seeds(suite)]
    return expected, pending


def _no_choice_reason(choice: SearchChoice | None) -> str:
    """Why a variant's follow-up cells are not known: its search has not chosen a setting."""
    if choice is not None and choice.status == "FAILED":
        first = choice.reason.strip().splitlines()[0] if choice.reason.strip() else "it failed"
        return f"search ended without a choice: {first} (see Search)"
    return (
        "search not finished: no best trial chosen yet, so this follow-up cell's setting is "
        "not known (run `bench run` on the suite; see Search)"
    )


def _with_pending(cells: pd.DataFrame, pending: list[dict], labels: list[str]) -> pd.DataFrame:
    """The cells plus not-run rows of unchosen searches, variants in the suite's order (a stable
    sort keeps each variant's own seed order)."""
    if not pending:
        return cells
    parts = [cells, pd.DataFrame(pending, columns=list(ROW_COLUMNS))]
    cells = pd.concat([part for part in parts if not part.empty], ignore_index=True)
    position = {label: i for i, label in enumerate(labels)}
    cells = cells.sort_values("label", key=lambda s: s.map(position), kind="stable")
    return cells.reset_index(drop=True)


def load_search(
    suite: Suite | None,
    trials: list[Cell] | None,
    stages: dict[str, list[Run]],
    parents: dict[str, Run],
) -> SearchReport | None:
    """The search behind a report: each trial's outcome and each variant's choice. None when
    there is none to show: the suite file has no search, or (by experiment name) the store has
    no search runs."""
    trial_runs, parent_runs = stages[keys.STAGE_TRIAL], stages[keys.STAGE_SEARCH]
    if suite is not None and suite.search is None:
        return None
    if suite is None and not (trial_runs or parent_runs):
        return None
    select = suite.search.select if suite is not None else _select_of(parents)
    by_cell: dict[str, list[Run]] = {}
    for run in trial_runs:
        by_cell.setdefault(run.data.tags.get(keys.TAG_CELL_ID, run.info.run_id), []).append(run)
    if trials is not None:
        rows = [trial_row(cell, by_cell.get(cell.id, []), select) for cell in trials]
        labels = list(_trials_by_label(trials))
    else:
        rows = _trial_rows_by_name(by_cell, parents, select)
        labels = list(dict.fromkeys([row["label"] for row in rows] + list(parents)))
    shown = {row["cell_id"] for row in rows}
    position = {label: i for i, label in enumerate(labels)}
    frame = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    frame = frame.sort_values(["label", "trial"], key=_by(position)).reset_index(drop=True)
    return SearchReport(
        select=select,
        suite=suite,
        labels=labels,
        trials=frame,
        choices={label: search_choice(run, select) for label, run in parents.items()},
        trial_runs=len(trial_runs),
        parent_runs=len(parent_runs),
        trials_not_shown=sum(len(runs) for cell, runs in by_cell.items() if cell not in shown),
    )


TRIAL_COLUMNS = (
    "label",
    "trial",
    "seed",
    "cell_id",
    "run_id",
    "status",
    "value",
    "reason",
    "details",
)


def _by(position: dict[str, int]):
    """sort_values key: labels by their position, any other column as it is."""
    return lambda column: column.map(position) if column.name == "label" else column


def _select_of(parents: dict[str, Run]) -> str | None:
    """The selection metric named by the parents' best_<metric> (reported by experiment name)."""
    for run in parents.values():
        for name in run.data.metrics:
            metric = name.removeprefix("best_")
            if name != metric and metric in keys.selection_metrics():
                return metric
    return None


def trial_row(cell: Cell, runs: list[Run], select: str | None) -> dict:
    """One planned trial: its outcome by the runner's rule (bench.search.trial_results), or
    "not run" when the store has no run of it."""
    if not runs:
        row = {"run_id": None, "status": "not run", "value": None, "reason": "", "details": ""}
        identity = {"label": cell.variant.label, "trial": cell.trial, "seed": cell.seed}
        return identity | {"cell_id": cell.id} | row
    return trial_outcome(runs, select) | {"label": cell.variant.label, "trial": cell.trial}


def trial_outcome(runs: list[Run], select: str | None) -> dict:
    """A trial's outcome from its runs (oldest first), as bench.search decides it: a finished run
    gives the value of `select` (a finished run without a finite value counts as failed, the
    worst), else a failed run is the failure; a run still running or killed has not ended."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    failed = [r for r in runs if r.info.status == "FAILED"]
    run = (finished or failed or runs)[-1]
    tags = run.data.tags
    value, status, details = None, keys.STATUS_FAILED, ""
    if finished:
        value = run.data.metrics.get(select) if select else None
        if value is not None and math.isfinite(value):
            status, reason = keys.STATUS_FINISHED, ""
        else:
            value, reason = None, f"finished without a finite {select}"
    elif failed:
        details = tags.get(keys.TAG_FAILURE, "").strip()
        reason = details.splitlines()[0] if details else "failed, no reason recorded"
    else:
        status = NOT_ENDED
        reason = f"the run is {run.info.status} (still running, or its process died)"
    return {
        "label": tags.get(keys.TAG_LABEL, run.info.run_name or run.info.run_id),
        "trial": int(tags.get(keys.TAG_TRIAL, -1)),
        "seed": int(tags.get(keys.TAG_SEED, -1)),
        "cell_id": tags.get(keys.TAG_CELL_ID, run.info.run_id),
        "run_id": run.info.run_id,
        "status": status,
        "value": value,
        "reason": reason,
        "details": details if details != reason else "",
    }


def _trial_rows_by_name(
    by_cell: dict[str, list[Run]], parents: dict[str, Run], select: str | None
) -> list[dict]:
    """Trial outcomes without the suite file: every trial cell of each variant's latest search
    (by its parent's search_id; all of the variant's trials where no parent is left)."""
    rows = []
    for runs in by_cell.values():
        tags = runs[-1].data.tags
        parent = parents.get(tags.get(keys.TAG_LABEL))
        if parent and tags.get(keys.TAG_SEARCH_ID) != parent.data.tags.get(keys.TAG_SEARCH_ID):
            continue
        rows.append(trial_outcome(runs, select))
    return sorted(rows, key=lambda row: row["trial"])


def best_so_far(trials: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """label, trial, best: the best selection value among the trials up to this trial number,
    over the trials that ended (a failed trial changes nothing; NaN until one has a value).
    Whether the curve still falls at the last trial says whether more trials would have helped."""
    ended = trials[trials["status"].isin([keys.STATUS_FINISHED, keys.STATUS_FAILED])]
    rows = []
    for label, group in ended.groupby("label", sort=False):
        best = math.nan
        for trial, value in group.sort_values("trial")[["trial", "value"]].itertuples(index=False):
            if value is not None and not pd.isna(value):
                better = value < best if lower_is_better else value > best
                best = float(value) if math.isnan(best) or better else best
            rows.append((label, int(trial), best))
    return pd.DataFrame(rows, columns=["label", "trial", "best"])


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
    # recorded by runs since datasets took preprocessing and image folders (older runs lack them)
    data_rows = [
        (what, tag(key))
        for what, key in (
            ("Data source", keys.TAG_DATA_SOURCE),
            ("Preprocessing", keys.TAG_DATA_PREPROCESSING),
            ("Splits", keys.TAG_DATA_SPLIT_RULE),
        )
        if _given(tag(key))
    ]
    return [
        ("Dataset", param("dataset.name")),
        *data_rows,
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
        if any(run.data.tags.get(keys.TAG_DOMAIN_TASK) == "rotation" for run in runs):
            learned = (
                "network trained to predict the rotation (0/90/180/270 degrees) of the "
                f"dataset's unlabelled train images (rotation accuracy {accuracy})"
            )
        else:
            learned = (
                "classifier trained on the dataset's labelled train split "
                f"(test accuracy {accuracy})"
            )
        parts.append(
            f"domain: features of the harness's own {learned}; not comparable to Inception FIDs"
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
    client: MlflowClient, run_ids: list[str], suite_file: Path | None
) -> tuple[str | None, str]:
    """The suite file as logged with the runs (the first of `run_ids` that logged it), else the
    file given on the command line."""
    for run_id in run_ids:
        names = {a.path for a in client.list_artifacts(run_id)}
        if keys.ARTIFACT_SUITE in names:
            with tempfile.TemporaryDirectory() as folder:
                local = download(client, run_id, keys.ARTIFACT_SUITE, folder)
                return local.read_text(), f"logged with run {run_id}"
    if suite_file is not None:
        return suite_file.read_text(), f"{suite_file} (not logged with the runs)"
    return None, "not logged with the runs"


def _newest_first(cells: pd.DataFrame) -> list[str]:
    return list(cells.sort_values("start_time", ascending=False)["run_id"].dropna())


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
