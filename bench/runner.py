"""The local executor: every cell of a suite, one after another, on one device.

For each cell: skip it if the store already holds a finished run with its id, otherwise start a
run, build the model (seeded), train, log artifacts, and finish the run. A cell that diverges or
raises is ended as failed with its reason and the suite goes on; the summary lists every cell.
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torchvision.utils import save_image

import models

from . import evaluate, keys, provenance, tracking
from .data import ImageData, load_dataset, to_model_range, to_unit_range
from .suite import Cell, Suite, SuiteError, expand
from .train import Diverged, steps_per_epoch, total_steps, train


@dataclass
class Summary:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def select_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SuiteError("--device cuda was asked for but no CUDA device is available")
    return device


def load_suite_data(suite: Suite, cli_root: str | None = None) -> ImageData:
    d = suite.dataset
    data = load_dataset(
        d.name, d.root, cli_root, d.train_split, d.eval_split, d.train_limit, d.eval_limit
    )
    if suite.budget.batch_size > len(data.train.images):
        raise SuiteError(
            f"budget.batch_size {suite.budget.batch_size} is larger than the training set "
            f"({len(data.train.images)} images); lower it or raise dataset.train_limit"
        )
    return data


@dataclass
class SuiteContext:
    """What every cell of one suite run shares."""

    client: object
    experiment: str
    evaluator: evaluate.Evaluator
    train_images: torch.Tensor  # model range, on the device
    tags: dict[str, str]  # provenance, on every run
    suite_text: str
    progress: bool


def run_suite(
    suite: Suite,
    tracking_uri: str | None = None,
    device: str = "auto",
    data_root: str | None = None,
    rerun: bool = False,
    progress: bool = True,
    echo=print,
    suite_text: str | None = None,
) -> Summary:
    cells = expand(suite)
    target = select_device(device)
    data = load_suite_data(suite, data_root)  # before touching the store: bad input writes nothing
    client = tracking.connect(tracking_uri)
    experiment = tracking.experiment_id(client, suite.name)
    echo(
        f"suite {suite.name}: {len(cells)} cells on {target}, {data.name} from {data.source} "
        f"({len(data.train.images)} train / {len(data.eval.images)} eval images), "
        f"tracking {client.tracking_uri}"
    )
    evaluator = evaluate.prepare(data, suite.dataset, suite.evaluation, target, data_root, log=echo)
    echo(
        f"evaluation: {suite.evaluation.num_samples} samples vs {len(data.eval.images)} "
        f"{suite.dataset.eval_split} images; feature spaces: {', '.join(evaluator.spaces)} "
        f"(domain classifier test accuracy {evaluator.classifier_accuracy:.4f})"
    )
    context = SuiteContext(
        client=client,
        experiment=experiment,
        evaluator=evaluator,
        train_images=to_model_range(data.train.images, target),
        tags=provenance.tags(target),
        suite_text=suite_text or yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False),
        progress=progress,
    )
    summary = Summary()
    for index, cell in enumerate(cells, 1):
        prefix = f"[{index}/{len(cells)}] {cell.name}"
        if not rerun and tracking.finished_run(client, experiment, cell.id):
            echo(f"{prefix}: skipped, finished run exists for cell {cell.id} (--rerun to redo)")
            summary.skipped.append(cell.name)
            continue
        reason = run_cell(cell, context, prefix)
        if reason is None:
            summary.finished.append(cell.name)
            echo(f"{prefix}: finished")
        else:
            summary.failed.append((cell.name, reason))
            echo(f"{prefix}: FAILED: {reason}")
    echo(
        f"suite {suite.name}: {len(summary.finished)} finished, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed"
    )
    for name, reason in summary.failed:
        echo(f"  failed {name}: {reason}")
    return summary


def run_cell(cell: Cell, context: SuiteContext, description: str) -> str | None:
    """Train and evaluate one cell into its own MLflow run; None on success, else the reason."""
    started = time.perf_counter()
    client, evaluator, train_images = context.client, context.evaluator, context.train_images
    tags = dict(context.tags)
    if evaluator.inception_skip_reason:
        tags[keys.TAG_INCEPTION_SKIPPED] = evaluator.inception_skip_reason
    run_id = tracking.start_cell_run(client, context.experiment, cell, tags)
    try:
        torch.manual_seed(cell.seed)
        budget = cell.budget
        model = models.build(
            cell.variant.model,
            cell.variant.options,
            evaluator.data.image_shape,
            budget.hparams(),
            evaluator.device,
        )
        num_steps = total_steps(len(train_images), budget.batch_size, budget.epochs, budget.steps)

        def log_losses(step: int, means: dict[str, float]) -> None:
            values = {keys.train_key(name): value for name, value in means.items()}
            tracking.log_metrics(client, run_id, values, step)

        periodic = None
        if cell.evaluation.every_epochs:

            def evaluate_during_training(step: int) -> None:
                metrics, _ = evaluate.evaluate(model, evaluator, cell.seed, cheap=True)
                tracking.log_metrics(client, run_id, metrics, step)

            every = cell.evaluation.every_epochs * steps_per_epoch(
                len(train_images), budget.batch_size
            )
            periodic = (every, evaluate_during_training)

        result = train(
            model,
            train_images,
            budget.batch_size,
            num_steps,
            cell.seed,
            budget.log_every,
            log_losses,
            progress=context.progress,
            description=description,
            periodic=periodic,
        )
        metrics, images = evaluate.evaluate(model, evaluator, cell.seed)
        tracking.log_metrics(client, run_id, metrics, num_steps)
        log_artifacts(client, run_id, cell, model, evaluator.data, images, context.suite_text)
        timings = {
            keys.TRAIN_SECONDS: result.seconds,
            keys.TRAIN_IMAGES_PER_S: result.images_per_second,
            keys.CELL_SECONDS: time.perf_counter() - started,
        }
        tracking.log_metrics(client, run_id, timings, num_steps)
        tracking.finish(client, run_id)
        return None
    except KeyboardInterrupt:
        tracking.fail(client, run_id, "interrupted (Ctrl-C)", killed=True)
        raise
    except Diverged as err:
        tracking.fail(client, run_id, str(err))
        return str(err)
    except Exception as err:  # one cell's failure (e.g. out of memory) must not stop the suite
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        tracking.fail(client, run_id, reason + "\n" + traceback.format_exc())
        return reason


def log_artifacts(
    client, run_id: str, cell: Cell, model, data: ImageData, images: dict, suite_text: str
) -> None:
    strips = images.get("interpolation")
    grid = cell.evaluation.grid_size
    generator = torch.Generator(device=model.device).manual_seed(cell.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / keys.ARTIFACT_SUITE).write_text(suite_text)
        (folder / keys.ARTIFACT_CONFIG).write_text(
            json.dumps({"cell_id": cell.id, "suite": cell.suite, **cell.config()}, indent=2)
        )
        samples = to_unit_range(model.sample(grid, generator=generator)).cpu()
        save_image(samples, folder / keys.ARTIFACT_SAMPLES, nrow=_grid_columns(grid))
        if model.has_encoder:
            save_image(
                reconstruction_grid(model, data, grid // 2),
                folder / keys.ARTIFACT_RECONSTRUCTIONS,
                nrow=_grid_columns(grid),
            )
        if strips is not None and len(strips):
            save_image(
                to_unit_range(strips.flatten(0, 1)).cpu(),
                folder / keys.ARTIFACT_INTERPOLATION,
                nrow=strips.shape[1],
            )
        checkpoint_dir = folder / keys.ARTIFACT_CHECKPOINT_DIR
        checkpoint_dir.mkdir()
        torch.save(
            {
                "model": model.state_dict(),
                "optimizers": model.optimizer_state(),
                "config": cell.config(),
            },
            checkpoint_dir / keys.CHECKPOINT_FILE,
        )
        client.log_artifacts(run_id, str(folder))


def reconstruction_grid(model, data: ImageData, n: int) -> torch.Tensor:
    """Rows of evaluation images, each followed by a row of their reconstructions, in [0, 1]."""
    columns = _grid_columns(2 * n)
    n = max(columns, n - n % columns)
    inputs = to_model_range(data.eval.images[:n], model.device)
    recons = model.decode(model.encode(inputs))
    rows = []
    for i in range(0, len(inputs), columns):
        rows += [inputs[i : i + columns], recons[i : i + columns]]
    return to_unit_range(torch.cat(rows)).cpu()


def _grid_columns(n: int) -> int:
    return max(1, int(round(n**0.5)))
