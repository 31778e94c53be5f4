"""The training loop: batches drawn from the device-resident training tensor, one `train_step` per
batch, losses accumulated on the device and fetched once every `log_every` steps.

No DataLoader and no host copies in the hot loop: the whole training split is one float tensor on
the training device, shuffled there with a seeded generator once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


class Diverged(RuntimeError):
    """A loss became NaN or infinite."""

    def __init__(self, step: int, name: str, value: float):
        super().__init__(f"diverged at step {step}: {name} = {value}")
        self.step, self.name, self.value = step, name, value


@dataclass
class TrainResult:
    steps: int
    images: int
    seconds: float
    final_losses: dict[str, float]

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return num_train // batch_size  # the last incomplete batch is dropped (constant batch size)


def total_steps(num_train: int, batch_size: int, epochs: float | None, steps: int | None) -> int:
    if steps is not None:
        return steps
    return max(1, math.ceil(epochs * steps_per_epoch(num_train, batch_size)))


def shuffled_batches(
    images: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless stream of batches; a fresh permutation (on the images' device) every epoch."""
    per_epoch = steps_per_epoch(len(images), batch_size)
    while True:
        order = torch.randperm(len(images), generator=generator, device=images.device)
        for i in range(per_epoch):
            yield images[order[i * batch_size : (i + 1) * batch_size]]


class LossAccumulator:
    """Sums losses on the device; `means()` is the only host synchronisation."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            if name in self.sums:
                self.sums[name] += value
                self.counts[name] += 1
            else:
                self.sums[name] = value.clone()
                self.counts[name] = 1

    def means(self) -> dict[str, float]:
        if not self.sums:
            return {}
        names = list(self.sums)
        values = torch.stack([self.sums[n].float() for n in names]).tolist()
        means = {n: v / self.counts[n] for n, v in zip(names, values, strict=True)}
        self.sums.clear()
        self.counts.clear()
        return means


def train(
    model,
    images: torch.Tensor,
    batch_size: int,
    num_steps: int,
    seed: int,
    log_every: int,
    log_losses: Callable[[int, dict[str, float]], None],
    progress: bool = True,
    description: str = "",
    periodic: tuple[int, Callable[[int], None]] | None = None,
) -> TrainResult:
    """Run `num_steps` train steps of `model` on `images` (float, model range, on the device).

    Every `log_every` steps (and at the end) the mean of each loss over the window is passed to
    `log_losses(step, means)`; a non-finite mean raises Diverged. `periodic = (every, fn)` calls
    fn(step) every `every` steps before the last (evaluation over training; its time is excluded
    from the training time).
    """
    generator = torch.Generator(device=images.device).manual_seed(seed)
    batches = shuffled_batches(images, batch_size, generator)
    accumulator = LossAccumulator()
    means: dict[str, float] = {}
    model.train()
    start = time.perf_counter()
    bar = tqdm(total=num_steps, desc=description, disable=not progress, leave=False, unit="step")
    for step in range(1, num_steps + 1):
        accumulator.add(model.train_step(next(batches)))
        if step % log_every == 0 or step == num_steps:
            means = accumulator.means()
            for name, value in means.items():
                if not math.isfinite(value):
                    bar.close()
                    raise Diverged(step, name, value)
            log_losses(step, means)
            bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()}, refresh=False)
        bar.update(1)
        if periodic is not None and step % periodic[0] == 0 and step < num_steps:
            paused = time.perf_counter()
            periodic[1](step)
            start += time.perf_counter() - paused
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    seconds = time.perf_counter() - start
    bar.close()
    return TrainResult(num_steps, num_steps * batch_size, seconds, means)
