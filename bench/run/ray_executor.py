"""The Ray executor: `bench run SUITE --executor ray [--address ADDR]`.

Every cell is one Ray task. A task asks for `cpus_per_cell` CPUs and `gpus_per_cell` GPUs:
fractional GPU requests (default 0.25 when the cluster has GPUs) let several small cells share
one GPU. With no address a local Ray instance is started for this run (and stopped after it);
with an address (`ray://head:10001`, `auto`, or `head:6379`) the tasks go to that cluster.

Each worker process imports the suite's plugins from the main process's copies of their source
(a node needs no copy of the file) and rebuilds the suite's context once (`cell.build_context`,
cached per process) from `cell.RunSettings`: it reads the data from its own machine (same dataset
root rules as `bench run`), measures with the main process's domain classifier (shipped with the
settings, so every machine evaluates with the same network), and logs to the same tracking store,
which on a cluster must be a server every node reaches (`--tracking-uri http://head:5000`).

Semantics are the local executor's: finished cells are skipped; a cell that raises or diverges
fails inside its task and the others go on; a worker that is lost (killed, node gone) makes Ray
retry its task once (`max_retries`), which resumes the cell from its checkpoint when the
checkpoint folder is shared, and a second loss fails the cell, never the suite. The first
Ctrl-C/SIGTERM cancels the tasks: running cells are interrupted (their runs marked KILLED, their
last checkpoints kept) and the rest are not run.
"""

from __future__ import annotations

from bench.run.cell import execute, fail_lost_cell
from bench.run.context import RunSettings, SuiteContext, build_context, stop_on_signals
from bench.run.summary import Outcome, Summary, record
from bench.suite import plugins
from bench.suite.expand import Cell, plugins_used
from bench.suite.schema import SuiteError

DEFAULT_GPUS_PER_CELL = 0.25  # four small cells per GPU
MAX_RETRIES = 1  # a task whose worker was lost runs once more
POLL_SECONDS = 1.0

_contexts: dict[int, SuiteContext] = {}  # per worker process: settings id -> context


def check_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SuiteError(
            "--executor ray needs Ray, an optional dependency: uv sync --extra ray "
            "(or pip install 'vaegan-bench[ray]')"
        ) from None


def run_cell_task(
    settings: RunSettings, prefix: str, cell: Cell, plugin_sources: list[plugins.Plugin]
) -> Outcome:
    """The body of one Ray task: the cell, run in this worker process, with the suite's plugins
    imported from the main process's copies of their source (a node may have no file)."""
    key = hash((settings.suite_text, settings.tracking_uri, settings.device, settings.rerun))
    if key not in _contexts:
        plugins.install(plugin_sources)
        _contexts[key] = build_context(settings, echo=print, progress=False)
    return execute(cell, _contexts[key], prefix)


def run_cells(
    todo: list[tuple[str, Cell]],
    summary: Summary,
    context: SuiteContext,
    settings: RunSettings,
    address: str | None,
    gpus_per_cell: float | None,
    init_options: dict,
    cpus_per_cell: float = 1,
) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=True, **init_options)
    try:
        if gpus_per_cell is None:
            has_gpus = ray.cluster_resources().get("GPU", 0) > 0
            gpus_per_cell = DEFAULT_GPUS_PER_CELL if has_gpus else 0
        task = ray.remote(run_cell_task).options(
            num_cpus=cpus_per_cell,
            num_gpus=gpus_per_cell,
            max_retries=MAX_RETRIES,
            retry_exceptions=False,  # a cell's own errors are its outcome, not Ray's to retry
        )
        settings_ref, plugins_ref = ray.put(settings), ray.put(plugins_used(settings.suite))
        running = {
            task.remote(settings_ref, prefix, cell, plugins_ref): (prefix, cell)
            for prefix, cell in todo
        }
        context.echo(
            f"ray: {len(running)} tasks, {cpus_per_cell} CPU and {gpus_per_cell} GPU each, "
            f"cluster {ray.cluster_resources()}"
        )
        collect(running, summary, context)
    finally:
        if started_here:
            ray.shutdown()


def collect(running: dict, summary: Summary, context: SuiteContext) -> None:
    """Wait for every task and record its cell's outcome; the first signal cancels the rest."""
    import ray

    cancelled = False
    with stop_on_signals(context.echo) as stop:
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            if stop.received and not cancelled:
                cancelled = True
                summary.interrupted = stop.received
                for ref in running:
                    ray.cancel(ref)  # KeyboardInterrupt in a running task: checkpoint kept
            for ref in done:
                prefix, cell = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    summary.not_run.append(cell.name)
                    continue
                except ray.exceptions.RayError as err:
                    if cancelled:  # interrupted while running: resumes on the next run
                        summary.not_run.append(cell.name)
                        continue
                    reason = f"Ray task failed: {type(err).__name__}: {err}".splitlines()[0]
                    context.echo(f"{prefix}: FAILED: {reason}")
                    fail_lost_cell(context, cell, reason)
                    outcome = Outcome(reason=reason)
                record(summary, cell, outcome, prefix)
