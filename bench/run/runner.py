"""Running a suite: its stages, on the executor the user chose.

A suite without a search has one stage, its cells. A suite with a `search:` block has two: every
variant's trials (nested under one parent run per variant), then, once a variant's trials have all
ended, its best setting with the follow-up seeds (bench/run/search.py chooses). Every stage skips
the cells the store already holds a finished run of, so a rerun after an interruption continues
whichever stage it stopped in. Each stage goes to one executor (bench/run/cell.py `Executor`): one
cell after another here, worker processes (bench/run/parallel.py) or Ray tasks
(bench/run/ray_executor.py).

Everything a user can get wrong (suite, device, data, checkpoint folder, tracking store) is checked
before anything is written to the store.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from bench import keys, tracking
from bench.data.cache import default_cache_dir
from bench.metrics import table
from bench.metrics.settings import EvaluationConfig
from bench.run import checkpoint, hardware
from bench.run.cell import Executor, run_cells
from bench.run.context import (
    RunSettings,
    SuiteContext,
    build_context,
    load_suite_data,
    stop_on_signals,
)
from bench.run.summary import Outcome, Summary, echo_summary, record
from bench.run.train import select_device
from bench.suite.expand import Cell, expand
from bench.suite.schema import Suite, SuiteError
from bench.suite.search import best_trial, follow_up_cells, search_id, trial_cells
from bench.tracking import claims, worker_identity


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
    lease_seconds: float = claims.LEASE_SECONDS,
    allow_slow_bf16: bool = False,
) -> Summary:
    """Run every cell of `suite`: one after another (parallel=1), in `parallel` worker processes
    on this machine (bench/run/parallel.py), or as Ray tasks (executor="ray",
    bench/run/ray_executor.py; ray_address None starts a local Ray instance, ray_init adds
    keyword arguments to ray.init)."""
    if executor not in EXECUTORS:
        raise SuiteError(f"--executor {executor!r} is unknown; use one of {', '.join(EXECUTORS)}")
    if parallel < 1:
        raise SuiteError(f"--parallel {parallel} must be at least 1")
    if lease_seconds <= 0:
        raise SuiteError(f"--lease {lease_seconds} must be a positive number of seconds")
    cells = expand(suite) if suite.search is None else trial_cells(suite)
    # Ray workers choose their device themselves (the driver may have no GPU)
    target = select_device(device if executor == "local" else "auto")
    if executor == "local":  # a Ray worker's device is its own machine's, not this one's
        hardware.check_bf16(suite.compute.precision, target, allow_slow_bf16)
    data = load_suite_data(suite, data_root)
    check_inception_weights(suite.evaluation)
    checkpoint_root = Path(checkpoint_dir or checkpoint.DEFAULT_ROOT).resolve()
    checkpoint.check_writable(checkpoint_root)
    if executor == "ray":
        from bench.run import ray_executor

        ray_executor.check_installed()
    # Every input the user can get wrong is checked by now: only from here on is the store
    # touched. Other `bench run`s of this suite may share the store: cells are claimed in it.
    client = tracking.connect(tracking_uri)
    machine = hardware.device_name(target)  # the CPU model and whether bf16 is native there
    how = f"{parallel} processes on {machine}" if parallel > 1 else machine
    if executor == "ray":
        how = f"Ray ({ray_address or 'local instance'})"
    what = f"{len(cells)} cells"
    if suite.search is not None:
        what = f"a search of {len(cells)} trials, then the seeds of each variant's best,"
    echo(
        f"suite {suite.name}: {what} on {how}, {data.name} from {data.source} "
        f"({len(data.train.images)} train / {len(data.eval.images)} eval images"
        + (f", {data.preprocessing.describe()}" if not data.preprocessing.is_identity else "")
        + "), "
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
        cache_dir=str(default_cache_dir().resolve()),
        lease_seconds=lease_seconds,
    )
    context = build_context(settings, echo, progress, client=client, data=data)
    evaluator = context.evaluator
    echo(
        f"evaluation: {suite.evaluation.num_samples} samples vs {len(data.eval.images)} "
        f"{suite.dataset.eval_split} images; feature spaces: {', '.join(evaluator.spaces)} "
        f"(domain classifier test accuracy {evaluator.classifier_accuracy:.4f})"
    )
    if data.validation is not None:
        echo(
            f"search: {len(data.validation.images)} validation images held out of the "
            f"{suite.dataset.train_split} split; trials are scored on them, the follow-up seeds "
            f"on the {suite.dataset.eval_split} images; all train on the other "
            f"{len(data.train.images)}"
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
        wait_for_other_workers(context, summary, run_stage)
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
) -> Executor:
    """The chosen executor as one function: run_stage(todo, summary) runs the (prefix, cell)
    pairs of `todo` and records each cell's outcome in `summary`."""
    if executor == "ray":
        from bench.run import ray_executor

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
        from bench.run import parallel as local_parallel

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
    outcome, the worst value, not a cell to try again. A cell whose latest run diverged is an
    outcome too (a failed cell of the suite, without --rerun); one that crashed or lost its
    worker is tried again."""
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
        elif not context.rerun and (reason := _diverged_last(client, experiment, cell.id)):
            # an outcome of the cell, not an accident: --rerun to train it again
            context.echo(f"{prefix}: not retried, it diverged before (--rerun trains it again)")
            summary.failed.append((cell.name, reason))
        else:
            todo.append((prefix, cell))
    return todo


def _diverged_last(client, experiment: str, cell_id: str) -> str | None:
    """The failure reason when the cell's latest run diverged, else None."""
    run = tracking.latest_run(client, experiment, cell_id)
    if run is None or run.info.status != "FAILED" or not tracking.diverged(run):
        return None
    return run.data.tags.get(keys.TAG_FAILURE, "diverged").splitlines()[0]


