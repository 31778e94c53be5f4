"""What a suite will cost, before it runs: a timed training step of each variant on the chosen
device (after warm-up calls), times each cell's budget, summed over the cells. Training only:
evaluation, data loading and the domain network come on top (a few percent at the shipped
budgets)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

import models
from bench.run import hardware
from bench.run.train import MEMORY_FORMATS, autocast, total_steps
from bench.suite.expand import Cell, expand
from bench.suite.load import declared_image_shape
from bench.suite.schema import Suite
from bench.suite.search import follow_up_seeds, trial_cells

TIMED_STEPS = 2
WARN_CPU_HOURS = 3.0  # a CPU run estimated longer than this is warned about before it starts
# training images of the built-in datasets' splits (a train_limit / eval_limit caps them)
BUILTIN_TRAIN_IMAGES = {
    "mnist": {"train": 60_000, "test": 10_000},
    "fashion-mnist": {"train": 60_000, "test": 10_000},
    "cifar10": {"train": 50_000, "test": 10_000},
    "synthetic": {"train": 2048, "test": 512},
    "synthetic-rgb": {"train": 2048, "test": 512},
}


@dataclass(frozen=True)
class Estimate:
    seconds: float  # training of every cell, one after another
    rows: list[tuple[str, float, int, int]]  # label, seconds per step, steps per cell, cells
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def train_images(suite: Suite) -> int | None:
    dataset = suite.dataset
    sizes = BUILTIN_TRAIN_IMAGES.get(dataset.name)
    if sizes is None:
        return dataset.train_limit  # image files: only a limit tells without reading them
    return min(sizes[dataset.train_split], dataset.train_limit or sizes[dataset.train_split])


@torch.no_grad()
def _noise_batch(shape, batch_size: int, device: torch.device) -> torch.Tensor:
    return torch.rand(batch_size, *shape, device=device) * 2 - 1


def step_seconds(cell: Cell, shape: tuple[int, int, int], device: torch.device) -> float:
    """Wall time of one training step of the cell's variant (n_critic calls of train_step under
    generator-update parity) on random images: the faster of two steps, after two warm-up calls
    (the first ones allocate the optimizer state and the memory pools)."""
    torch.manual_seed(0)
    model = models.build(cell.variant.model, cell.variant.options, shape, cell.hparams(), device)
    calls = model.n_critic if cell.budget.parity == "generator_updates" else 1
    batch = _noise_batch(shape, cell.budget.batch_size, device)
    # the cell's own compute settings (compile aside: its first steps are compilation)
    channels_last = hardware.channels_last_for(cell.compute.channels_last, device)
    if channels_last:
        model.to_channels_last()
    batch = batch.contiguous(memory_format=MEMORY_FORMATS[channels_last])
    with autocast(device, cell.compute.precision):
        for _ in range(2):
            model.train_step(batch)
        timings = []
        for _ in range(TIMED_STEPS):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for _ in range(calls):
                model.train_step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings.append(time.perf_counter() - started)
    return min(timings)


def estimate(suite: Suite, device: torch.device) -> Estimate | str:
    """The suite's training time on `device`, or why it cannot be told before reading the data."""
    shape = declared_image_shape(suite.dataset)
    if shape is None:
        return "no estimate: the image size is known once the files are read (set image_size)"
    images = train_images(suite)
    if suite.search is None:
        stages = [(expand(suite), 1, None)]
    else:  # every trial, then each variant's follow-up seeds, timed with its first trial
        trials = trial_cells(suite)
        firsts = list({cell.variant.label: cell for cell in reversed(trials)}.values())[::-1]
        stages = [(trials, 1, None), (firsts, len(follow_up_seeds(suite)), suite.budget)]
    rows, seconds, timed = [], 0.0, {}
    for cells, copies, budget in stages:
        for cell in cells:
            cell_budget = budget or cell.budget
            if cell_budget.epochs is not None and images is None:
                return "no estimate: an epoch budget on image files needs their count (train_limit)"
            steps = total_steps(
                images or 0, cell_budget.batch_size, cell_budget.epochs, cell_budget.steps
            )
            if cell.variant_id not in timed:
                timed[cell.variant_id] = step_seconds(cell, shape, device)
            seconds += timed[cell.variant_id] * steps * copies
            rows.append((cell.variant.label, timed[cell.variant_id], steps, copies))
    channels_last = hardware.channels_last_for(suite.compute.channels_last, device)
    return Estimate(seconds, _by_label(rows), device, suite.compute.precision, channels_last)


def _by_label(rows: list[tuple[str, float, int, int]]) -> list[tuple[str, float, int, int]]:
    """One row per label and budget: its seconds per step, steps per cell and number of cells."""
    merged: dict[tuple[str, int], list] = {}
    for label, per_step, steps, copies in rows:
        entry = merged.setdefault((label, steps), [label, per_step, steps, 0])
        entry[3] += copies
    return [tuple(entry) for entry in merged.values()]


def describe(found: Estimate | str) -> list[str]:
    """The lines `bench run --dry-run` prints: the total, each variant, and a warning when a CPU
    run would take hours."""
    if isinstance(found, str):
        return [found]
    layout = "channels_last" if found.channels_last else "contiguous"
    lines = [
        f"device: {hardware.device_name(found.device)}",
        f"estimated training time ({found.precision}, {layout}): {_duration(found.seconds)} for "
        "all cells one after another (a timed step per variant; evaluation not included)",
    ]
    for label, per_step, steps, cells in found.rows:
        lines.append(
            f"  {label:<28} {per_step * 1000:8.1f} ms/step x {steps} steps x {cells} cells"
        )
    if found.precision == "bf16" and not hardware.bf16_native(found.device):
        lines.append(
            "warning: bf16 is not native on this device (emulated, several times slower than "
            "fp32): bench run refuses it; use --precision fp32 (or --allow-slow-bf16 to insist)"
        )
    if found.device.type == "cpu" and found.hours > WARN_CPU_HOURS:
        lines.append(
            f"warning: about {_duration(found.seconds)} on this CPU; this suite is meant for a GPU "
            "(--device cuda), or give it a smaller budget (--set budget.steps=N)"
        )
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
