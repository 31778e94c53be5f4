"""Runs of cells: started (tagged, params, dataset inputs), reopened to resume, logged to in
batches, and ended (finished, failed or killed with a reason); search parent runs; the logged model.
"""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from bench import keys
from bench.suite import plugins
from bench.suite.expand import Cell
from bench.tracking import worker_identity
from bench.tracking.inputs import dataset_inputs, log_inputs
from bench.tracking.store import TrackingError

if TYPE_CHECKING:
    from bench.data.images import ImageData


MAX_BATCH = 900  # MLflow accepts at most 1000 metrics / 100 params per log_batch call


def reopen(client: MlflowClient, run_id: str) -> None:
    """Mark an interrupted run as running again, without the status of its interruption."""
    client.update_run(run_id, status="RUNNING")
    tags = client.get_run(run_id).data.tags
    for key in (keys.TAG_STATUS, keys.TAG_FAILURE):
        if key in tags:
            client.delete_tag(run_id, key)


def last_logged_step(client: MlflowClient, run_id: str) -> int:
    """The largest step any metric of the run was logged at (0 when none): a resumed run logs only
    later steps, so that its histories hold each step once."""
    names = client.get_run(run_id).data.metrics
    steps = [m.step for name in names for m in client.get_metric_history(run_id, name)]
    return max(steps, default=0)


def start_cell_run(
    client: MlflowClient,
    experiment: str,
    cell: Cell,
    extra_tags: dict[str, str] | None = None,
    data: ImageData | None = None,
) -> str:
    """A new run for the cell: its tags, its resolved configuration as params and, given the
    data, its training and evaluation splits as dataset inputs."""
    run_id = create_cell_run(client, experiment, cell, extra_tags)
    describe_cell_run(client, run_id, cell, data)
    return run_id


def create_cell_run(
    client: MlflowClient, experiment: str, cell: Cell, extra_tags: dict[str, str] | None = None
) -> str:
    """A new RUNNING run of the cell with its tags only (a claim: bench/tracking/claims.py)."""
    tags = {
        **(extra_tags or {}),
        keys.TAG_STAGE: keys.STAGE_TRIAL if cell.trial is not None else keys.STAGE_FINAL,
        **dict(cell.run_tags),
        keys.TAG_SUITE: cell.suite,
        keys.TAG_CELL_ID: cell.id,
        keys.TAG_VARIANT_ID: cell.variant_id,
        keys.TAG_MODEL: cell.variant.model,
        keys.TAG_LABEL: cell.variant.label,
        keys.TAG_VARIANT: cell.variant.label,
        keys.TAG_SEED: str(cell.seed),
    }
    if cell.trial is not None:
        tags[keys.TAG_TRIAL] = str(cell.trial)
    return client.create_run(experiment, tags=tags, run_name=cell.run_name).info.run_id


def describe_cell_run(
    client: MlflowClient, run_id: str, cell: Cell, data: ImageData | None = None
) -> None:
    """The cell's resolved configuration as params, the source of its model's plugin (if any)
    and, given the data, its splits as inputs."""
    params = [Param(k, str(v)) for k, v in sorted(flatten(cell.config()).items())]
    for i in range(0, len(params), 90):
        client.log_batch(run_id, params=params[i : i + 90])
    plugin = plugins.plugin_of(cell.variant.model)
    if plugin is not None:
        client.log_text(run_id, plugin.source, f"{keys.ARTIFACT_PLUGINS}/{plugin.file_name}")
    if data is not None:
        log_inputs(client, run_id, dataset_inputs(data, cell))


def log_model(
    client: MlflowClient,
    run_id: str,
    code_path: str,
    artifacts: dict[str, str],
    signature,
    pip_requirements: list[str],
    step: int,
) -> None:
    """Log a pyfunc model from code (`code_path` calls mlflow.models.set_model) as the run's
    logged model `model`, loadable as runs:/<run id>/model; the run's metrics at `step` are
    linked to it (MLflow's Models tab shows them)."""
    experiment = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment, name=keys.ARTIFACT_MODEL, source_run_id=run_id)
    # Model.log writes through a client of the global tracking URI: make it this client's store
    mlflow.set_tracking_uri(client.tracking_uri)
    with _quiet_model_logging():
        Model.log(
            artifact_path=None,
            name=keys.ARTIFACT_MODEL,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            step=step,
            python_model=code_path,
            artifacts=artifacts,
            signature=signature,
            pip_requirements=pip_requirements,
        )


