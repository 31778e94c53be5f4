"""The model contract (README.md, "Your own model") as checks that name what is missing: what a
class shows without being built (`class_problem`) and what one training step of a throwaway
instance shows (`step_problem`). bench/suite/plugins.py runs them on plugin models and turns a
problem into one PluginError line with the file and line."""

from __future__ import annotations

import torch
from torch import nn

import models

PROBE_BATCH = 4  # images of the one-step trial: more than one, for batch norm


def class_problem(cls: type) -> str | None:
    """What the class lacks of the contract that can be seen without building it."""
    if not (isinstance(cls, type) and issubclass(cls, models.GenerativeModel)):
        return (
            "is not a models.GenerativeModel subclass: derive it from GenerativeModel, which "
            "gives adam, descend, checkpoints, sample and decode"
        )
    if not callable(getattr(cls, "train_step", None)):
        return (
            "has no train_step: define train_step(self, x) -> {loss name: detached scalar}, "
            "one update of all its networks"
        )
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, models.ModelOptions)):
        return (
            "has no Options that is a models.ModelOptions: declare `class Options(ModelOptions)` "
            "inside it, one typed field with a default per option (none: `pass`)"
        )
    return None


def step_problem(name: str, options, shape: tuple[int, ...], hparams) -> str | None:
    """What a built instance of model `name` shows of the contract: one training step on
    PROBE_BATCH random images of `shape` on the CPU, then its samples and encodings."""
    model = models.build(name, options, shape, hparams, "cpu")
    if not isinstance(getattr(model, "decoder", None), nn.Module):
        return (
            "sets no decoder: assign self.decoder in __init__, an nn.Module from latents to images "
            "in [-1, 1] (models.networks.Decoder)"
        )
    if not model.optimizers:
        return (
            "lists no optimizers: put each in self.optimizers (name -> optimizer), so that a "
            "checkpoint saves them and a resumed run continues exactly"
        )
    x = torch.rand(PROBE_BATCH, *shape) * 2 - 1
    losses = model.train_step(x)
    if not isinstance(losses, dict) or not losses:
        return (
            f"train_step returned {losses!r:.60}, not its losses: return "
            "{loss name: loss.detach()}, e.g. {'loss': loss.detach()}"
        )
    for loss, value in losses.items():
        scalar = isinstance(value, int | float) or (
            isinstance(value, torch.Tensor) and value.numel() == 1
        )
        if not isinstance(loss, str) or not scalar:
            return f"train_step's loss {loss!r} is not a scalar under a name: {value!r:.60}"
        if isinstance(value, torch.Tensor) and value.requires_grad:
            return f"train_step's loss {loss!r} is not detached: return {loss!r}: loss.detach()"
    if model.num_steps != 1:
        return (
            "train_step does not count its calls: add `self.num_steps += 1` (checkpoints and "
            "generator_updates, discriminator_updates, images_seen read it)"
        )
    samples = model.sample(2)
    if tuple(samples.shape) != (2, *shape):
        return (
            f"sample(2) has shape {tuple(samples.shape)}, not {(2, *shape)}: the decoder maps "
            f"latents (N, latent_dim) to images (N, C, H, W)"
        )
    if model.has_encoder and tuple(model.encode(x).shape) != (PROBE_BATCH, hparams.latent_dim):
        return (
            "has has_encoder set but encode(x) is not (N, latent_dim): self.encoder returns "
            "(mean, log-variance), as models.networks.Encoder does"
        )
    if model.has_encoder and type(model).reconstruction_nll_per_example is (
        models.GenerativeModel.reconstruction_nll_per_example
    ):
        return (
            "has has_encoder set but no likelihood: define reconstruction_nll_per_example(x_tilde, "
            "x) -> -log p(x | x_tilde) per example (the -ELBO out-of-distribution score needs it)"
        )
    if model.has_discriminator and model.discriminator_on_images:
        dis = getattr(model, "discriminator", None)
        if not (callable(getattr(dis, "features", None)) and hasattr(dis, "num_layers")):
            return (
                "has has_discriminator set but no image discriminator in self.discriminator "
                "(features(x, layer) and num_layers, as models.networks.Discriminator); set "
                "discriminator_on_images = False if it judges something else"
            )
    return None
