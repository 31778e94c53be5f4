"""MLflow tracking: one experiment per suite, one run per cell (see bench/keys.py for the keys).

The default store is MLflow's own local default (`sqlite:///mlflow.db` with artifacts in
./mlruns, relative to the working directory), so `mlflow ui` started in the same folder shows the
runs. `--tracking-uri` or MLFLOW_TRACKING_URI point elsewhere (a server, another file).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from . import keys
from .suite import Cell

if TYPE_CHECKING:
    from .data import ImageData

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
        return client.create_experiment(
            suite_name,
            artifact_location=_artifact_location(client.tracking_uri, suite_name),
            tags=experiment_tags(),
        )
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
    run = client.create_run(experiment, tags=tags, run_name=cell.run_name)
    params = [Param(k, str(v)) for k, v in sorted(flatten(cell.config()).items())]
    for i in range(0, len(params), 90):
        client.log_batch(run.info.run_id, params=params[i : i + 90])
    if data is not None:
        log_inputs(client, run.info.run_id, dataset_inputs(data, cell))
    return run.info.run_id


INPUT_ATTEMPTS = 3


def log_inputs(client: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
    """client.log_inputs, tried again when it loses a race. MLflow's SQL store looks a dataset up,
    then inserts it when missing, without a lock: two cells starting at once (--parallel, Ray)
    both miss the suite's dataset and the second insert breaks the unique key. On the next try
    the dataset is there and only the run's link to it is written."""
    for attempt in range(1, INPUT_ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as err:
            lost_race = any(
                sign in str(err) for sign in ("UNIQUE constraint", "IntegrityError", "locked")
            )
            if not lost_race or attempt == INPUT_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)


class ImageSplit(MetaDataset):
    """One split of the suite's data as MLflow sees it: name, digest, source, schema and size
    (the images themselves stay where they are)."""

    def __init__(self, source, name: str, digest: str, schema: Schema, num_images: int):
        self._num_images = num_images
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict:
        return {"num_images": self._num_images}

    def to_dict(self) -> dict[str, str]:
        return super().to_dict() | {"profile": json.dumps(self.profile)}


def dataset_source(source: str):
    """Where the data came from: a folder (a file URI, resolved by MLflow's own source registry)
    or the harness's generator of synthetic data."""
    if source == "generated":
        return CodeDatasetSource(tags={"generator": "bench.data.synthetic_split"})
    uri = Path(source).expanduser().resolve().as_uri()
    return resolve_dataset_source(uri, candidate_sources=[FileSystemDatasetSource])


def dataset_inputs(data: ImageData, cell: Cell) -> list[DatasetInput]:
    """The training and the evaluation split as MLflow dataset inputs: the dataset's name, the
    split's digest and size, the source, the context ("training" / "evaluation", MLflow's
    mlflow.data.context input tag) and the suite's split name (input tag "split")."""
    source = dataset_source(data.source)
    inputs = []
    for context, split_name, split in (
        (keys.DATASET_TRAINING, cell.dataset.train_split, data.train),
        (keys.DATASET_EVALUATION, cell.dataset.eval_split, data.eval),
    ):
        specs = [TensorSpec(np.dtype(np.uint8), (-1, *split.images.shape[1:]), "images")]
        if split.labels is not None:
            specs.append(TensorSpec(np.dtype(np.int64), (-1,), "labels"))
        dataset = ImageSplit(source, data.name, split.digest, Schema(specs), len(split.images))
        split_tags = [
            InputTag(MLFLOW_DATASET_CONTEXT, context),
            InputTag(keys.INPUT_TAG_SPLIT, split_name),
        ]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=split_tags))
    return inputs


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


# The evaluation metrics a reader looks at first: in each run's note and as the columns of the
# suggested runs-table view (RUNS_VIEW).
HEADLINE_METRICS = (
    (keys.fid_key("domain"), "FID, domain features (lower is better)"),
    (keys.kid_key("domain"), "KID, domain features (lower is better)"),
    (keys.precision_key("domain"), "precision, domain features"),
    (keys.recall_key("domain"), "recall, domain features"),
    (keys.fid_key("inception"), "FID, Inception features (lower is better)"),
    (keys.RECON_MSE, "reconstruction MSE per pixel, [0, 1] scale (lower is better)"),
    (keys.MODES_COVERED, "classes covered by the samples"),
    (keys.CLASS_KL, "KL divergence, real vs generated class shares (lower is better)"),
)
SUMMARY_METRICS = (  # the note's first line (MLflow shows a note's first lines on a run's page)
    keys.fid_key("domain"),
    keys.precision_key("domain"),
    keys.recall_key("domain"),
    keys.RECON_MSE,
)


def format_value(value: float) -> str:
    return f"{value:.4g}"


def run_note(cell: Cell, run_id: str, metrics: dict[str, float]) -> str:
    """The run's description (MLflow's note, Markdown): its headline metrics, what the cell is,
    where to compare it with the suite's other variants and how to sample from it."""
    options = ", ".join(f"{k}={v}" for k, v in sorted(cell.variant.options.items())) or "defaults"
    optimizer = ", ".join(f"{k}={v}" for k, v in sorted(cell.variant.optimizer.items()))
    budget = cell.budget
    unit = "generator updates" if budget.parity == "generator_updates" else "batches"
    length = f"{budget.steps} {unit}" if budget.steps else f"{budget.epochs} epochs ({unit})"
    done = [
        f"{format_value(metrics[key])} {what}"
        for key, what in ((keys.GENERATOR_UPDATES, "generator updates"),
                          (keys.TRAIN_SECONDS, "s of training"))
        if key in metrics
    ]  # fmt: skip
    summary = ", ".join(f"{k} {format_value(metrics[k])}" for k in SUMMARY_METRICS if k in metrics)
    rows = [
        f"| {description} | `{key}` | {format_value(metrics[key])} |"
        for key, description in HEADLINE_METRICS
        if key in metrics
    ]
    lines = [
        f"**{cell.variant.label}**, seed {cell.seed}: {summary}",
        "",
        f"Model `{cell.variant.model}` of suite `{cell.suite}` (cell `{cell.id}`). Compare it "
        f"with the other variants, over seeds, in `reports/{cell.suite}/report.html` "
        f"(`uv run bench report {cell.suite}`).",
        "",
        "| headline metric | key | value |",
        "|---|---|---|",
        *rows,
        "",
        f"- options: {options}",
        f"- optimizer: {optimizer}",
        f"- budget: {length}, batch {budget.batch_size}, latent {budget.latent_dim}, "
        f"width {budget.width}" + (f"; done: {', '.join(done)}" if done else ""),
        f"- data: `{cell.dataset.name}`, {cell.dataset.train_split} split for training, "
        f"{cell.dataset.eval_split} split for evaluation (the run's datasets)",
        "",
        "Domain features come from the harness's own classifier of this dataset: those scores "
        "are not Inception scores.",
        "",
        f'Samples: `mlflow.pyfunc.load_model("runs:/{run_id}/model").predict({{"n": 16}})`.',
    ]
    return "\n".join(lines)


def set_note(client: MlflowClient, run_id: str, text: str) -> None:
    client.set_tag(run_id, keys.TAG_NOTE, text)


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
        keys.TAG_VARIANT: label,
        keys.TAG_STAGE: keys.STAGE_SEARCH,
        keys.TAG_SEARCH_ID: search_id,
    }
    return client.create_run(experiment, tags=tags, run_name=f"{label}-search").info.run_id
