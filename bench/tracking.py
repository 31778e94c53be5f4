"""MLflow tracking: one experiment per suite, one run per cell (see bench/keys.py for the keys).

The default store is MLflow's own local default (`sqlite:///mlflow.db` with artifacts in
./mlruns, relative to the working directory), so `mlflow ui` started in the same folder shows the
runs. `--tracking-uri` or MLFLOW_TRACKING_URI point elsewhere (a server, another file).
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import keys
from .suite import Cell

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_BATCH = 900  # MLflow accepts at most 1000 metrics / 100 params per log_batch call
SERVER_PROBE_SECONDS = 10  # a tracking server that does not answer within this is unreachable


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written; str() names the URI."""


def resolve_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def absolute_uri(uri: str) -> str:
    """The same store named independently of the working directory (other processes, Ray workers
    started elsewhere): relative SQLite and file paths made absolute; servers unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri:  # a plain folder: MLflow's file store
        return str(Path(uri).resolve())
    return uri


def connect(uri: str | None = None) -> MlflowClient:
    """A client for the store, checked to answer before anything is written to it. A server that
    does not answer fails within SERVER_PROBE_SECONDS instead of after MLflow's minutes of
    retries."""
    uri = resolve_uri(uri)
    if uri.startswith(("http://", "https://")):
        _probe_server(uri)
    try:
        client = MlflowClient(tracking_uri=uri)  # opens (and creates) a local database already
        client.search_experiments(max_results=1)
    except Exception as err:  # unwritable file, not an MLflow server, bad URI
        raise _store_error(uri, err) from None
    mlflow.set_tracking_uri(uri)
    return client


def _probe_server(uri: str) -> None:
    import requests  # MLflow's own HTTP client library, so proxies are honoured the same way

    try:
        requests.head(uri, timeout=SERVER_PROBE_SECONDS, allow_redirects=False)
    except requests.Timeout:
        raise _store_error(uri, f"no answer within {SERVER_PROBE_SECONDS} s") from None
    except requests.RequestException:  # any HTTP answer, even an error status, is fine
        raise _store_error(uri, "no server answers there") from None


def _store_error(uri: str, err: Exception | str) -> TrackingError:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    return TrackingError(
        f"tracking store {uri} cannot be used: {message[:300]}; "
        "check --tracking-uri / MLFLOW_TRACKING_URI"
    )


def experiment_id(client: MlflowClient, suite_name: str, create: bool = True) -> str | None:
    try:
        experiment = client.get_experiment_by_name(suite_name)
        if experiment is not None:
            return experiment.experiment_id
        if not create:
            return None
        return client.create_experiment(
            suite_name, artifact_location=_artifact_location(client.tracking_uri, suite_name)
        )
    except Exception as err:  # connection refused, unwritable file, bad URI
        raise _store_error(client.tracking_uri, err) from None


def _artifact_location(uri: str, suite_name: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database file (<db folder>/mlruns/),
    which for the default store is MLflow's own default (./mlruns); servers choose themselves."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "mlruns" / suite_name).as_uri()


def finished_run(client: MlflowClient, experiment: str, cell_id: str):
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.{keys.TAG_CELL_ID} = '{cell_id}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0] if runs else None


def running_runs(client: MlflowClient, experiment: str, cell_id: str) -> list:
    """Runs of the cell still marked RUNNING: their process was killed or is still going."""
    return client.search_runs(
        [experiment],
        filter_string=f"tags.{keys.TAG_CELL_ID} = '{cell_id}' and attributes.status = 'RUNNING'",
    )


def resumable(client: MlflowClient, experiment: str, cell_id: str, run_id: str) -> bool:
    """Whether run_id is an interrupted (RUNNING or KILLED) run of this cell in this experiment:
    the run a local checkpoint of the cell may continue. Failed runs (diverged, raised) are not
    resumed: they would fail the same way."""
    try:
        run = client.get_run(run_id)
    except MlflowException:  # a checkpoint from another store, or the run was deleted for good
        return False
    return (
        run.info.experiment_id == experiment
        and run.info.lifecycle_stage == "active"
        and run.data.tags.get(keys.TAG_CELL_ID) == cell_id
        and run.info.status in ("RUNNING", "KILLED")
    )


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
    client: MlflowClient, experiment: str, cell: Cell, extra_tags: dict[str, str] | None = None
) -> str:
    tags = {
        **(extra_tags or {}),
        keys.TAG_STAGE: keys.STAGE_TRIAL if cell.trial is not None else keys.STAGE_FINAL,
        **dict(cell.run_tags),
        keys.TAG_SUITE: cell.suite,
        keys.TAG_CELL_ID: cell.id,
        keys.TAG_VARIANT_ID: cell.variant_id,
        keys.TAG_MODEL: cell.variant.model,
        keys.TAG_LABEL: cell.variant.label,
        keys.TAG_SEED: str(cell.seed),
    }
    if cell.trial is not None:
        tags[keys.TAG_TRIAL] = str(cell.trial)
    run = client.create_run(experiment, tags=tags, run_name=cell.run_name)
    params = [Param(k, str(v)) for k, v in sorted(flatten(cell.config()).items())]
    for i in range(0, len(params), 90):
        client.log_batch(run.info.run_id, params=params[i : i + 90])
    return run.info.run_id


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


def fail(client: MlflowClient, run_id: str, reason: str, killed: bool = False) -> None:
    tags = [RunTag(keys.TAG_STATUS, keys.STATUS_FAILED), RunTag(keys.TAG_FAILURE, reason[:4000])]
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


def failed_run(client: MlflowClient, experiment: str, cell_id: str):
    """The cell's latest run that failed (raised, diverged, lost its worker twice): for a search
    trial, an ended outcome (the worst value), not a run to resume."""
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.{keys.TAG_CELL_ID} = '{cell_id}' and attributes.status = 'FAILED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def search_parent_run(
    client: MlflowClient, experiment: str, suite: str, label: str, search_id: str, new: bool
) -> str:
    """The parent run of one variant's search (its trials nest under it): the existing one of
    this search unless `new` (--rerun), else a fresh one."""
    if not new:
        runs = client.search_runs(
            [experiment],
            filter_string=(
                f"tags.{keys.TAG_SEARCH_ID} = '{search_id}' "
                f"and tags.{keys.TAG_STAGE} = '{keys.STAGE_SEARCH}'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            return runs[0].info.run_id
    tags = {
        keys.TAG_SUITE: suite,
        keys.TAG_LABEL: label,
        keys.TAG_STAGE: keys.STAGE_SEARCH,
        keys.TAG_SEARCH_ID: search_id,
    }
    return client.create_run(experiment, tags=tags, run_name=f"{label}-search").info.run_id