@contextmanager
def _quiet_model_logging() -> Iterator[None]:
    """Without MLflow's chatter at every logged model: a progress bar per file it copies, the
    advice to add an input example, and a note that pip is absent (uv environments have none)."""
    progress_bar = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    previous_bar = os.environ.get(progress_bar)
    # the environment notes, and uv_utils' "Detected uv project ... Copied uv.lock" lines
    chatty = [logging.getLogger(f"mlflow.utils.{name}") for name in ("environment", "uv_utils")]
    previous_levels = [log.level for log in chatty]
    os.environ[progress_bar] = "false"
    for log in chatty:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for log, level in zip(chatty, previous_levels, strict=True):
            log.setLevel(level)
        if previous_bar is None:
            os.environ.pop(progress_bar, None)
        else:
            os.environ[progress_bar] = previous_bar


def log_metrics(client: MlflowClient, run_id: str, values: dict[str, float], step: int = 0):
    timestamp = mlflow.utils.time.get_current_time_millis()
    metrics = [Metric(k, float(v), timestamp, step) for k, v in values.items()]
    for i in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_BATCH])


def set_tag(client: MlflowClient, run_id: str, key: str, value: str) -> None:
    client.set_tag(run_id, key, value[:4000])


def finish(client: MlflowClient, run_id: str) -> None:
    client.log_batch(run_id, tags=[RunTag(keys.TAG_STATUS, keys.STATUS_FINISHED)])
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def fail(
    client: MlflowClient, run_id: str, reason: str, killed: bool = False, kind: str | None = None
) -> None:
    tags = [RunTag(keys.TAG_STATUS, keys.STATUS_FAILED), RunTag(keys.TAG_FAILURE, reason[:4000])]
    if kind is not None:
        tags.append(RunTag(keys.TAG_FAILURE_KIND, kind))
    client.log_batch(run_id, tags=tags)
    status = RunStatus.KILLED if killed else RunStatus.FAILED
    client.set_terminated(run_id, RunStatus.to_string(status))


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{"budget": {"lr_g": 2e-4}} -> {"budget.lr_g": 2e-4}."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, name + ".")
        else:
            flat[name] = value
    return flat


def diverged(run) -> bool:
    """Whether a failed run diverged (an outcome), also for runs from before the kind tag."""
    kind = run.data.tags.get(keys.TAG_FAILURE_KIND)
    if kind is not None:
        return kind == keys.FAILURE_DIVERGED
    return run.data.tags.get(keys.TAG_FAILURE, "").startswith("diverged at step")


PARENT_ATTEMPTS = 8  # elections of a search parent before giving up (each a random pause apart)
MARKED_PATIENCE = 60.0  # seconds a worker waits for another worker's marked parent to be decided


