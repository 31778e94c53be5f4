"""The lifecycle of one cell, in whichever process an executor runs it.

For each cell: continue its interrupted run if a local checkpoint of that run exists
(bench/run/checkpoint.py); otherwise start a run. Then build the model (seeded), train
(checkpointing every budget.checkpoint_every steps), evaluate, log artifacts and finish the run. A
cell that diverges or raises is ended as failed with its reason and keeps its last good checkpoint;
its outcome goes back to the executor, and the suite goes on.

Also here: what every executor shares. `execute` runs one cell in a SuiteContext
(bench/run/context.py) and returns its Outcome; `record` (bench/run/summary.py) files an outcome
in the Summary. An executor is anything that runs a list of (progress prefix, cell) pairs and
records each outcome (see `Executor`): `run_cells` below (one after another, in this process),
bench/run/parallel.py (worker processes) and bench/run/ray_executor.py (Ray tasks). None of them
knows about suites' stages (bench/run/runner.py).

While cells run, the first SIGINT (Ctrl-C) or SIGTERM stops training at the next step boundary
with a checkpoint, marks the run KILLED and ends the suite (Summary.interrupted); a second Ctrl-C
stops at once (KeyboardInterrupt, the run is marked KILLED and resumes from its previous
checkpoint). A process killed outright (SIGKILL, power loss) leaves its run RUNNING: the next
`bench run` resumes it from its checkpoint, or ends it as KILLED and starts over when it had none.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Protocol

import torch

import models
from bench import keys, tracking
from bench.metrics import evaluate
from bench.run import checkpoint, hardware
from bench.run.artifacts import log_artifacts, log_served_model
from bench.run.context import SuiteContext, stop_on_signals
from bench.run.summary import Outcome, Summary, record
from bench.run.train import (
    MEMORY_FORMAT_NAMES,
    MEMORY_FORMATS,
    Diverged,
    Interrupted,
    steps_per_epoch,
    total_steps,
    train,
)
from bench.suite.expand import Cell
from bench.tracking import claims, worker_identity

LOST_EXIT_GRACE_S = 10.0  # how long a lost worker of this machine may take to finish exiting


class Executor(Protocol):
    """The interface every executor offers the suite runner: run these (progress prefix, cell)
    pairs and record each cell's outcome in `summary` (finished, failed with its reason, or
    interrupted: then summary.interrupted and summary.not_run say what is left)."""

    def __call__(self, todo: list[tuple[str, Cell]], summary: Summary) -> None: ...


def execute(cell: Cell, context: SuiteContext, prefix: str) -> Outcome:
    """Run one cell in this process (any executor's worker) and say how it ended."""
    try:
        reason = run_cell(cell, context, prefix)
    except Interrupted as err:
        context.echo(f"{prefix}: {err}, checkpoint saved")
        return Outcome(interrupted=err.reason, step=err.step)
    except HeldElsewhere as err:
        context.echo(f"{prefix}: {err}")
        return Outcome(elsewhere=err.worker)
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
            record(summary, cell, outcome, prefix)
            if outcome.interrupted is not None:
                summary.not_run += [c.name for _, c in todo[position + 1 :]]
                return


def fail_lost_cell(context: SuiteContext, cell: Cell, reason: str, pid: int | None = None) -> None:
    """End the runs a lost worker left RUNNING for `cell` as failed (its checkpoint stays, but a
    failed run starts over on the next `bench run`): those of process `pid` of this machine, or
    without a pid those whose claim is not live (a worker of this machine gets LOST_EXIT_GRACE_S to
    finish exiting). A live claim of another worker is never ended."""
    for run in tracking.running_runs(context.client, context.experiment, cell.id):
        if pid is not None:
            lost = worker_identity.is_process(run, pid) or keys.TAG_WORKER not in run.data.tags
        else:
            lost = not claims.is_live(run, context.lease)
            # a worker of this machine that the executor reports lost may still be exiting
            waited = time.monotonic()
            while not lost and worker_identity.local_pid(run) is not None:
                if time.monotonic() - waited > LOST_EXIT_GRACE_S:
                    break
                time.sleep(0.2)
                lost = not claims.is_live(run, context.lease)
        if lost:
            tracking.fail(context.client, run.info.run_id, reason, kind=keys.FAILURE_LOST)


class HeldElsewhere(Exception):
    """Another worker holds a live claim on the cell, or has finished it meanwhile."""

    def __init__(self, worker: str, message: str):
        super().__init__(message)
        self.worker = worker


def claim_cell(cell: Cell, context: SuiteContext) -> claims.Claim:
    """A claim on a new run of `cell` that holds the cell (bench/tracking/claims.py: flag, then
    check), or HeldElsewhere. When every candidate withdrew in a race, it tries again after a
    random pause. Params and dataset inputs are logged only once it holds (open_cell_run)."""
    client, experiment, lease = context.client, context.experiment, context.lease
    tags = dict(context.tags)
    if context.evaluator.inception_skip_reason:
        tags[keys.TAG_INCEPTION_SKIPPED] = context.evaluator.inception_skip_reason

    def claims_of_cell() -> list:
        return tracking.running_runs(client, experiment, cell.id)

    def create_run(claim_tags: dict[str, str]) -> str:
        return tracking.create_cell_run(client, experiment, cell, tags | claim_tags)

    rival = None
    for attempt in range(claims.ATTEMPTS):
        if attempt:
            claims.retry_pause(lease)
        held = claims.holder(claims_of_cell(), lease)
        if held is not None:
            raise _held_by(held)
        claim = claims.new_claim(client, lease, create_run)
        election = claim.elect(claims_of_cell)
        finished = None if context.rerun else tracking.finished_run(client, experiment, cell.id)
        if finished is not None:
            if election.held:
                claims.withdraw(client, claim.run_id)
            raise HeldElsewhere(worker_identity.worker_of(finished), "finished by another worker")
        if election.held:
            return claim
        if election.rival is not None:
            rival = election.rival
        if not election.contested:
            break
    if rival is None:
        raise HeldElsewhere("", f"no claim won {claims.ATTEMPTS} elections; waiting to retry")
    raise _held_by(rival)


def _held_by(run) -> HeldElsewhere:
    worker = worker_identity.worker_of(run)
    return HeldElsewhere(worker, f"held by worker {worker} (run {run.info.run_id})")


def open_cell_run(
    cell: Cell, context: SuiteContext, folder: Path, prefix: str, claim: claims.Claim
) -> dict | None:
    """The checkpoint to resume from, or None, once `claim` holds the cell: the cell's
    interrupted run with its checkpoint when one is here (taken over from a dead worker, or our
    own killed one) becomes the claim's run; else the claim's new run is described. Runs of the
    cell that no live worker holds and that cannot be resumed are ended as KILLED, so that no run
    stays RUNNING forever. ClaimLost when the claim was lost meanwhile."""
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
    if saved is not None:
        claim.take_over(saved["run_id"])  # held by us before the elected run is withdrawn
    for run in tracking.running_runs(client, experiment, cell.id):
        if run.info.run_id == claim.run_id or claims.is_live(run, context.lease):
            continue
        why = "--rerun starts over" if context.rerun else f"none usable in {folder}"
        reason = f"interrupted before the first checkpoint ({why})"
        claim.check()
        tracking.fail(client, run.info.run_id, reason, killed=True)
    if saved is not None:
        echo(f"{prefix}: resuming run {claim.run_id} from step {saved['step']} ({folder})")
        return saved
    claim.check()
    checkpoint.remove(folder)  # a failed run's last good checkpoint: this cell starts over
    tracking.describe_cell_run(client, claim.run_id, cell, context.evaluator_for(cell).data)
    return None


def run_cell(cell: Cell, context: SuiteContext, description: str) -> str | None:
    """Train and evaluate one cell into its own MLflow run; None on success, else the reason.
    Raises Interrupted (after a checkpoint) when a stop signal arrived during training, and
    HeldElsewhere when another worker holds the cell or took it over: a worker that lost its
    claim stops without writing anything more to the run or its checkpoint folder."""
    started = time.perf_counter()
    folder = checkpoint.cell_folder(context.checkpoint_root, cell.suite, cell.id)
    claim = claim_cell(cell, context)
    try:
        with claim:  # beats until the run is ended
            resume = open_cell_run(cell, context, folder, description, claim)
            return _train_and_evaluate(cell, context, description, claim, resume, folder, started)
    except claims.ClaimLost as err:
        message = f"lost its claim on cell {cell.name} {err}; stopping without writing"
        raise HeldElsewhere(err.worker or "", message) from None


def _train_and_evaluate(
    cell: Cell,
    context: SuiteContext,
    description: str,
    claim: claims.Claim,
    resume: dict | None,
    folder: Path,
    started: float,
) -> str | None:
    """The cell's training and evaluation into the claim's run. Every write (to the run or the
    checkpoint folder) first asks claim.check(), which raises ClaimLost once the claim is lost."""
    client, train_images, run_id = context.client, context.train_images, claim.run_id
    evaluator = context.evaluator_for(cell)  # a trial: the validation images
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
        channels_last = hardware.channels_last_for(cell.compute.channels_last, evaluator.device)
        client.set_tag(run_id, keys.TAG_MEMORY_FORMAT, MEMORY_FORMAT_NAMES[channels_last])
        if channels_last:  # before compiling: the graphs see NHWC weights
            model.to_channels_last()
        if cell.compute.compile:
            model.compile_networks()
        num_steps = total_steps(len(train_images), budget.batch_size, budget.epochs, budget.steps)

        def log_losses(step: int, means: dict[str, float]) -> None:
            claim.check()
            if step > logged_until:
                values = {keys.train_key(name): value for name, value in means.items()}
                tracking.log_metrics(client, run_id, values, step)

        def save_checkpoint(step: int, state: dict) -> None:
            nonlocal saved_step
            claim.check()
            bookkeeping = {"cell_id": cell.id, "run_id": run_id, "device": evaluator.device.type}
            checkpoint.save(folder, state | bookkeeping)
            saved_step = step

        periodic = None
        if cell.evaluation.every_epochs:

            def evaluate_during_training(step: int) -> None:
                # evaluated again even when already logged: training must see the same state
                metrics, _ = evaluate.evaluate(model, evaluator, cell.seed, cheap=True)
                claim.check()
                if step > logged_until:
                    tracking.log_metrics(client, run_id, metrics, step)

            every = cell.evaluation.every_epochs * steps_per_epoch(
                len(train_images), budget.batch_size
            )
            periodic = (every, evaluate_during_training)

        def stop_requested() -> str | None:
            claim.check()  # at every step boundary: a lost claim stops before a checkpoint
            return context.stop() if context.stop is not None else None

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
            stop_requested=stop_requested,
            precision=cell.compute.precision,
            # a step is one generator update (its critic steps included), or one batch
            calls_per_step=model.n_critic if budget.parity == "generator_updates" else 1,
            memory_format=MEMORY_FORMATS[channels_last],
        )
        # The final evaluation and the logged weights in the default layout, whatever the
        # training's: `bench evaluate` rebuilds the model in that layout and must reproduce these
        # numbers exactly (NHWC kernels sum in another order).
        model.to(memory_format=torch.contiguous_format)
        metrics, images = evaluate.evaluate(model, evaluator, cell.seed)
        claim.check()
        tracking.log_metrics(client, run_id, metrics, num_steps)
        log_artifacts(client, run_id, cell, model, images, context.suite_text)
        claim.check()
        log_served_model(client, run_id, cell, model, evaluator, num_steps)
        timings = {
            **model.update_counts(budget.batch_size),  # generator_updates, ... (bench/keys.py)
            keys.TRAIN_SECONDS: result.seconds,
            keys.TRAIN_IMAGES_PER_S: result.images_per_second,
            keys.CELL_SECONDS: time.perf_counter() - started,
        }
        claim.check()
        tracking.log_metrics(client, run_id, timings, num_steps)
        tracking.set_note(client, run_id, tracking.run_note(cell, run_id, metrics | timings))
        client.set_tag(run_id, keys.TAG_EVALUATION_VERSION, evaluate.EVALUATION_VERSION)
        claim.check()  # the last one: the beats read FINISHED back from here on
        tracking.finish(client, run_id)
        checkpoint.remove(folder)  # the final weights are in the run's artifacts now
        return None
    except claims.ClaimLost:
        raise
    except Interrupted as err:
        claim.check()
        tracking.fail(client, run_id, str(err), killed=True)
        raise
    except KeyboardInterrupt:
        claim.check()
        tracking.fail(
            client, run_id, "interrupted (Ctrl-C twice)" + _kept(saved_step, folder), killed=True
        )
        raise
    except Diverged as err:
        claim.check()
        reason = str(err) + _kept(saved_step, folder)
        tracking.fail(client, run_id, reason, kind=keys.FAILURE_DIVERGED)
        return reason
    except Exception as err:  # one cell's failure (e.g. out of memory) must not stop the suite
        reason = f"{type(err).__name__}: {err}".splitlines()[0] + _kept(saved_step, folder)
        claim.check()
        tracking.fail(
            client, run_id, reason + "\n" + traceback.format_exc(), kind=keys.FAILURE_ERROR
        )
        return reason


def _kept(step: int | None, folder: Path) -> str:
    if step is None:
        return ""
    return f"; last good checkpoint: step {step} in {folder / checkpoint.FILE}"
