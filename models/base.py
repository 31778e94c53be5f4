"""What every variant shares: sampling from the prior, decoding, and a per-network gradient step.

Images are in [-1, 1] everywhere inside models/ (the decoder ends in tanh); bench.data converts
data into that range and bench.metrics converts out of it, each in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .losses import kl_per_example
from .networks import check_image_shape
from .registry import Hparams, ModelConfigError, ModelOptions


class GenerativeModel(nn.Module):
    """Base class of the variants. Subclasses set `decoder`, define `train_step`, and list their
    optimizers in `self.optimizers` (name -> optimizer) so checkpoints can save them."""

    has_encoder: bool = False
    # trains a discriminator or critic: it has lr_d and counts discriminator_updates
    has_discriminator: bool = False
    # with has_discriminator: `self.discriminator` judges images (a models.networks.Discriminator),
    # so the evaluation probes its features and uses its score for out-of-distribution detection.
    # False for one that judges something else, e.g. an adversarial autoencoder's latent codes.
    discriminator_on_images: bool = True
    registry_name: str = ""
    # train_step calls per generator update: the critic steps of WGAN-GP, 1 for everything else
    n_critic: int = 1

    @classmethod
    def uses_critic_steps(cls, options: ModelOptions) -> bool:
        """Whether these options train a critic n_critic times per generator update."""
        return False

    @classmethod
    def validate_image_shape(cls, options: ModelOptions, image_shape) -> None:
        """Raise ModelConfigError (one line) if these options cannot work on images of this
        shape: the shared networks' sizes, and options whose range depends on the size (a
        VAE-GAN's dis_layer). Cheap (builds nothing), so a suite can check before training."""
        try:
            check_image_shape(tuple(image_shape))
        except ValueError as err:
            raise ModelConfigError(f"model {cls.registry_name!r}: {err}") from None

    def __init__(self, options: ModelOptions, image_shape, hparams: Hparams, device):
        type(self).validate_image_shape(options, image_shape)
        super().__init__()
        self.options = options
        self.image_shape = tuple(image_shape)
        self.hparams = hparams
        self.latent_dim = hparams.latent_dim
        self.device = torch.device(device)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.num_steps = 0  # train_step calls so far; saved in the state dict (extra state)

    def adam(self, network: nn.Module, lr: float) -> torch.optim.Adam:
        fused = self.device.type == "cuda"
        return torch.optim.Adam(
            network.parameters(), lr=lr, betas=self.hparams.betas, fused=fused or None
        )

    def compile_networks(self, mode: str | None = None) -> None:
        """torch.compile each network's forward in place (names and state dict unchanged), so
        training steps run compiled graphs. Sampling and encoding for evaluation stay eager
        (`decode`, `encode`): evaluation batches vary in size and run once, not worth compiling.
        `mode` is torch.compile's (None: its default; "reduce-overhead" captures CUDA graphs)."""
        # The losses share graphs (models.base.descend takes several gradients through one forward,
        # retain_graph=True), which compiled backward functions with donated buffers refuse.
        torch._functorch.config.donated_buffer = False
        for network in self.children():
            network.compile(mode=mode)
            # the discriminator's other entry point (Dis_l) is compiled too, so that its
            # batch-norm buffer updates stay in one world
            if hasattr(network, "features"):
                network.features = torch.compile(network.features, mode=mode)

    def to_channels_last(self) -> None:
        """Every network's weights in channels_last (NHWC) memory format, in place (the same
        Parameter objects, so the optimizers keep them): convolutions then run NHWC kernels, the
        fast path of recent CPUs (oneDNN) and of GPU tensor cores. Fed channels_last batches
        (train's memory_format), activations stay NHWC from layer to layer."""
        self.to(memory_format=torch.channels_last)

    @contextmanager
    @torch.no_grad()
    def decoder_statistics(self, latents: Iterable[torch.Tensor]) -> Iterator[None]:
        """Within the block, the decoder's batch-norm running statistics are those of the given
        latents (a plain average over all their batches, not the training-time moving average);
        afterwards the trained ones are back, so evaluating never changes the model.

        Why: in eval mode a decoder normalises with running statistics that training averaged
        over whatever it decoded, with weights that kept moving. A VAE-GAN's decoder decodes
        posterior samples and prior samples in turn, so its running statistics fit neither; a
        VAE's decoder has never decoded a prior sample at all. Re-estimating them on the inputs
        about to be decoded (prior latents before sampling, encoder means before reconstructing)
        gives every variant statistics of its final weights and of the right inputs."""
        norms = [m for m in self.decoder.modules() if isinstance(m, _BatchNorm)]
        saved = [
            (
                m.running_mean.clone(),
                m.running_var.clone(),
                m.num_batches_tracked.clone(),
                m.momentum,
            )
            for m in norms
        ]
        was_training = self.decoder.training
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
            with torch.compiler.set_stance("force_eager"):
                for z in latents:
                    # train mode set for every batch: producing the latents may have changed it
                    # (encode() leaves a model in eval mode as it found it, its decoder too)
                    self.decoder.train()
                    self.decoder(z.to(self.device))
            self.decoder.train(was_training)
            yield
        finally:
            self.decoder.train(was_training)
            for m, (mean, var, count, momentum) in zip(norms, saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
                m.momentum = momentum

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I)."""
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (batch-norm running statistics, no dropout), eager, without gradients, for
        the block; the model's mode is restored after it."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), torch.compiler.set_stance("force_eager"):
                yield
        finally:
            self.train(was_training)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from latents, in eval mode (batch-norm running statistics)."""
        with self.evaluating():
            return self.decoder(z.to(self.device))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.decode(self.prior(n, generator))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean E[z|x] (only for variants with an encoder)."""
        if not self.has_encoder:
            raise TypeError(f"{type(self).__name__} has no encoder")
        with self.evaluating():
            mu, _ = self.encoder(x.to(self.device))
            return mu

    def reconstruction_nll_per_example(self, x_tilde: torch.Tensor, x: torch.Tensor):
        """-log p(x | x_tilde) of each example under the model's own likelihood (variants with
        an encoder implement it)."""
        raise TypeError(f"{type(self).__name__} has no likelihood")

    def negative_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Per example, -ELBO = -log p(x | Dec(mu)) + KL(q(z|x) || N(0, I)) in eval mode, the
        likelihood term at the posterior mean (deterministic, one decoder pass) rather than a
        Monte Carlo average, and KL at weight 1 (the ELBO itself, whatever beta trained it)."""
        if not self.has_encoder:
            raise TypeError(f"{type(self).__name__} has no encoder")
        with self.evaluating():
            x = x.to(self.device)
            mu, logvar = self.encoder(x)
            nll = self.reconstruction_nll_per_example(self.decoder(mu), x)
            return nll + kl_per_example(mu, logvar)

    def update_counts(self, batch_size: int) -> dict[str, int]:
        """Updates so far of the generator / decoder (and encoder) and of the discriminator, and
        the training images they consumed (every train_step call takes one batch)."""
        # the names are bench.keys' GENERATOR_UPDATES, DISCRIMINATOR_UPDATES, IMAGES_SEEN
        return {
            "generator_updates": self.num_steps // self.n_critic,
            "discriminator_updates": self.num_steps if self.has_discriminator else 0,
            "images_seen": self.num_steps * batch_size,
        }

    def get_extra_state(self):
        return {"num_steps": self.num_steps}

    def set_extra_state(self, state):
        self.num_steps = int(state["num_steps"])

    def optimizer_state(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_optimizer_state(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def descend(*updates: tuple[torch.Tensor, nn.Module, torch.optim.Optimizer]) -> None:
    """One optimizer step per (loss, network, optimizer): each network receives the gradient of its
    own loss and of nothing else. All gradients are taken before any weight moves, so the losses
    may share one graph; networks not listed get no gradient at all."""
    grads = [
        torch.autograd.grad(loss, list(network.parameters()), retain_graph=True)
        for loss, network, _ in updates
    ]
    for (_, network, optimizer), network_grads in zip(updates, grads, strict=True):
        for param, grad in zip(network.parameters(), network_grads, strict=True):
            param.grad = grad
        optimizer.step()
