"""A search as the report shows it: each variant's parent run and chosen trial, every trial's
outcome, the follow-up cells still pending, and the best-so-far curve over trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from mlflow.entities import Run

from bench import keys, tracking
from bench.metrics import table
from bench.report.cells import ROW_COLUMNS, not_run_row
from bench.suite.expand import Cell
from bench.suite.schema import SearchConfig, Suite
from bench.suite.search import follow_up_cells, follow_up_seeds, search_id

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
        return table.selection_metrics().get(self.select) if self.select else None

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
    """label -> the parent run of its latest search (runs oldest first), elected parents only.
    With the suite's search ids only parents of the suite's searches count: an edited space or
    budget is another search, whose trial numbers name other settings."""
    latest: dict[str, Run] = {}
    for run in parents:
        if not tracking.is_held(run):
            continue  # a worker's parent that lost the election, or never finished it
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
            if name != metric and metric in table.selection_metrics():
                return metric
    return None


def trial_row(cell: Cell, runs: list[Run], select: str | None) -> dict:
    """One planned trial: its outcome by the runner's rule (bench.run.search.trial_results), or
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
