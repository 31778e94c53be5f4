"""The local executor: every cell of a suite, one after another, on one device.

For each cell: skip it if the store already holds a finished run with its id; continue its
interrupted run if a local checkpoint of that run exists (bench/checkpoint.py); otherwise start a
run. Then build the model (seeded), train (checkpointing every budget.checkpoint_every steps),
evaluate, log artifacts and finish the run. A cell that diverges or raises is ended as failed with
its reason, keeps its last good checkpoint, and the suite goes on; the summary lists every cell.

Everything a user can get wrong (suite, device, data, checkpoint folder, tracking store) is checked
before anything is written to the store. While cells run, the first SIGINT (Ctrl-C) or SIGTERM
stops training at the next step boundary with a checkpoint, marks the run KILLED and ends the
suite (Summary.interrupted); a second Ctrl-C stops at once (KeyboardInterrupt, the run is marked
KILLED and resumes from its previous checkpoint). A process killed outright (SIGKILL, power loss)
leaves its run RUNNING: the next `bench run` resumes it from its checkpoint, or ends it as KILLED
and starts over when it had none.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml
from torchvision.utils import save_image

import models

from . import checkpoint, domain, evaluate, keys, provenance, tracking
from .data import ENV_ROOT, DatasetNotFound, ImageData, load_dataset, to_model_range, to_unit_range
from .suite import (
    Cell,
    EvaluationConfig,
    Suite,
    SuiteError,
    expand,
    follow_up_cells,
    search_id,
    trial_cells,
)
from .train import Diverged, Interrupted, select_device, steps_per_epoch, total_steps, train


@dataclass
class Summary:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: str | None = None  # the signal ("SIGINT", "SIGTERM") that stopped the suite
    interrupted_at: dict[str, int] = field(default_factory=dict)  # cell -> step it resumes from
    not_run: list[str] = field(default_factory=list)  # cells never started (interruption)
    # search trials that failed: counted as the worst value by the search, not a failed suite
    trials_failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and self.interrupted is None


@dataclass(frozen=True)
class Outcome:
    """How one cell's attempt ended: finished (no reason), failed (reason), or interrupted by a
    signal at a step (a checkpoint was saved there)."""

    reason: str | None = None
    interrupted: str | None = None
    step: int | None = None


def record(summary: Summary, cell: Cell, outcome: Outcome) -> None:
    if outcome.interrupted is not None:
        summary.interrupted = summary.interrupted or outcome.interrupted
        summary.interrupted_at[cell.name] = outcome.step
    elif outcome.reason is None:
        summary.finished.append(cell.name)
    elif cell.trial is not None:
        summary.trials_failed.append((cell.name, outcome.reason))
    else:
        summary.failed.append((cell.name, outcome.reason))


def load_suite_data(suite: Suite, cli_root: str | None = None) -> ImageData:
    d = suite.dataset
    try:
        data = load_dataset(
            d.name,
            d.root,
            cli_root,
            d.train_split,
            d.eval_split,
            d.train_limit,
            d.eval_limit,
            subset_seed=d.subset_seed,
        )
    except DatasetNotFound:
        raise
    except (OSError, EOFError, ValueError) as err:  # files named right but corrupt (bad gzip)
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        where = d.root or cli_root or os.environ.get(ENV_ROOT) or "its default folders"
        raise DatasetNotFound(
            f"dataset {d.name!r} in {where}: its files cannot be read ({problem}); "
            f"check dataset.root, --data-root or {ENV_ROOT}"
        ) from None
    for split, limit, images in (
        ("train", d.train_limit, data.train.images),
        ("eval", d.eval_limit, data.eval.images),
    ):
        if limit is not None and limit > len(images):
            raise SuiteError(
                f"dataset.{split}_limit {limit} is larger than the {split} split "
                f"({len(images)} images); lower it or leave it out"
            )
    if suite.budget.batch_size > len(data.train.images):
        raise SuiteError(
            f"budget.batch_size {suite.budget.batch_size} is larger than the training set "
            f"({len(data.train.images)} images); lower it or raise dataset.train_limit"
        )
    return data


def check_inception_weights(evaluation: EvaluationConfig) -> None:
    path = evaluation.inception_weights
    if not path or "inception" not in evaluation.feature_extractors:
        return
    weights = Path(path).expanduser()
    if not weights.is_file():
        raise SuiteError(
            f"evaluation.inception_weights: no file at {path}; give the path of "
            "pt_inception-2015-12-05-6726825d.pth, or null to use torch hub's cache"
        )
    # torch-fidelity unpickles this file (weights_only=False): accept only plain tensors.
    try:
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SuiteError(
            f"evaluation.inception_weights: {path} is not a plain state dict of tensors "
            f"({reason[:200]}); refusing to unpickle it"
        ) from None


class StopSignal:
    """The first SIGINT or SIGTERM is remembered (training asks at every step boundary and stops
    with a checkpoint); a second SIGINT raises KeyboardInterrupt at once."""

    def __init__(self, echo):
        self.received: str | None = None
        self.echo = echo

    def __call__(self) -> str | None:
        return self.received

    def handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        self.echo(f"{self.received}: stopping at the next step boundary (Ctrl-C again: at once)")


@contextmanager
def stop_on_signals(echo) -> Iterator[StopSignal]:
    stop = StopSignal(echo)
    if threading.current_thread() is not threading.main_thread():  # signals reach it only
        yield stop
        return
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class SuiteContext:
    """What every cell of one suite run shares, in one process."""

    client: object
    experiment: str
    evaluator: evaluate.Evaluator
    train_images: torch.Tensor  # model range, on the device
    tags: dict[str, str]  # provenance, on every run
    suite_text: str
    progress: bool
    checkpoint_root: Path
    rerun: bool
    echo: object
    stop: StopSignal | None = None


@dataclass(frozen=True)
class RunSettings:
    """Everything a process needs to rebuild a suite run's SuiteContext: the main process, a
    `--parallel` worker or a Ray worker (picklable; paths absolute)."""

    suite: Suite
    suite_text: str
    tracking_uri: str
    device: str
    data_root: str | None
    checkpoint_root: str
    rerun: bool
    cache_dir: str | None = None  # None: the worker's own default (BENCH_CACHE_DIR, ~/.cache)
    # (file name, bytes) of the main process's domain classifier: installed into a worker's cache
    # when missing there, so every machine measures with the very same network
    classifier: tuple[str, bytes] | None = None


def build_context(
    settings: RunSettings, echo, progress: bool, client=None, data: ImageData | None = None
) -> SuiteContext:
    suite = settings.suite
    target = select_device(settings.device)
    data = data if data is not None else load_suite_data(suite, settings.data_root)
    client = client if client is not None else tracking.connect(settings.tracking_uri)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else domain.default_cache_dir()
    if settings.classifier is not None:
        domain.install_classifier(cache_dir / settings.classifier[0], settings.classifier[1])
    evaluator = evaluate.prepare(
        data, suite.dataset, suite.evaluation, target, settings.data_root, cache_dir, log=echo
    )
    return SuiteContext(
        client=client,
        experiment=tracking.experiment_id(client, suite.name),
        evaluator=evaluator,
        train_images=to_model_range(data.train.images, target),
        tags=provenance.tags(target),
        suite_text=settings.suite_text,
        progress=progress,
        checkpoint_root=Path(settings.checkpoint_root),
        rerun=settings.rerun,
        echo=echo,
    )


EXECUTORS = ("local", "ray")


def run_suite(
    suite: Suite,
    tracking_uri: str | None = None,
    device: str = "auto",
    data_root: str | None = None,
    rerun: bool = False,
    progress: bool = True,
    echo=print,
    suite_text: str | None = None,
    checkpoint_dir: str | Path | None = None,
    parallel: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    gpus_per_cell: float | None = None,
    ray_init: dict | None = None,
) -> Summary:
    """Run every cell of `suite`: one after another (parallel=1), in `parallel` worker processes
    on this machine (bench/parallel.py), or as Ray tasks (executor="ray", bench/ray_executor.py;
    ray_address None starts a local Ray instance, ray_init adds keyword arguments to ray.init)."""
    if executor not in EXECUTORS:
        raise SuiteError(f"--executor {executor!r} is unknown; use one of {', '.join(EXECUTORS)}")
    if parallel < 1:
        raise SuiteError(f"--parallel {parallel} must be at least 1")
    cells = expand(suite) if suite.search is None else trial_cells(suite)
    # Ray workers choose their device themselves (the driver may have no GPU)
    target = select_device(device if executor == "local" else "auto")
    data = load_suite_data(suite, data_root)
    check_inception_weights(suite.evaluation)
    checkpoint_root = Path(checkpoint_dir or checkpoint.DEFAULT_ROOT).resolve()
    checkpoint.check_writable(checkpoint_root)
    if executor == "ray":
        from . import ray_executor

        ray_executor.check_installed()
    with checkpoint.suite_lock(checkpoint_root, suite.name):
        # Every input the user can get wrong is checked by now: only from here on is the store
        # touched.
        client = tracking.connect(tracking_uri)
        how = f"{parallel} processes on {target}" if parallel > 1 else str(target)
        if executor == "ray":
            how = f"Ray ({ray_address or 'local instance'})"
        what = f"{len(cells)} cells"
        if suite.search is not None:
            what = f"a search of {len(cells)} trials, then the seeds of each variant's best,"
        echo(
            f"suite {suite.name}: {what} on {how}, {data.name} from {data.source} "
            f"({len(data.train.images)} train / {len(data.eval.images)} eval images), "
            f"tracking {client.tracking_uri}"
        )
        settings = RunSettings(
            suite=suite,
            suite_text=suite_text or yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False),
            tracking_uri=tracking.absolute_uri(client.tracking_uri),
            device=str(target),
            data_root=str(Path(data_root).resolve()) if data_root else None,
            checkpoint_root=str(checkpoint_root),
            rerun=rerun,
            cache_dir=str(domain.default_cache_dir().resolve()),
        )
        context = build_context(settings, echo, progress, client=client, data=data)
        evaluator = context.evaluator
        echo(
            f"evaluation: {suite.evaluation.num_samples} samples vs {len(data.eval.images)} "
            f"{suite.dataset.eval_split} images; feature spaces: {', '.join(evaluator.spaces)} "
            f"(domain classifier test accuracy {evaluator.classifier_accuracy:.4f})"
        )
        summary = Summary()
        run_stage = stage_runner(
            context,
            settings,
            parallel,
            executor,
            ray_address,
            gpus_per_cell,
            ray_init or {},
            device,
        )
        if suite.search is None:
            run_stage(pending(cells, context, summary), summary)
        else:
            run_search(suite, cells, context, summary, run_stage)
    echo_summary(suite.name, summary, echo)
    return summary


def stage_runner(
    context: SuiteContext,
    settings: RunSettings,
    parallel: int,
    executor: str,
    ray_address: str | None,
    gpus_per_cell: float | None,
    ray_init: dict,
    device: str,
):
    """The chosen executor as one function: run_stage(todo, summary) runs the (prefix, cell)
    pairs of `todo` and records each cell's outcome in `summary`."""
    if executor == "ray":
        from . import ray_executor

        evaluator = context.evaluator
        settings = replace(
            settings,
            device=device,
            cache_dir=None,
            classifier=(evaluator.classifier_path.name, evaluator.classifier_path.read_bytes()),
        )

        def run_on_ray(todo, summary):
            if todo:
                ray_executor.run_cells(
                    todo, summary, context, settings, ray_address, gpus_per_cell, ray_init
                )

        return run_on_ray
    if parallel > 1:
        from . import parallel as local_parallel

        def run_in_processes(todo, summary):
            if len(todo) > 1:
                local_parallel.run_cells(todo, summary, context, settings, parallel)
            else:
                run_cells(todo, summary, context)

        return run_in_processes
    return lambda todo, summary: run_cells(todo, summary, context)