def run_search(
    suite: Suite, trials: list[Cell], context: SuiteContext, summary: Summary, run_stage
) -> None:
    """Stage 1: every variant's trials, nested under one parent run per variant. Stage 2, once a
    variant's trials have all ended: its best trial's setting with the follow-up seeds. A rerun
    after an interruption continues whichever stage it stopped in."""
    from bench.run import search  # reads the trials' outcomes back from the store

    client, experiment, echo = context.client, context.experiment, context.echo
    labels = list(dict.fromkeys(cell.variant.label for cell in trials))
    by_label = {label: [c for c in trials if c.variant.label == label] for label in labels}
    tagged = []
    for label in labels:
        sid = search_id(suite, by_label[label])
        parent = tracking.search_parent_run(
            client, experiment, suite.name, label, sid, context.rerun, context.lease.settle
        )
        run_tags = ((keys.TAG_SEARCH_ID, sid), (keys.TAG_PARENT_RUN, parent))
        by_label[label] = [replace(c, run_tags=run_tags) for c in by_label[label]]
        tagged += by_label[label]
    run_stage(pending(tagged, context, summary, failed_ends=True), summary)
    wait_for_other_workers(context, summary, run_stage)  # a choice needs every trial ended
    if summary.interrupted:
        return
    metric = suite.search.select
    lower = table.selection_metrics()[metric]
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
        best = best_trial(results, lower)
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
    wait_for_other_workers(context, summary, run_stage)


def wait_for_other_workers(context: SuiteContext, summary: Summary, run_stage) -> None:
    """Until no cell of the stage is held by another worker (summary.elsewhere): a cell it
    finishes is skipped here, one it fails is counted as failed (a trial: the worst value), and
    one whose worker went silent for the lease (or died on this machine) is taken over. Prints
    what it waits for whenever that changes, and once a minute."""
    client, experiment, lease = context.client, context.experiment, context.lease
    poll = min(5.0, lease.heartbeat)
    shown, shown_at = None, 0.0
    with stop_on_signals(context.echo) as stop:
        while summary.elsewhere and not summary.interrupted:
            held, summary.elsewhere = summary.elsewhere, []
            waiting, orphans = [], []
            for prefix, cell in held:
                if tracking.finished_run(client, experiment, cell.id) is not None:
                    context.echo(f"{prefix}: finished by another worker")
                    summary.skipped.append(cell.name)
                    continue
                holder = claims.holder(tracking.running_runs(client, experiment, cell.id), lease)
                if holder is not None:
                    waiting.append((prefix, cell, worker_identity.worker_of(holder)))
                    continue
                failed = tracking.failed_run(client, experiment, cell.id)
                if failed is not None and (failed.info.end_time or 0) >= context.started_ms:
                    reason = failed.data.tags.get(keys.TAG_FAILURE, "failed").splitlines()[0]
                    worker = worker_identity.worker_of(failed) or "another worker"
                    context.echo(f"{prefix}: FAILED in {worker}: {reason}")
                    record(summary, cell, Outcome(reason=f"{reason} (in {worker})"), prefix)
                    continue
                orphans.append((prefix, cell))
            if orphans:
                names = ", ".join(cell.name for _, cell in orphans)
                context.echo(f"taking over {len(orphans)} cells whose workers stopped: {names}")
                run_stage(orphans, summary)
            if not waiting:
                continue
            summary.elsewhere += [(prefix, cell) for prefix, cell, _ in waiting]
            line = (
                f"waiting for {len(waiting)} cells held by other workers: "
                + ", ".join(f"{cell.name} ({worker})" for _, cell, worker in waiting)
                + f"; a worker silent for {lease.seconds:g} s is taken over"
            )
            if line != shown or time.monotonic() - shown_at > 60:
                context.echo(line)
                shown, shown_at = line, time.monotonic()
            deadline = time.monotonic() + poll
            while time.monotonic() < deadline and not stop.received:
                time.sleep(0.1)
            if stop.received:
                summary.interrupted = stop.received
                summary.not_run += [cell.name for _, cell in summary.elsewhere]
                summary.elsewhere = []
