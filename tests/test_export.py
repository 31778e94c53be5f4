"""`bench report --format csv|json`: every cell run of an experiment as one tidy table.

The store is filled by hand (no training): a search parent run, trials that finished, failed and
were killed, follow-up cells, and one run from before the stage tag existed.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner

from bench import keys, tracking
from bench.cli import main
from bench.report.export import EXPORT_COLUMNS

EXPERIMENT = "exported"
FAILURE = "RuntimeError: diverged\nTraceback (most recent call last): ..."
LR = 0.0012520653814999472  # needs all 17 digits to round-trip


def add_run(client, experiment, name, tags, params, metrics, status="FINISHED") -> str:
    run_id = client.create_run(experiment, tags=tags, run_name=name).info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for key, values in metrics.items():
        for step, value in enumerate(values):
            client.log_metric(run_id, key, value, step=step)
    client.set_terminated(run_id, status)
    return run_id


def cell_tags(label: str, seed: int, stage: str | None, trial: int | None = None) -> dict:
    tags = {
        keys.TAG_LABEL: label,
        keys.TAG_MODEL: "dcgan",
        keys.TAG_SEED: str(seed),
        keys.TAG_CELL_ID: f"{label}-{stage}-{trial}-{seed}",
        keys.TAG_VARIANT_ID: f"{label}-{trial}",
        keys.TAG_STATUS: keys.STATUS_FINISHED,
    }
    if stage is not None:
        tags[keys.TAG_STAGE] = stage
    if trial is not None:
        tags[keys.TAG_TRIAL] = str(trial)
    return tags


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    experiment = client.create_experiment(EXPERIMENT)
    parent_tags = {keys.TAG_LABEL: "gan", keys.TAG_STAGE: keys.STAGE_SEARCH, "best_trial": "0"}
    add_run(
        client,
        experiment,
        "gan-search",
        parent_tags,
        {"best.lr_g": str(LR)},
        {"best_fid_domain": [40.0]},
    )
    common = {"budget.steps": "2", "budget.epochs": "None", "optimizer.betas": "[0.5, 0.999]"}
    add_run(
        client,
        experiment,
        "gan-t0",
        cell_tags("gan", 1000, "trial", 0),
        common | {"optimizer.lr_g": str(LR), "seed": "1000", "model": "dcgan"},
        {"fid_domain": [55.0, 40.0], "train/loss_g": [1.0, 0.5]},
    )
    failed = cell_tags("gan", 1001, "trial", 1) | {
        keys.TAG_STATUS: keys.STATUS_FAILED,
        keys.TAG_FAILURE: FAILURE,
    }
    add_run(
        client,
        experiment,
        "gan-t1",
        failed,
        common | {"optimizer.lr_g": "0.01"},
        {"train/loss_g": [9.0]},
        status="FAILED",
    )
    add_run(
        client,
        experiment,
        "gan-t2",
        cell_tags("gan", 1002, "trial", 2),
        common | {"optimizer.lr_g": "0.002"},
        {},
        status="KILLED",
    )
    final = common | {"budget.steps": "4", "optimizer.lr_g": str(LR), "options.loss": "bce"}
    for seed in (0, 1):
        add_run(
            client,
            experiment,
            f"gan-s{seed}",
            cell_tags("gan", seed, "final"),
            final,
            {"fid_domain": [30.0 + seed], "recon_mse": [0.1]},
        )
    add_run(
        client,
        experiment,
        "old-s0",
        cell_tags("old", 0, None),
        {"budget.steps": "4"},
        {"fid_domain": [50.0]},
    )
    # a param and a metric of one name (bench logs none such): both kept, in two columns
    clash = cell_tags("odd", 7, "final")
    add_run(client, experiment, "odd-s7", clash, {"clash": "1"}, {"clash": [2.0]})
    return {"uri": uri, "client": client, "experiment": experiment, "folder": tmp_path}


def cell_runs(store) -> list:
    """The store's cell runs, queried directly: the runs with a cell_id tag."""
    runs = store["client"].search_runs([store["experiment"]], max_results=1000)
    return [run for run in runs if keys.TAG_CELL_ID in run.data.tags]


def export(store, output_format: str):
    out = store["folder"] / output_format
    args = ["report", EXPERIMENT, "--tracking-uri", store["uri"], "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--format", output_format])
    assert result.exit_code == 0, result.output
    return out


def test_csv_has_one_row_per_cell_run_and_a_column_per_param_and_metric(store):
    out = export(store, "csv")
    assert sorted(path.name for path in out.iterdir()) == ["runs.csv"]
    table = pd.read_csv(out / "runs.csv")
    runs = cell_runs(store)
    assert len(runs) == 7 and len(table) == len(runs)  # every status; the parent is no cell run
    assert sorted(table["run_id"]) == sorted(run.info.run_id for run in runs)
    assert list(table.columns[: len(EXPORT_COLUMNS)]) == list(EXPORT_COLUMNS)
    params = {key for run in runs for key in run.data.params}
    metrics = {key for run in runs for key in run.data.metrics}
    assert params | metrics <= set(table.columns)
    assert not {"best.lr_g", "best_fid_domain"} & set(table.columns)  # the parent's, not a cell's
    assert len(set(table.columns)) == len(table.columns)

    by_name = table.set_index("run_name")
    assert by_name.loc["gan-t1", "status"] == "FAILED"
    assert by_name.loc["gan-t1", "failure_reason"] == FAILURE  # the whole reason, newlines kept
    assert by_name.loc["gan-t2", "status"] == "KILLED"
    assert by_name.loc["old-s0", "stage"] == "final"  # no stage tag: a cell from before searches
    assert by_name["trial"].dropna().tolist() == [0, 1, 2]
    assert by_name.loc["gan-t0", "fid_domain"] == 40.0  # the latest value, not the first
    assert by_name.loc["gan-t0", "optimizer.lr_g"] == LR  # full precision
    assert math.isnan(by_name.loc["gan-t0", "budget.epochs"])  # logged None: missing
    assert math.isnan(by_name.loc["old-s0", "optimizer.lr_g"])  # never logged: missing
    assert by_name.loc["gan-s1", "seed"] == 1 and by_name.loc["gan-s1", "model"] == "dcgan"


def test_json_holds_the_same_records_as_the_csv(store):
    out = export(store, "json")
    records = json.loads((out / "runs.json").read_text())
    table = pd.read_csv(export(store, "csv") / "runs.csv")
    assert len(records) == len(table) == len(cell_runs(store))
    assert [list(record) for record in records] == [list(table.columns)] * len(records)
    assert [r["run_id"] for r in records] == table["run_id"].tolist()
    t0 = next(record for record in records if record["run_name"] == "gan-t0")
    assert t0["optimizer.lr_g"] == LR and t0["trial"] == 0 and t0["seed"] == 1000
    assert t0["budget.epochs"] is None and t0["failure_reason"] is None
    assert t0["optimizer.betas"] == "[0.5, 0.999]"  # not a number: as logged
    assert json.loads(pd.read_json(out / "runs.json").to_json(orient="records"))  # pandas reads it


def test_all_writes_the_report_and_both_exports(store):
    out = export(store, "all")
    names = {path.name for path in out.iterdir()}
    assert {"report.md", "report.html", "runs.csv", "runs.json"} <= names


def test_metrics_never_shadow_params(store):
    table = pd.read_csv(export(store, "csv") / "runs.csv").set_index("run_name")
    assert table.loc["odd-s7", "clash"] == 1 and table.loc["odd-s7", "metric.clash"] == 2.0
    assert math.isnan(table.loc["gan-t0", "clash"])
