"""Models that break on purpose, for executor tests whose cells run in other processes (Ray
workers): `register()` is the worker setup hook that makes them known there too."""

from __future__ import annotations

import models
from models.vae import Vae

RAISES = "raises-in-worker"
MESSAGE = "injected failure inside the worker"


class RaisesInWorker(Vae):
    """A VAE whose second training step raises."""

    def train_step(self, x):
        if self.num_steps == 1:
            raise RuntimeError(MESSAGE)
        return super().train_step(x)


def register() -> None:
    if RAISES not in models.REGISTRY:
        models.register(RAISES)(RaisesInWorker)


def unregister() -> None:
    models.REGISTRY.pop(RAISES, None)
