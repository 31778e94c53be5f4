"""From the MLflow store to a Report: `load_report` reads one suite's experiment (the report needs
nothing but the tracking store): one row per cell with its final metrics, the loss and FID
histories, provenance from the runs' tags and params, the search if there was one, and the cells
that failed or never ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from bench import keys, tracking
from bench.metrics.table import Metric, metric_specs
from bench.report.cells import _cells, _newest_first, _run_row
from bench.report.provenance import (
    _labels_by_run,
    _suite_text,
    _variant_ids,
    _variant_options,
    optimizer_settings,
    provenance,
)
from bench.report.search import (
    SearchReport,
    _search_ids,
    _trials_by_label,
    _with_pending,
    follow_up_plan,
    latest_parents,
    load_search,
    runs_by_stage,
)
from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.suite.schema import ClaimConfig, Suite, SuiteError
from bench.suite.search import trial_cells

MAX_RUNS = 50_000


class ReportError(SuiteError):
    """Nothing to report (no store, no experiment, no runs); str() is the line to print."""


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
    claims: list = field(default_factory=list)  # ClaimConfig: the hypotheses to test
    claims_source: str = ""  # where they were declared (before the runs, or after)

    @property
    def finished(self) -> pd.DataFrame:
        return self.cells[self.cells["status"] == keys.STATUS_FINISHED]

    @property
    def unfinished(self) -> pd.DataFrame:
        """Cells without a finished run: failed, never run, interrupted, or still running."""
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
    claims, claims_source = _claims(store, suite_text, source)
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
        claims=claims,
        claims_source=claims_source,
    )


def declared_claims(suite_text: str | None) -> list[ClaimConfig]:
    """The `claims:` of a suite file's text (none when there is no text or no claims)."""
    if not suite_text:
        return []
    try:
        raw = yaml.safe_load(suite_text)
        return [ClaimConfig.model_validate(c) for c in (raw or {}).get("claims", [])]
    except (yaml.YAMLError, ValidationError, AttributeError):
        return []  # a suite text bench validate would refuse: nothing declared to test


def _claims(store: Store, suite_text: str | None, source: str) -> tuple[list, str]:
    """The claims to test and where they were declared: the suite file given, else the one
    logged with the runs. Claims the logged file lacks were added after the runs: said so."""
    logged = declared_claims(suite_text) if source.startswith("logged") else []
    if store.suite is None:
        return logged, "declared in the suite file logged with the runs"
    given = store.suite.claims
    if given == logged:
        return given, "declared in the suite file logged with the runs, before they ran"
    return given, (
        f"read from {store.suite_file}; the suite file logged with the runs does not declare "
        "them all, so some were declared after the runs"
    )


def _suite_file(suite: str) -> Path | None:
    path = Path(suite)
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or "/" in suite:
        load_suite(path)  # raises the usual one-line "cannot read suite file"
    return None


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


def generated_at() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
