"""`bench evaluate SUITE`: re-score a suite's finished cells with the current evaluation code, from
the weights each run logged, without retraining: for a metric added or fixed after the runs.

Which runs: every FINISHED run of the suite's experiment that is a cell of the suite proper (stage
"final": the seeds of a search's chosen settings, or every cell of a suite without a search);
search trials are not re-scored (the choice they made stays as made). A run whose
`evaluation_version` tag is the current EVALUATION_VERSION is skipped, so a rerun after an
interruption continues where it stopped.

How: the suite's data and evaluator are rebuilt as `bench run` builds them (the same training
pool, validation hold-out included, and evaluation split); each run's model is rebuilt from the
resolved configuration and state dict in its `checkpoint/` artifact and evaluated like a fresh
cell (the same seed). Its metrics are logged on the same run at the step of its final evaluation,
in ONE log_batch with the `evaluation_version` tag: a kill leaves a run either re-scored or not,
never half (one value per metric per run); the nearest-neighbour gallery goes first, so a run
marked done has it. The report reads the newest values.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Metric, RunTag
from torchvision.utils import save_image

import models
from bench import keys
from bench.metrics import evaluate
from bench.run.context import RunSettings, build_context, stop_on_signals
from bench.suite.schema import Suite

MAX_BATCH = 900  # MLflow's log_batch takes at most 1000 metrics, plus the tag


@dataclass
class Rescored:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already at the current version
    stopped: str | None = None  # the signal that stopped it, if one did


def final_runs(client, experiment: str) -> list:
    """The FINISHED cell runs of the suite proper (no trials, no search parent runs)."""
    runs = client.search_runs(
        [experiment],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=50_000,
    )
    return [
        run
        for run in runs
        if keys.TAG_CELL_ID in run.data.tags
        and run.data.tags.get(keys.TAG_STAGE, keys.STAGE_FINAL) == keys.STAGE_FINAL
    ]


def hparams_of(config: dict) -> models.Hparams:
    """The hyperparameters of a cell from its resolved configuration (Cell.config(), as logged
    in the run's cell.json and checkpoint)."""
    budget, optimizer = config["budget"], config["optimizer"]
    return models.Hparams(
        latent_dim=budget["latent_dim"],
        width=budget["width"],
        lr_g=optimizer["lr_g"],
        lr_d=optimizer.get("lr_d", optimizer["lr_g"]),
        betas=tuple(optimizer["betas"]),
        n_critic=optimizer["n_critic"],
    )


def rebuild_model(client, run, image_shape, device):
    """The run's trained model from its checkpoint artifact, and the seed and final step."""
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(
            run.info.run_id, f"{keys.ARTIFACT_CHECKPOINT_DIR}/{keys.CHECKPOINT_FILE}", folder
        )
        saved = torch.load(path, map_location="cpu", weights_only=True)
    config = saved["config"]
    model = models.build(
        config["model"], config["options"], image_shape, hparams_of(config), device
    )
    model.load_state_dict(saved["model"])
    return model, int(config["seed"])


def final_step(client, run_id: str) -> int:
    """The step the run's final evaluation was logged at."""
    history = client.get_metric_history(run_id, keys.fid_key("domain"))
    return max((m.step for m in history), default=0)


def rescore_suite(
    suite: Suite,
    suite_text: str,
    tracking_uri: str,
    device: str,
    data_root: str | None,
    echo: Callable[[str], None],
) -> Rescored:
    settings = RunSettings(
        suite, suite_text, tracking_uri, device, data_root, tempfile.gettempdir(), rerun=False
    )
    context = build_context(settings, echo, progress=False)
    client, evaluator = context.client, context.evaluator
    result = Rescored()
    runs = final_runs(client, context.experiment)
    with stop_on_signals(echo) as stop:
        for index, run in enumerate(runs, 1):
            name = run.info.run_name
            if run.data.tags.get(keys.TAG_EVALUATION_VERSION) == evaluate.EVALUATION_VERSION:
                result.skipped.append(name)
                continue
            if stop():
                result.stopped = stop()
                break
            model, seed = rebuild_model(client, run, evaluator.data.image_shape, evaluator.device)
            metrics, images = evaluate.evaluate(model, evaluator, seed)
            # the gallery first: the version tag, logged last, marks the run as done
            log_nearest(client, run.info.run_id, images)
            step = final_step(client, run.info.run_id)
            log_rescore(client, run.info.run_id, metrics, step, evaluator.inception_tags())
            result.done.append(name)
            version = evaluate.EVALUATION_VERSION
            echo(f"[{index}/{len(runs)}] {name}: re-scored (evaluation {version})")
    return result


def log_rescore(
    client, run_id: str, metrics: dict[str, float], step: int, tags: dict[str, str] | None = None
) -> None:
    """The new values, the version tag and `tags` (where the Inception weights came from now)
    in one log_batch (atomic in MLflow's stores)."""
    timestamp = mlflow.utils.time.get_current_time_millis()
    entries = [Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
    if len(entries) > MAX_BATCH:
        raise ValueError(f"{len(entries)} metrics exceed one log_batch ({MAX_BATCH})")
    tag = RunTag(keys.TAG_EVALUATION_VERSION, evaluate.EVALUATION_VERSION)
    extra = [RunTag(name, value) for name, value in (tags or {}).items()]
    client.log_batch(run_id, metrics=entries, tags=[*extra, tag])


def log_nearest(client, run_id: str, images: dict) -> None:
    """The copying gallery, for runs logged before it existed (overwritten if there)."""
    if images.get("nearest") is None:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / keys.ARTIFACT_NEAREST
        save_image(images["nearest"], path, nrow=evaluate.NEAREST_SHOWN)
        client.log_artifact(run_id, str(path))
