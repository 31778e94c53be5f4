"""Part 3 of vaegan_vs_pythae.py: the harness's own cost on a suite run in-process by
bench.run.runner.run_suite into a throw-away MLflow store: overhead = (wall - sum train_seconds -
sum eval_seconds) / wall, with the seconds read back from the store, split into the time outside
the cells (store, data, domain classifier, summary) and inside them (model build, checkpoints,
artifacts, tracking)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from figures import say, section, table

from bench import keys
from bench.data import DatasetNotFound
from bench.suite.load import load_suite
from bench.suite.schema import SuiteError

TARGET_OVERHEAD = 0.05


def read_cell_timings(uri: str, experiment_name: str) -> list[list]:
    """[label, status, train s, eval s, cell s] per run of the experiment. eval_seconds is summed
    over its history (evaluations during training log it too, and are excluded from
    train_seconds)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    rows = []
    for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"]):
        metrics = run.data.metrics
        evals = client.get_metric_history(run.info.run_id, keys.EVAL_SECONDS)
        rows.append(
            [
                run.data.tags.get(keys.TAG_LABEL, run.info.run_name),
                run.data.tags.get(keys.TAG_STATUS, run.info.status.lower()),
                metrics.get(keys.TRAIN_SECONDS, 0.0),
                sum(m.value for m in evals),
                metrics.get(keys.CELL_SECONDS, 0.0),
            ]
        )
    return rows


def harness_overhead(path: str, device: str) -> None:
    section(f"3. harness overhead: {path} run in-process by bench.runner.run_suite")
    # imported here: bench.runner needs MLflow, parts 1 and 2 do not (a GPU machine may have only
    # torch, pydantic and pythae)
    from bench.run.runner import run_suite

    try:
        suite = load_suite(path)
    except SuiteError as err:
        print(f"suite skipped: {err}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        started = time.perf_counter()
        try:
            summary = run_suite(
                suite,
                tracking_uri=uri,
                device=device,
                progress=False,
                echo=lambda line: print(f"  | {line}"),
                suite_text=Path(path).read_text(),
                checkpoint_dir=Path(tmp) / "checkpoints",
            )
        except (DatasetNotFound, SuiteError) as err:
            print(f"suite skipped: {err}")
            return
        wall = time.perf_counter() - started
        rows = read_cell_timings(uri, suite.name)
    print_overhead(rows, wall, summary.ok)


def print_overhead(rows: list[list], wall: float, ok: bool) -> None:
    train_s, eval_s, cell_s = (sum(row[i] for row in rows) for i in (2, 3, 4))
    shown = [[label, status, f"{t:.2f}", f"{e:.2f}", f"{c:.2f}"] for label, status, t, e, c in rows]
    shown.append(["total", "", f"{train_s:.2f}", f"{eval_s:.2f}", f"{cell_s:.2f}"])
    print(table(["cell", "status", "train_seconds", "eval_seconds", "cell_seconds"], shown))
    overhead = wall - train_s - eval_s
    share = overhead / wall
    verdict = "met" if share < TARGET_OVERHEAD else "NOT met"
    print(f"suite wall time {wall:.2f} s" + ("" if ok else " (not every cell finished)"))
    print(
        f"overhead = wall - sum train - sum eval = {overhead:.2f} s = {share:.1%} of the wall "
        f"time (target < {TARGET_OVERHEAD:.0%}: {verdict})"
    )
    say(
        f"outside the cells (store, data, domain classifier, summary): {wall - cell_s:.2f} s "
        f"({(wall - cell_s) / wall:.1%}); inside the cells (model build, checkpoints, artifacts, "
        f"tracking): {cell_s - train_s - eval_s:.2f} s ({(cell_s - train_s - eval_s) / wall:.1%})",
        indent="  ",
    )
