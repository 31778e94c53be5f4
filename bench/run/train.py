"""The training loop: batches drawn from the device-resident training tensor, one `train_step` per
batch, losses accumulated on the device and fetched once every `log_every` steps.

No DataLoader and no host copies in the hot loop: the whole training split is one float tensor on
the training device, shuffled there with a seeded generator once per epoch.

Checkpoints and resuming: `training_state` captures everything the rest of the run depends on
(weights, optimizer state, step counter, the global and the shuffling random generators with the
position inside the current epoch, partial loss sums), so that a run resumed from it continues
exactly as the uninterrupted run would have (bit for bit on the CPU).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from bench.data.images import model_batch
from bench.suite.schema import SuiteError


class Diverged(RuntimeError):
    """A loss or a weight became NaN or infinite."""

    def __init__(self, step: int, name: str, value: float):
        super().__init__(f"diverged at step {step}: {name} = {value}")
        self.step, self.name, self.value = step, name, value


class Interrupted(Exception):
    """Training stopped at a step boundary on request (SIGINT/SIGTERM), after a checkpoint."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"interrupted by {reason} at step {step}")
        self.step, self.reason = step, reason


@dataclass
class TrainResult:
    steps: int
    images: int
    seconds: float
    final_losses: dict[str, float]

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def select_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise SuiteError(
            f"--device {requested!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SuiteError("--device cuda was asked for but no CUDA device is available")
    return device


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return num_train // batch_size  # the last incomplete batch is dropped (constant batch size)


def total_steps(num_train: int, batch_size: int, epochs: float | None, steps: int | None) -> int:
    if steps is not None:
        return steps
    return max(1, math.ceil(epochs * steps_per_epoch(num_train, batch_size)))


class ShuffledBatches:
    """Endless stream of batches; a fresh permutation (on the images' device) every epoch.

    Its state is the generator's state before the current epoch's permutation was drawn and the
    position inside that epoch: restoring it redraws the same permutation and goes on from there.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        self.images, self.batch_size, self.generator = images, batch_size, generator
        self.memory_format = memory_format
        self.per_epoch = steps_per_epoch(len(images), batch_size)
        self.epoch_start = generator.get_state()
        self.order: torch.Tensor | None = None
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.order is None or self.position == self.per_epoch:
            self._new_epoch()
        i = self.position * self.batch_size
        self.position += 1
        # uint8 storage (a quarter of float32's memory) is converted one batch at a time
        batch = model_batch(self.images[self.order[i : i + self.batch_size]], self.images.device)
        return batch.contiguous(memory_format=self.memory_format)

    def _new_epoch(self) -> None:
        self.epoch_start = self.generator.get_state()
        self.order = torch.randperm(
            len(self.images), generator=self.generator, device=self.images.device
        )
        self.position = 0

    def state(self) -> dict:
        return {"generator": self.epoch_start, "position": self.position}

    def load_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._new_epoch()
        self.position = int(state["position"])


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
            else:  # summed in float32 also when the step ran in bf16
                self.sums[name] = value.to(torch.float32, copy=True)
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

    def state(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state(self, state: dict, device: torch.device) -> None:
        self.sums = {name: value.to(device) for name, value in state["sums"].items()}
        self.counts = {name: int(count) for name, count in state["counts"].items()}


def check_finite(step: int, means: dict[str, float], model: torch.nn.Module) -> None:
    """Raise Diverged naming the first non-finite loss mean, else the first non-finite weight or
    buffer (batch-norm statistics). One host synchronisation for the whole model."""
    for name, value in means.items():
        if not math.isfinite(value):
            raise Diverged(step, name, value)
    named = [
        (name, t)
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
        if t.is_floating_point()
    ]
    if not named or torch.stack([torch.isfinite(t).all() for _, t in named]).all():
        return
    for name, tensor in named:
        if not torch.isfinite(tensor).all():
            value = tensor[~torch.isfinite(tensor)].flatten()[0].item()
            raise Diverged(step, f"weight {name}", value)


PRECISIONS = ("fp32", "bf16")
MEMORY_FORMATS = {False: torch.contiguous_format, True: torch.channels_last}  # by channels_last
MEMORY_FORMAT_NAMES = {False: "contiguous", True: "channels_last"}  # as runs record them


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The context one train step runs in: bf16 autocast (matmuls and convolutions in bfloat16,
    reductions and losses in float32, as torch's autocast lists decide), or plain float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    # No weight-cast cache: a train step updates weights inside the context (the discriminator
    # before the generator's turn) and the next forward must see the new ones. With the cache,
    # autocast reuses the bf16 copy made before the update: the generator would train against
    # the discriminator of the previous step.
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False
    )


def training_state(model, batches: ShuffledBatches, accumulator: LossAccumulator, step: int):
    """Everything a resumed run needs to continue after `step` exactly as this one would."""
    state = {
        "step": step,
        "model": model.state_dict(),  # includes the model's own step counter (num_steps)
        "optimizers": model.optimizer_state(),
        "torch_rng": torch.get_rng_state(),  # latent noise, reparameterisation
        "batches": batches.state(),
        "losses": accumulator.state(),
    }
    device = batches.images.device
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_training_state(
    state: dict, model, batches: ShuffledBatches, accumulator: LossAccumulator
) -> int:
    """Load a `training_state` into freshly built objects; returns the step it was taken at."""
    model.load_state_dict(state["model"])
    model.load_optimizer_state(state["optimizers"])
    torch.set_rng_state(state["torch_rng"])
    device = batches.images.device
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    batches.load_state(state["batches"])
    accumulator.load_state(state["losses"], device)
    return int(state["step"])


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
    checkpoint: tuple[int, Callable[[int, dict], None]] | None = None,
    resume: dict | None = None,
    stop_requested: Callable[[], str | None] | None = None,
    precision: str = "fp32",
    calls_per_step: int = 1,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> TrainResult:
    """Run `num_steps` train steps of `model` on `images` (on the device: uint8, converted per
    batch, or float in the model range).

    Every `log_every` steps (and at the end) the mean of each loss over the window is passed to
    `log_losses(step, means)`; a non-finite mean, weight or buffer raises Diverged. `periodic =
    (every, fn)` calls fn(step) every `every` steps before the last (evaluation over training; its
    time is excluded from the training time). `checkpoint = (every, save)` calls
    save(step, state) every `every` steps and after the last, with a `training_state` whose
    weights were just checked to be finite; `resume` is such a state to continue from.
    `stop_requested()` is asked at every step boundary: when it returns a reason, a checkpoint is
    saved and Interrupted is raised. precision="bf16" runs each train step under bf16 autocast
    (weights, optimizer state and evaluation stay float32). memory_format=torch.channels_last
    hands the model NHWC batches (for networks in that format: model.to_channels_last()).

    One step is `calls_per_step` calls of model.train_step, each on a fresh batch: with a budget
    in generator updates a WGAN-GP variant's step is its n_critic critic updates and the generator
    update after them, so steps, logging, checkpoints and resuming all count generator updates.
    """
    generator = torch.Generator(device=images.device).manual_seed(seed)
    batches = ShuffledBatches(images, batch_size, generator, memory_format)
    accumulator = LossAccumulator()
    first, seconds_before = 1, 0.0
    if resume is not None:
        first = restore_training_state(resume, model, batches, accumulator) + 1
        seconds_before = float(resume.get("train_seconds", 0.0))
    means: dict[str, float] = {}
    checked = 0  # the last step whose losses and weights were found finite
    model.train()
    start = time.perf_counter()
    bar = tqdm(
        total=num_steps,
        initial=first - 1,
        desc=description,
        disable=not progress,
        leave=False,
        unit="step",
    )
    try:
        for step in range(first, num_steps + 1):
            for _ in range(calls_per_step):
                with autocast(images.device, precision):
                    losses = model.train_step(next(batches))
                accumulator.add(losses)
            if step % log_every == 0 or step == num_steps:
                means = accumulator.means()
                check_finite(step, means, model)
                checked = step
                log_losses(step, means)
                bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()}, refresh=False)
            bar.update(1)
            if periodic is not None and step % periodic[0] == 0 and step < num_steps:
                paused = time.perf_counter()
                periodic[1](step)
                start += time.perf_counter() - paused
            reason = stop_requested() if stop_requested is not None else None
            if checkpoint is not None and (
                step % checkpoint[0] == 0 or step == num_steps or reason is not None
            ):
                paused = time.perf_counter()  # like evaluation, not part of the training time
                if checked != step:  # never save weights that already diverged
                    check_finite(step, {}, model)
                state = training_state(model, batches, accumulator, step)
                state["train_seconds"] = seconds_before + paused - start
                checkpoint[1](step, state)
                start += time.perf_counter() - paused
            if reason is not None:
                raise Interrupted(step, reason)
    finally:
        bar.close()
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    # A resumed cell's time includes the part before the interruption (as saved at the checkpoint)
    seconds = seconds_before + time.perf_counter() - start
    return TrainResult(num_steps, num_steps * calls_per_step * batch_size, seconds, means)
