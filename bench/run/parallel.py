"""The local multi-process executor: `bench run SUITE --parallel K`.

Small cells cannot fill a large GPU (nor, on a CPU, use every core well from one Python thread),
so K worker processes each run one cell at a time on the same device. Each worker is a fresh
(spawned) Python process that imports the suite's plugins (from the main process's copies of
their source, bench/suite/plugins.py), rebuilds the suite's context from `cell.RunSettings` (the
data, the evaluator from the caches the main process has just filled, its own MLflow client) and
asks the main process for one cell after another: the main process hands out the cells in suite
order and records how each ended.

Per-process bounds: each worker uses cpu_count // K CPU threads, and on a GPU at most 0.9 / K of
its memory (torch.cuda.set_per_process_memory_fraction: a cell that needs more fails with an
out-of-memory error instead of starving the others). CPU memory is not bounded.

Failures stay inside their cell: a cell that raises or diverges fails as it would run alone. A
worker process that dies (killed, segfault) loses its cell: the cell is tried once more by a fresh
worker (resuming from its checkpoint), and fails if that worker dies too. Stop signals: the first
SIGINT/SIGTERM to the main process is passed on to the workers as SIGTERM; each stops its cell at
the next step boundary with a checkpoint, and no further cells start.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from dataclasses import dataclass

import torch

from bench.run.cell import execute, fail_lost_cell
from bench.run.context import RunSettings, SuiteContext, build_context, stop_on_signals
from bench.run.summary import Outcome, Summary, record
from bench.suite import plugins
from bench.suite.expand import Cell, plugins_used

MAX_ATTEMPTS = 2  # a cell whose worker died is tried once more
POLL_SECONDS = 0.5
GPU_MEMORY_SHARE = 0.9  # of the device, split evenly between the workers


def limit_resources(device: str, workers: int) -> None:
    """Bound this worker's share of the machine: CPU threads, and GPU memory on CUDA."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    target = torch.device(device)
    if target.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(GPU_MEMORY_SHARE / workers, target)


def worker_main(
    settings: RunSettings, workers: int, slot: int, inbox, outbox, plugin_sources=()
) -> None:
    """A worker process: import the suite's plugins (from the main process's copies of their
    source) and build the context, then run the cells the main process sends until it sends None
    (or a stop signal arrives)."""

    def echo(line: str) -> None:
        print(line, flush=True)

    limit_resources(settings.device, workers)
    with stop_on_signals(echo) as stop:
        try:
            plugins.install(plugin_sources)  # before any model name is resolved
            context = build_context(settings, echo, progress=False)
        except Exception as err:  # e.g. out of GPU memory: the main process decides
            outbox.put(("broken", slot, f"{type(err).__name__}: {err}".splitlines()[0]))
            return
        context.stop = stop
        outbox.put(("ready", slot, None))
        while not stop.received:
            task = inbox.get()
            if task is None:
                break
            prefix, cell = task
            outbox.put(("done", slot, execute(cell, context, prefix)))


@dataclass
class Worker:
    process: multiprocessing.process.BaseProcess
    inbox: object
    cell: tuple[str, Cell] | None = None  # what it runs now
    ready: bool = False


def run_cells(
    todo: list[tuple[str, Cell]],
    summary: Summary,
    context: SuiteContext,
    settings: RunSettings,
    workers: int,
) -> None:
    """Run `todo` on `workers` processes, recording each cell's outcome in `summary`."""
    spawn = multiprocessing.get_context("spawn")  # never fork a process holding CUDA or threads
    plugin_sources = plugins_used(settings.suite)  # a spawned process has imported none of them
    outbox = spawn.Queue()
    waiting = list(todo)
    attempts: dict[str, int] = {}
    pool: dict[int, Worker] = {}
    next_slot = 0
    broken_reason = None

    def start_worker() -> None:
        nonlocal next_slot
        inbox = spawn.Queue()
        process = spawn.Process(
            target=worker_main,
            args=(settings, workers, next_slot, inbox, outbox, plugin_sources),
            name=f"bench-worker-{next_slot}",
        )
        process.start()
        pool[next_slot] = Worker(process, inbox)
        next_slot += 1

    def hand_out(worker: Worker) -> None:
        if waiting and not stop.received:
            worker.cell = waiting.pop(0)
            attempts[worker.cell[1].id] = attempts.get(worker.cell[1].id, 0) + 1
            worker.inbox.put(worker.cell)
        else:
            worker.cell = None
            worker.inbox.put(None)

    def handle(message) -> None:
        nonlocal broken_reason
        kind, slot, payload = message
        worker = pool.get(slot)
        if worker is None:
            return
        if kind == "broken":
            broken_reason = payload
            context.echo(f"worker {slot} could not start: {payload}")
            return
        if kind == "done":
            prefix, cell = worker.cell
            record(summary, cell, payload, prefix)
        worker.ready = True
        hand_out(worker)

    def reap() -> None:
        """Workers that exited: a lost cell is retried once, then failed."""
        for slot, worker in list(pool.items()):
            if worker.process.is_alive():
                continue
            worker.process.join()
            del pool[slot]
            if worker.cell is None:
                continue
            prefix, cell = worker.cell
            code = worker.process.exitcode
            how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"
            reason = f"worker process died ({how}) while running the cell"
            if stop.received:  # stopping anyway: the cell resumes on the next `bench run`
                waiting.insert(0, worker.cell)
            elif attempts[cell.id] < MAX_ATTEMPTS:
                context.echo(f"{prefix}: {reason}; trying it once more")
                waiting.insert(0, worker.cell)
            else:
                context.echo(f"{prefix}: FAILED: {reason}")
                fail_lost_cell(context, cell, reason, worker.process.pid)
                record(summary, cell, Outcome(reason=reason))

    def drain(timeout: float) -> None:
        try:
            handle(outbox.get(timeout=timeout))
            while True:
                handle(outbox.get_nowait())
        except queue.Empty:
            pass

    with stop_on_signals(context.echo) as stop:
        forwarded = False
        for _ in range(min(workers, len(waiting))):
            start_worker()
        while pool:
            drain(POLL_SECONDS)
            if stop.received and not forwarded:
                forwarded = True
                for worker in pool.values():
                    if worker.process.is_alive():
                        os.kill(worker.process.pid, signal.SIGTERM)
            if any(not w.process.is_alive() for w in pool.values()):
                drain(POLL_SECONDS)  # what an exited worker said before it went
                reap()
            busy = sum(1 for w in pool.values() if w.cell is not None or not w.ready)
            if waiting and not stop.received and busy < workers and broken_reason is None:
                start_worker()  # replaces a lost worker
    if broken_reason is not None:
        for prefix, cell in waiting:
            context.echo(f"{prefix}: FAILED: no worker could start: {broken_reason}")
            record(summary, cell, Outcome(reason=f"no worker could start: {broken_reason}"))
        waiting.clear()
    if stop.received:
        # the signal the user sent (the workers' cells say SIGTERM: the one passed on to them)
        summary.interrupted = stop.received
    summary.not_run += [cell.name for _, cell in waiting]
