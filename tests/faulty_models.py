"""Models and worker entry points that break on purpose, for executor tests whose cells run in
other processes. `register()` is the Ray worker setup hook that makes the faulty models known there;
`worker_main` and `pausing_worker_main` stand in for bench.run.parallel.worker_main (pickled by
reference, so a spawned `--parallel` worker imports this module and runs them)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pydantic import Field

import models
from models.vae import Vae

RAISES = "raises-in-worker"
MESSAGE = "injected failure inside the worker"
DIES_ONCE = "dies-once-in-worker"
DIES = "dies-in-worker"
DEATH_STEP = 5  # with checkpoint_every 4: a checkpoint of step 4 exists when the worker dies
DEATH_EXIT_CODE = 3
PAUSE_DIR = "BENCH_TEST_PAUSE_DIR"  # env: where pausing workers say they pause (see pause_at)
PAUSE_STEP = 5
PAUSED_MODELS = ("vae", "vaegan")
PAUSE_TIMEOUT_S = 300  # never hang a test run: give up pausing after this


class RaisesInWorker(Vae):
    """A VAE whose second training step raises."""

    def train_step(self, x):
        if self.num_steps == 1:
            raise RuntimeError(MESSAGE)
        return super().train_step(x)


class DiesOnceInWorker(Vae):
    """A VAE whose process kills itself (SIGKILL) right after step 5, the first time only: it
    creates the file named by its `marker` option before it dies, and trains on as a plain VAE
    (the same numbers) while that file exists."""

    class Options(Vae.Options):
        marker: str = Field(description="file that says the process has died once already")

    def train_step(self, x):
        losses = super().train_step(x)
        if self.num_steps == DEATH_STEP and not os.path.exists(self.options.marker):
            Path(self.options.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return losses


class DiesInWorker(Vae):
    """A VAE whose process exits abruptly (os._exit(3): no cleanup, no exception) right after
    step 5, every time."""

    def train_step(self, x):
        losses = super().train_step(x)
        if self.num_steps == DEATH_STEP:
            os._exit(DEATH_EXIT_CODE)
        return losses


FAULTY = {RAISES: RaisesInWorker, DIES_ONCE: DiesOnceInWorker, DIES: DiesInWorker}


def raise_in_seeded_cell(
    patch: pytest.MonkeyPatch,
    cls: type,
    seed: int,
    message: str,
    when: Callable[[object], bool] = lambda model: True,
) -> None:
    """Make `cls.train_step` raise RuntimeError(message) in the cell the runner seeded with `seed`
    (it seeds torch per cell; a search trial's seed is trial_seed + its number), for models that
    `when` picks; every other cell trains as before. In-process only: `patch` undoes it."""
    original = cls.train_step

    def train_step(self, x):
        if when(self) and torch.initial_seed() == seed:
            raise RuntimeError(message)
        return original(self, x)

    patch.setattr(cls, "train_step", train_step)


def register() -> None:
    for name, cls in FAULTY.items():
        if name not in models.REGISTRY:
            models.register(name)(cls)


def unregister() -> None:
    for name in FAULTY:
        models.REGISTRY.pop(name, None)


def worker_main(*args) -> None:
    """bench.run.parallel.worker_main in a process that knows the faulty models."""
    from bench.run import parallel

    register()
    parallel.worker_main(*args)


def pausing_worker_main(*args) -> None:
    """bench.run.parallel.worker_main in a process whose VAEs and VAE-GANs pause after step
    PAUSE_STEP until the main process passes a stop on to it (see pause_at)."""
    from bench.run import parallel

    pause_at(PAUSED_MODELS, PAUSE_STEP, Path(os.environ[PAUSE_DIR]))
    parallel.worker_main(*args)


def pause_at(names: tuple[str, ...], step: int, folder: Path) -> None:
    """Make the models `names`, after their training step `step`, write `folder/paused-<pid>`
    and wait until this process has received SIGTERM (its handler, bench.run.context.StopSignal,
    records it), the stop a `--parallel` main process passes on to its workers: like a step that
    lasts until then, whatever signal reached the worker first. The stop then lands at the boundary
    of that step in every worker, however the machine schedules them."""
    for name in names:
        cls = models.model_class(name)
        original = cls.train_step

        def train_step(self, x, original=original):
            losses = original(self, x)
            if self.num_steps == step:
                (folder / f"paused-{os.getpid()}").touch()
                stop = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
                deadline = time.monotonic() + PAUSE_TIMEOUT_S
                while getattr(stop, "received", None) != "SIGTERM":
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
            return losses

        cls.train_step = train_step
