"""The runs of an experiment as cells: one row per cell (its latest finished run, else its latest
attempt), with the cells a suite file expects but the store has no run of, and display names
that tell two configurations of one label apart.
"""

from __future__ import annotations

import pandas as pd
from mlflow.entities import Run

from bench import keys, tracking

UNTAGGED = "untagged"  # name suffix of runs logged before the variant_id tag existed


STATUS_INTERRUPTED = "interrupted"  # a KILLED run: a missing seed, never a failed one
ID_CHARS = 6  # characters of a variant_id that tell two configurations of one label apart


def _run_row(run: Run) -> dict:
    tags, info = run.data.tags, run.info
    reason = tags.get(keys.TAG_FAILURE, "")
    if tags.get(keys.TAG_STATUS) == keys.STATUS_FINISHED and info.status == "FINISHED":
        status = keys.STATUS_FINISHED
    elif info.status == "KILLED":
        # stopped from outside (a signal, Ctrl-C, a dead worker's lease): no outcome of the model,
        # and `bench run` resumes it, so the cell has no result yet rather than a failed seed
        status = STATUS_INTERRUPTED
        reason = f"no result yet: {reason or 'the run was killed'} (`bench run` resumes it)"
    elif tags.get(keys.TAG_STATUS) == keys.STATUS_FAILED or info.status == "FAILED":
        status = keys.STATUS_FAILED
    else:
        status = "unfinished"
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
        "diverged": info.status == "FAILED" and tracking.diverged(run),
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
    frame["diverged"] = frame.get("diverged", pd.Series(False, index=frame.index)).fillna(False)
    frame["finished_first"] = frame["status"] != keys.STATUS_FINISHED
    frame = frame.sort_values(["finished_first", "start_time"], ascending=[True, False])
    cells = frame.drop_duplicates("cell_id").drop(columns="finished_first")
    # a divergence that did not recur when the cell ran again still counts against its variant
    diverged_runs = frame.groupby("cell_id")["diverged"].sum()
    cells = cells.assign(
        diverged_attempts=(cells["cell_id"].map(diverged_runs).fillna(0) - cells["diverged"])
        .clip(lower=0)
        .astype(int)
    )
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


def _newest_first(cells: pd.DataFrame) -> list[str]:
    return list(cells.sort_values("start_time", ascending=False)["run_id"].dropna())