def search_parent_run(
    client: MlflowClient,
    experiment: str,
    suite: str,
    label: str,
    search_id: str,
    new: bool,
    settle: float = 0.0,
) -> str:
    """The parent run of one variant's search (its trials nest under it): the existing one of
    this search unless `new` (--rerun), else a fresh one.

    Workers that start the search at once elect one parent the way cells elect a holder
    (bench/tracking/claims.py), flag then check, with no clock deciding: each creates its parent
    as a candidate, waits `settle`, and withdraws (deletes it) when another parent is marked or
    held; else it marks its own, lists again, and withdraws if another one is marked or held too.
    Of two workers that both marked, at least one sees the other's mark, so at most one passes its
    check; only that one sets its parent held, and only a held parent is ever joined. (A joiner
    that took any marked parent could pick one that then withdraws: the CI failure this rule
    fixes.) While a parent is marked the others wait for its outcome; when both withdrew, each
    tries again after a random pause. A parent from before this election (no claim tag) is held.
    A parent left marked by a worker that is provably a dead process of this machine is withdrawn
    on its behalf (it can never be held); one of another machine stops the search after
    MARKED_PATIENCE with its run id.
    """
    tags = {
        keys.TAG_SUITE: suite,
        keys.TAG_LABEL: label,
        keys.TAG_VARIANT: label,
        keys.TAG_STAGE: keys.STAGE_SEARCH,
        keys.TAG_SEARCH_ID: search_id,
        keys.TAG_WORKER: worker_identity.worker_id(),
        keys.TAG_WORKER_PID_SPACE: worker_identity.pid_space(),
    }
    if new:  # one worker's --rerun: a fresh parent, held at once
        tags[keys.TAG_CLAIM] = keys.CLAIM_HELD
        return client.create_run(experiment, tags=tags, run_name=f"{label}-search").info.run_id
    attempts, waited_since = 0, None
    while attempts < PARENT_ATTEMPTS:
        parents = _search_parents(client, experiment, search_id)
        held = [run for run in parents if is_held(run)]
        if held:
            return held[-1].info.run_id
        marked = [run for run in parents if _claim_state(run) == keys.CLAIM_MARKED]
        orphans = [run for run in marked if worker_identity.process_gone(run)]
        if orphans:  # their workers died between mark and check: withdraw for them, list again
            for run in orphans:  # deleting a deleted run is no error: two workers may both do it
                client.delete_run(run.info.run_id)
            continue
        if marked:  # another worker is between its mark and its check: wait for its outcome
            waited_since = waited_since if waited_since is not None else time.monotonic()
            if time.monotonic() - waited_since > MARKED_PATIENCE:
                raise TrackingError(_stuck_message(label, marked[0].info.run_id))
            time.sleep(random.uniform(0.0, settle + 0.1))
            continue
        waited_since, attempts = None, attempts + 1
        candidate = tags | {keys.TAG_CLAIM: keys.CLAIM_CANDIDATE}
        mine = client.create_run(experiment, tags=candidate, run_name=f"{label}-search").info.run_id
        time.sleep(settle)
        if not _rivals(client, experiment, search_id, mine):
            client.set_tag(mine, keys.TAG_CLAIM, keys.CLAIM_MARKED)
            if not _rivals(client, experiment, search_id, mine):
                client.set_tag(mine, keys.TAG_CLAIM, keys.CLAIM_HELD)
                return mine
        client.delete_run(mine)
        time.sleep(random.uniform(0.0, 2 * settle + 0.1))
    raise TrackingError(
        f"{label}: no search parent run was elected in {PARENT_ATTEMPTS} tries (workers kept "
        "withdrawing at once); rerun the same command"
    )


def _claim_state(run) -> str:
    """The election state of a cell's claim or a search parent: candidate, marked or held; one
    from before elections (no tag: its worker decided alone) is held."""
    return run.data.tags.get(keys.TAG_CLAIM, keys.CLAIM_HELD)


def is_held(run) -> bool:
    """A claim or search parent that won its election (or never had one)."""
    return _claim_state(run) == keys.CLAIM_HELD


def _rivals(client: MlflowClient, experiment: str, search_id: str, mine: str) -> list:
    """The other parents of the search that are marked or held (a candidate is no rival)."""
    return [
        run
        for run in _search_parents(client, experiment, search_id)
        if run.info.run_id != mine and _claim_state(run) != keys.CLAIM_CANDIDATE
    ]


def _stuck_message(label: str, run_id: str) -> str:
    return (
        f"{label}: search parent run {run_id} stayed marked for {MARKED_PATIENCE:g} s (its worker, "
        f"not provably a process of this machine, stopped between two writes of the election); "
        f"delete it (`mlflow runs delete --run-id {run_id}`, or in the MLflow UI) and rerun the "
        "same command"
    )


def _search_parents(client: MlflowClient, experiment: str, search_id: str) -> list:
    """The parent runs of one search, oldest first."""
    runs = client.search_runs(
        [experiment],
        filter_string=(
            f"tags.{keys.TAG_SEARCH_ID} = '{search_id}' "
            f"and tags.{keys.TAG_STAGE} = '{keys.STAGE_SEARCH}'"
        ),
    )
    return sorted(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))