def pending(
    cells: list[Cell], context: SuiteContext, summary: Summary, failed_ends: bool = False
) -> list[tuple[str, Cell]]:
    """(progress prefix, cell) of every cell to run; cells with a finished run are skipped, and
    with `failed_ends` (search trials) so are cells whose run failed: a failed trial is an
    outcome, the worst value, not a cell to try again."""
    todo = []
    client, experiment = context.client, context.experiment
    for index, cell in enumerate(cells, 1):
        prefix = f"[{index}/{len(cells)}] {cell.name}"
        if not context.rerun and tracking.finished_run(client, experiment, cell.id):
            context.echo(
                f"{prefix}: skipped, finished run exists for cell {cell.id} (--rerun to redo)"
            )
            summary.skipped.append(cell.name)
        elif failed_ends and not context.rerun and tracking.failed_run(client, experiment, cell.id):
            context.echo(f"{prefix}: skipped, this trial failed before (it counts as the worst)")
            summary.skipped.append(cell.name)
        else:
            todo.append((prefix, cell))
    return todo


def run_search(
    suite: Suite, trials: list[Cell], context: SuiteContext, summary: Summary, run_stage
) -> None:
    """Stage 1: every variant's trials, nested under one parent run per variant. Stage 2, once a
    variant's trials have all ended: its best trial's setting with the follow-up seeds. A rerun
    after an interruption continues whichever stage it stopped in."""
    from . import search  # reads the trials' outcomes back from the store

    client, experiment, echo = context.client, context.experiment, context.echo
    labels = list(dict.fromkeys(cell.variant.label for cell in trials))
    by_label = {label: [c for c in trials if c.variant.label == label] for label in labels}
    tagged = []
    for label in labels:
        sid = search_id(suite, by_label[label])
        parent = tracking.search_parent_run(
            client, experiment, suite.name, label, sid, new=context.rerun
        )
        run_tags = ((keys.TAG_SEARCH_ID, sid), (keys.TAG_PARENT_RUN, parent))
        by_label[label] = [replace(c, run_tags=run_tags) for c in by_label[label]]
        tagged += by_label[label]
    run_stage(pending(tagged, context, summary, failed_ends=True), summary)
    if summary.interrupted:
        return
    metric = suite.search.select
    lower = keys.selection_metrics()[metric]
    finals = []
    for label in labels:
        cells = by_label[label]
        sid, parent = (
            dict(cells[0].run_tags)[k] for k in (keys.TAG_SEARCH_ID, keys.TAG_PARENT_RUN)
        )
        results = search.trial_results(client, experiment, cells, metric)
        if len(results) < len(cells):
            reason = f"{len(cells) - len(results)} of {len(cells)} trials have not ended"
            echo(f"{label}: no best setting chosen: {reason}; rerun to finish them")
            summary.failed.append((f"{label}/search", reason))
            continue
        best = search.best_trial(results, lower)
        search.log_choice(client, parent, suite, results, best)
        failed = sum(1 for r in results if r.value is None)
        if best is None:
            reason = f"all {len(results)} trials failed: nothing to choose"
            echo(f"{label}: {reason}")
            summary.failed.append((f"{label}/search", reason))
            continue
        echo(
            f"{label}: best of {len(results)} trials ({failed} failed) is trial "
            f"{best.cell.trial}, {metric} {best.value:.4g}"
        )
        run_tags = ((keys.TAG_SEARCH_ID, sid),)
        finals += [replace(c, run_tags=run_tags) for c in follow_up_cells(suite, best.cell)]
    run_stage(pending(finals, context, summary), summary)


