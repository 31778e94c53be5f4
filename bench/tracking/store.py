"""MLflow tracking: one experiment per suite, one run per cell (see bench/keys.py for the keys).

The default store is MLflow's own local default (`sqlite:///mlflow.db` with artifacts in
./mlruns, relative to the working directory), so `mlflow ui` started in the same folder shows the
runs. `--tracking-uri` or MLFLOW_TRACKING_URI point elsewhere (a server, another file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench import keys
from bench.tracking.notes import HEADLINE_METRICS

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
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
    """The suite's experiment; with `create`, made when missing, and given (or brought up to
    date with) the harness's experiment tags (`experiment_tags`)."""
    try:
        experiment = client.get_experiment_by_name(suite_name)
        if experiment is not None:
            if create:  # an experiment made by an older harness, or a changed view
                for key, value in experiment_tags().items():
                    if experiment.tags.get(key) != value:
                        client.set_experiment_tag(experiment.experiment_id, key, value)
            return experiment.experiment_id
        if not create:
            return None
        try:
            return client.create_experiment(
                suite_name,
                artifact_location=_artifact_location(client.tracking_uri, suite_name),
                tags=experiment_tags(),
            )
        except MlflowException as err:  # another worker made it between our look and our create
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(suite_name).experiment_id
    except Exception as err:  # connection refused, unwritable file, bad URI
        raise _store_error(client.tracking_uri, err) from None


def experiment_tags() -> dict[str, str]:
    """Tags of every suite's experiment: its kind, model training (MLflow 3 UIs that read the tag
    open it on the runs table rather than on the GenAI overview), and the runs-table view."""
    return {
        keys.TAG_EXPERIMENT_KIND: keys.EXPERIMENT_KIND_TRAINING,
        keys.TAG_SHARED_VIEW_PREFIX + keys.RUNS_VIEW: runs_view(),
    }


def runs_view() -> str:
    """The runs table as the harness suggests reading it, in the form of MLflow's UI "shared view
    state" (JSON): runs grouped by variant (its seeds together, with their average), columns
    the dataset and the headline metrics, newest first."""
    columns = ["attributes.`Dataset`", *(f"metrics.`{key}`" for key, _ in HEADLINE_METRICS)]
    view = {
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "columnOrder": columns,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": keys.TAG_VARIANT}],
        },
    }
    return json.dumps(view)


def runs_view_url(base_url: str, experiment: str) -> str:
    """The UI page of an experiment's runs table, in MLflow's "Model training" mode, with the
    harness's view (`runs_view`)."""
    return (
        f"{base_url}/#/experiments/{experiment}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={keys.RUNS_VIEW}"
    )


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


def failed_run(client: MlflowClient, experiment: str, cell_id: str):
    """The cell's latest run that failed (raised, diverged, lost its worker twice): for a search
    trial, an ended outcome (the worst value), not a run to resume."""
    return _newest_run(client, experiment, cell_id, "FAILED")


def latest_run(client: MlflowClient, experiment: str, cell_id: str):
    """The cell's most recent run, whatever its status (None: never run)."""
    return _newest_run(client, experiment, cell_id)


def _newest_run(client: MlflowClient, experiment: str, cell_id: str, status: str | None = None):
    where = f"tags.{keys.TAG_CELL_ID} = '{cell_id}'"
    if status is not None:
        where += f" and attributes.status = '{status}'"
    runs = client.search_runs(
        [experiment], filter_string=where, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None
