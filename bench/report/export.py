"""Every cell run of an experiment as one tidy table (runs.csv / runs.json), for pandas.

One row per run that trained a cell (search trials and final cells, in every status: finished,
failed, killed, still running), never the search parent runs, which train nothing. Columns: who
the run is (EXPORT_COLUMNS, from its info and tags), then every param under its own key (the
flattened resolved configuration: budget.steps, optimizer.lr_g, options.recon, ...), then every
metric under its own key with its latest value. A report's tables pick runs and average them;
this table picks nothing, so a researcher can redo any of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.entities import Run

from bench import keys
from bench.metrics.table import metric_specs

FORMATS = ("csv", "json")
FILE_NAME = "runs"
EXPORT_COLUMNS = (
    "run_id",
    "run_name",
    "stage",
    "trial",
    "label",
    "model",
    "seed",
    "cell_id",
    "variant_id",
    "status",
    "failure_reason",
)
METRIC_PREFIX = "metric."  # only for a metric whose key is already a column (none in bench)
UNSET = "None"  # how MLflow holds a param whose value was None (str(None))


def cell_runs(runs: list[Run]) -> list[Run]:
    """The runs that trained a cell: those with a cell_id tag (parent runs have none)."""
    return [run for run in runs if keys.TAG_CELL_ID in run.data.tags]


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per cell run, oldest first; params typed column by column (numbers where every
    value of the column is one, missing where the run logged None or lacks the param)."""
    runs = sorted(cell_runs(runs), key=lambda run: run.info.start_time or 0)
    param_keys = sorted({key for run in runs for key in run.data.params} - set(EXPORT_COLUMNS))
    logged = {key for run in runs for key in run.data.metrics}
    # the metric table's order (bench/metrics/table.py), then any other metric (losses, ...)
    in_table = [m.key for m in metric_specs() if m.key in logged]
    metric_keys = in_table + sorted(logged - set(in_table))
    taken = set(EXPORT_COLUMNS) | set(param_keys)
    columns = list(EXPORT_COLUMNS) + param_keys + [_metric_column(k, taken) for k in metric_keys]
    frame = pd.DataFrame([run_record(run, taken) for run in runs], columns=columns)
    for key in ("trial", "seed"):
        frame[key] = frame[key].astype("Int64")  # whole numbers; no trial on a final cell
    for key in param_keys:
        frame[key] = _typed(frame[key])
    return frame


def run_record(run: Run, taken: set[str]) -> dict:
    """A run as one flat record: identity from its info and tags, then params, then metrics
    (`taken`: column names a metric must not reuse). The params named like an identity column
    (model, seed) hold the same value as its tag; they fill the column where the tag is absent."""
    tags, info, params = run.data.tags, run.info, run.data.params
    trial, seed = tags.get(keys.TAG_TRIAL), tags.get(keys.TAG_SEED, params.get("seed"))
    identity = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "stage": tags.get(keys.TAG_STAGE, keys.STAGE_FINAL),  # untagged: from before the search
        "trial": int(trial) if trial is not None else None,
        "label": tags.get(keys.TAG_LABEL),
        "model": tags.get(keys.TAG_MODEL, params.get("model")),
        "seed": int(seed) if seed is not None else None,
        "cell_id": tags.get(keys.TAG_CELL_ID),
        "variant_id": tags.get(keys.TAG_VARIANT_ID),
        "status": info.status,
        "failure_reason": tags.get(keys.TAG_FAILURE),
    }
    settings = {key: value for key, value in params.items() if key not in identity}
    measured = {_metric_column(k, taken): v for k, v in run.data.metrics.items()}
    return identity | settings | measured


def _metric_column(key: str, taken: set[str]) -> str:
    """A metric's column: its key, unless a param or identity column already has that name."""
    return METRIC_PREFIX + key if key in taken else key


def _typed(values: pd.Series) -> pd.Series:
    """MLflow params are strings: "None" becomes missing, and a column whose every value reads
    as a number becomes numeric; any other column (lists, names, booleans) stays as logged."""
    values = values.where(values != UNSET)
    try:
        return pd.to_numeric(values)
    except (ValueError, TypeError):
        return values


def write_runs(runs: list[Run], folder: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """runs.csv and/or runs.json (a list of records, the same keys as the CSV's columns) in
    `folder`; returns the files written."""
    frame = runs_table(runs)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if "csv" in formats:
        path = folder / f"{FILE_NAME}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
    if "json" in formats:
        path = folder / f"{FILE_NAME}.json"
        path.write_text(json.dumps(records(frame), indent=1, allow_nan=False) + "\n")
        written.append(path)
    return written


def records(frame: pd.DataFrame) -> list[dict]:
    """The rows as plain Python records, missing values as None (JSON null) and floats at full
    precision (pandas' own to_json rounds them to 15 digits)."""
    plain = frame.astype(object).where(frame.notna(), None)
    return [
        {key: value.item() if hasattr(value, "item") else value for key, value in row.items()}
        for row in plain.to_dict(orient="records")
    ]