def execute(cell: Cell, context: SuiteContext, prefix: str) -> Outcome:
    """Run one cell in this process (any executor's worker) and say how it ended."""
    try:
        reason = run_cell(cell, context, prefix)
    except Interrupted as err:
        context.echo(f"{prefix}: {err}, checkpoint saved")
        return Outcome(interrupted=err.reason, step=err.step)
    context.echo(f"{prefix}: finished" if reason is None else f"{prefix}: FAILED: {reason}")
    return Outcome(reason=reason)


def run_cells(todo: list[tuple[str, Cell]], summary: Summary, context: SuiteContext) -> None:
    """Every cell in order in this process; the first SIGINT/SIGTERM ends the loop (see the
    module docstring)."""
    with stop_on_signals(context.echo) as context.stop:
        for position, (prefix, cell) in enumerate(todo):
            if context.stop.received:
                summary.interrupted = context.stop.received
                summary.not_run += [c.name for _, c in todo[position:]]
                return
            outcome = execute(cell, context, prefix)
            record(summary, cell, outcome)
            if outcome.interrupted is not None:
                summary.not_run += [c.name for _, c in todo[position + 1 :]]
                return


def fail_lost_cell(context: SuiteContext, cell: Cell, reason: str) -> None:
    """End the runs a lost worker left RUNNING for `cell` as failed (its checkpoint stays, but a
    failed run starts over on the next `bench run`)."""
    for run in tracking.running_runs(context.client, context.experiment, cell.id):
        tracking.fail(context.client, run.info.run_id, reason)


