"""Suite wall time with K cells at once: `bench run SUITE --parallel K` for K = 1, 2, 4.

    uv run python benchmarks/parallel_walltime.py [suites/smoke.yaml] [--ks 1,2,4] [--device auto]
        [--steps N] [--seeds 0,1]

Runs the whole suite once per K, in-process through bench.runner.run_suite (the code path of
`bench run`), each into its own throw-away MLflow store and checkpoint folder, and prints the wall
time of each and the speed-up over the first K listed. Asserts nothing.

Before the timings, one cell of the suite runs for one step so that what every run shares is
already on disk (the dataset's decoded arrays, the domain classifier, the real images' feature
statistics): each K then pays the same, i.e. nothing, for them. --steps overrides the suite's
budget (in steps) for a quicker measurement; --seeds replaces its seeds (more cells, more to run
concurrently).

On a CPU the K processes share the cores (each gets cpu_count // K torch threads), so K > 1 gains
little once one process already keeps every core busy; the figure that matters is on a GPU, where
one small cell leaves most of the device idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.data import DatasetNotFound
from bench.runner import run_suite
from bench.suite import SuiteError, expand, load_suite
from bench.train import select_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="suites/smoke.yaml")
    parser.add_argument("--ks", default="1,2,4", help="comma-separated numbers of processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=None, help="override budget.steps")
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds, replacing the suite's"
    )
    args = parser.parse_args(argv)
    try:
        args.ks = [int(k) for k in args.ks.split(",")]
        args.seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        parser.error("--ks and --seeds take comma-separated integers")
    if any(k < 1 for k in args.ks):
        parser.error("--ks: every K must be at least 1")
    return args


def with_overrides(suite, steps: int | None, seeds: list[int] | None):
    update = {}
    if steps is not None:
        update["budget"] = suite.budget.model_copy(update={"steps": steps, "epochs": None})
    if seeds is not None:
        update["seeds"] = seeds
    return suite.model_copy(update=update)


def run_once(suite, suite_text: str, device: str, parallel: int) -> tuple[float, object]:
    """Wall seconds of one whole suite run into a fresh store and checkpoint folder."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = run_suite(
            suite,
            tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}",
            device=device,
            progress=False,
            echo=lambda line: None,
            suite_text=suite_text,
            checkpoint_dir=Path(tmp) / "checkpoints",
            parallel=parallel,
        )
        return time.perf_counter() - started, summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        suite = with_overrides(load_suite(args.suite), args.steps, args.seeds)
        device = select_device(args.device)
    except SuiteError as err:
        sys.exit(f"error: {err}")
    suite_text = Path(args.suite).read_text()
    cells = expand(suite)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"suite {args.suite}: {len(cells)} cells, budget {suite.budget.steps or '-'} steps")
    print(f"device {device} ({name}), {os.cpu_count()} CPUs, torch {torch.__version__}")

    warm = suite.model_copy(
        update={
            "models": suite.models[:1],
            "seeds": suite.seeds[:1],
            "budget": suite.budget.model_copy(update={"steps": 1, "epochs": None}),
        }
    )
    try:
        seconds, _ = run_once(warm, suite_text, str(device), 1)
    except (DatasetNotFound, SuiteError) as err:
        sys.exit(f"error: {err}")
    print(f"warm-up (one cell, one step; fills the shared caches): {seconds:.1f} s\n")

    print(f"{'K':>3}  {'wall s':>9}  {'speed-up':>8}  {'cells/min':>9}  outcome")
    baseline = None
    for k in args.ks:
        seconds, summary = run_once(suite, suite_text, str(device), k)
        baseline = baseline or seconds
        outcome = "all finished" if summary.ok else f"{len(summary.failed)} failed"
        print(
            f"{k:>3}  {seconds:>9.1f}  {baseline / seconds:>7.2f}x  "
            f"{len(cells) / seconds * 60:>9.2f}  {outcome}",
            flush=True,
        )


if __name__ == "__main__":
    main()
