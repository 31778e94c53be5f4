"""Suite wall time with K cells at once: `bench run SUITE --parallel K` for K = 1, 2, 4.

    uv run python benchmarks/parallel_walltime.py [suites/smoke.yaml] [--ks 1,2,4] [--device auto]
        [--steps N] [--seeds 0,1] [--synthetic]

Runs the whole suite once per K, in-process through bench.runner.run_suite (the code path of
`bench run`), each into its own throw-away MLflow store and checkpoint folder, and prints the wall
time of each and the speed-up over the first K listed. Asserts nothing.

Before the timings, one cell of the suite runs for one step so that what every run shares is
already on disk (the dataset's decoded arrays, the domain classifier, the real images' feature
statistics): each K then pays the same, i.e. nothing, for them. --steps overrides the suite's
budget (in steps) for a quicker measurement; --seeds replaces its seeds (more cells, more to run
concurrently). --synthetic swaps the dataset for the synthetic one with the same image shape and
split sizes (the suite's limits, else the real set's sizes): the same compute, for a machine that
lacks the files (the GPU machine, where `python3 benchmarks/parallel_walltime.py
suites/mnist_ablation.yaml --ks 1 --synthetic` gives the headline suite's wall time).

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

from figures import machine_line

from bench.data import DatasetNotFound
from bench.run.runner import run_suite
from bench.run.train import select_device
from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.suite.schema import SuiteError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="suites/smoke.yaml")
    parser.add_argument("--ks", default="1,2,4", help="comma-separated numbers of processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=None, help="override budget.steps")
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds, replacing the suite's"
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="synthetic data of the suite dataset's shape and size",
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


# training / evaluation images of the real sets (their standard train and test splits)
REAL_SIZES = {"mnist": (60000, 10000), "fashion-mnist": (60000, 10000), "cifar10": (50000, 10000)}


def synthetic_stand_in(dataset):
    """The synthetic dataset with the image shape and split sizes of `dataset`."""
    if dataset.name.startswith("synthetic"):
        return dataset
    sizes = {"train": REAL_SIZES[dataset.name][0], "test": REAL_SIZES[dataset.name][1]}
    return dataset.model_copy(
        update={
            "name": "synthetic-rgb" if dataset.name == "cifar10" else "synthetic",
            "root": None,
            "train_limit": dataset.train_limit or sizes[dataset.train_split],
            "eval_limit": dataset.eval_limit or sizes[dataset.eval_split],
        }
    )


def with_overrides(suite, steps: int | None, seeds: list[int] | None, synthetic: bool):
    update = {}
    if synthetic:
        update["dataset"] = synthetic_stand_in(suite.dataset)
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
        suite = with_overrides(load_suite(args.suite), args.steps, args.seeds, args.synthetic)
        device = select_device(args.device)
    except SuiteError as err:
        sys.exit(f"error: {err}")
    suite_text = Path(args.suite).read_text()
    cells = expand(suite)
    budget = (
        f"{suite.budget.steps} steps" if suite.budget.steps else f"{suite.budget.epochs} epochs"
    )
    d = suite.dataset
    print(f"suite {args.suite}: {len(cells)} cells, budget {budget}, data {d.name} ", end="")
    print(f"(train_limit {d.train_limit}, eval_limit {d.eval_limit})")
    print(f"{machine_line(device)}; {os.cpu_count()} CPUs")

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