def echo_summary(name: str, summary: Summary, echo) -> None:
    counts = (
        f"suite {name}: {len(summary.finished)} finished, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed"
    )
    if summary.interrupted:
        counts += f", {len(summary.not_run)} not run: interrupted by {summary.interrupted}"
    for name, step in summary.interrupted_at.items():
        counts += f"; {name} resumes from step {step}"
    echo(counts)
    for title, names in (
        ("finished", summary.finished),
        ("skipped", summary.skipped),
        ("not run", summary.not_run),
    ):
        if names:
            echo(f"  {title}: {', '.join(names)}")
    for name, reason in summary.failed:
        echo(f"  failed {name}: {reason}")
    if summary.trials_failed:
        echo(
            f"  {len(summary.trials_failed)} search trials failed (each counts as the worst value):"
        )
    for name, reason in summary.trials_failed:
        echo(f"    {name}: {reason}")


def open_cell_run(cell: Cell, context: SuiteContext, folder: Path, prefix: str):
    """(run id, checkpoint or None): the cell's interrupted run with its checkpoint when one is
    here, else a new run. Runs of the cell left RUNNING by a killed process that cannot be resumed
    are ended as KILLED, so that no run stays RUNNING forever."""
    client, experiment, echo = context.client, context.experiment, context.echo
    saved = None
    if not context.rerun:
        try:
            saved = checkpoint.load(folder)
        except checkpoint.CheckpointError as err:
            echo(f"{prefix}: {err}; starting over")
    device = context.evaluator.device.type
    if saved is not None and saved.get("device") != device:
        echo(
            f"{prefix}: checkpoint in {folder} is from {saved.get('device')}, not {device}; "
            "starting over"
        )
        saved = None
    if saved is not None and not tracking.resumable(client, experiment, cell.id, saved["run_id"]):
        saved = None  # its run failed (it would fail again), or belongs to another store
    resumed = saved["run_id"] if saved is not None else None
    for run in tracking.running_runs(client, experiment, cell.id):
        if run.info.run_id != resumed:
            why = "--rerun starts over" if context.rerun else f"none usable in {folder}"
            reason = f"interrupted before the first checkpoint ({why})"
            tracking.fail(client, run.info.run_id, reason, killed=True)
    if saved is not None:
        tracking.reopen(client, resumed)
        echo(f"{prefix}: resuming run {resumed} from step {saved['step']} ({folder})")
        return resumed, saved
    checkpoint.remove(folder)  # a failed run's last good checkpoint: this cell starts over
    tags = dict(context.tags)
    if context.evaluator.inception_skip_reason:
        tags[keys.TAG_INCEPTION_SKIPPED] = context.evaluator.inception_skip_reason
    return tracking.start_cell_run(client, experiment, cell, tags), None


def run_cell(cell: Cell, context: SuiteContext, description: str) -> str | None:
    """Train and evaluate one cell into its own MLflow run; None on success, else the reason.
    Raises Interrupted (after a checkpoint) when a stop signal arrived during training."""
    started = time.perf_counter()
    client, evaluator, train_images = context.client, context.evaluator, context.train_images
    folder = checkpoint.cell_folder(context.checkpoint_root, cell.suite, cell.id)
    run_id, resume = open_cell_run(cell, context, folder, description)
    # A resumed run already holds the metrics its first life logged, possibly past the checkpoint:
    # those steps are computed again (identically on the CPU) but not logged twice.
    logged_until = tracking.last_logged_step(client, run_id) if resume else 0
    saved_step = int(resume["step"]) if resume else None
    try:
        torch.manual_seed(cell.seed)
        budget = cell.budget
        model = models.build(
            cell.variant.model,
            cell.variant.options,
            evaluator.data.image_shape,
            cell.hparams(),
            evaluator.device,
        )
        if cell.compute.compile:
            model.compile_networks()
        num_steps = total_steps(len(train_images), budget.batch_size, budget.epochs, budget.steps)

        def log_losses(step: int, means: dict[str, float]) -> None:
            if step > logged_until:
                values = {keys.train_key(name): value for name, value in means.items()}
                tracking.log_metrics(client, run_id, values, step)

        def save_checkpoint(step: int, state: dict) -> None:
            nonlocal saved_step
            bookkeeping = {"cell_id": cell.id, "run_id": run_id, "device": evaluator.device.type}
            checkpoint.save(folder, state | bookkeeping)
            saved_step = step

        periodic = None
        if cell.evaluation.every_epochs:

            def evaluate_during_training(step: int) -> None:
                # evaluated again even when already logged: training must see the same state
                metrics, _ = evaluate.evaluate(model, evaluator, cell.seed, cheap=True)
                if step > logged_until:
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
            checkpoint=(budget.checkpoint_every, save_checkpoint),
            resume=resume,
            stop_requested=context.stop,
            precision=cell.compute.precision,
            # a step is one generator update (its critic steps included), or one batch
            calls_per_step=model.n_critic if budget.parity == "generator_updates" else 1,
        )
        metrics, images = evaluate.evaluate(model, evaluator, cell.seed)
        tracking.log_metrics(client, run_id, metrics, num_steps)
        log_artifacts(client, run_id, cell, model, images, context.suite_text)
        timings = {
            **model.update_counts(budget.batch_size),  # generator_updates, ... (bench/keys.py)
            keys.TRAIN_SECONDS: result.seconds,
            keys.TRAIN_IMAGES_PER_S: result.images_per_second,
            keys.CELL_SECONDS: time.perf_counter() - started,
        }
        tracking.log_metrics(client, run_id, timings, num_steps)
        tracking.finish(client, run_id)
        checkpoint.remove(folder)  # the final weights are in the run's artifacts now
        return None
    except Interrupted as err:
        tracking.fail(client, run_id, str(err), killed=True)
        raise
    except KeyboardInterrupt:
        tracking.fail(
            client, run_id, "interrupted (Ctrl-C twice)" + _kept(saved_step, folder), killed=True
        )
        raise
    except Diverged as err:
        reason = str(err) + _kept(saved_step, folder)
        tracking.fail(client, run_id, reason)
        return reason
    except Exception as err:  # one cell's failure (e.g. out of memory) must not stop the suite
        reason = f"{type(err).__name__}: {err}".splitlines()[0] + _kept(saved_step, folder)
        tracking.fail(client, run_id, reason + "\n" + traceback.format_exc())
        return reason


def _kept(step: int | None, folder: Path) -> str:
    if step is None:
        return ""
    return f"; last good checkpoint: step {step} in {folder / checkpoint.FILE}"


def log_artifacts(client, run_id: str, cell: Cell, model, images: dict, suite_text: str) -> None:
    """The suite, the cell's config, the evaluation's image grids (decoded by evaluate.evaluate
    under the same batch-norm statistics as the metrics) and the final weights."""
    columns = evaluate.grid_columns(cell.evaluation.grid_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / keys.ARTIFACT_SUITE).write_text(suite_text)
        (folder / keys.ARTIFACT_CONFIG).write_text(
            json.dumps({"cell_id": cell.id, "suite": cell.suite, **cell.config()}, indent=2)
        )
        save_image(images["samples"], folder / keys.ARTIFACT_SAMPLES, nrow=columns)
        if images.get("reconstructions") is not None:
            save_image(
                images["reconstructions"], folder / keys.ARTIFACT_RECONSTRUCTIONS, nrow=columns
            )
        strips = images.get("interpolation")
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
