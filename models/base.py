"""What every variant shares: sampling from the prior, decoding, and a per-network gradient step.

Images are in [-1, 1] everywhere inside models/ (the decoder ends in tanh); bench.data converts
data into that range and bench.metrics converts out of it, each in one place.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import Hparams, ModelOptions


class GenerativeModel(nn.Module):
    """Base class of the variants. Subclasses set `decoder`, define `train_step`, and list their
    optimizers in `self.optimizers` (name -> optimizer) so checkpoints can save them."""

    has_encoder: bool = False
    registry_name: str = ""

    def __init__(self, options: ModelOptions, image_shape, hparams: Hparams, device):
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

    def compile_networks(self) -> None:
        """torch.compile each network's forward in place (names and state dict unchanged), so
        training steps run compiled graphs. Sampling and encoding for evaluation stay eager
        (`decode`, `encode`): evaluation batches vary in size and run once, not worth compiling."""
        # The losses share graphs (models.base.descend takes several gradients through one forward,
        # retain_graph=True), which compiled backward functions with donated buffers refuse.
        torch._functorch.config.donated_buffer = False
        for network in self.children():
            network.compile()
            # the discriminator's other entry points (Dis_l) are compiled too, so that its
            # batch-norm buffer updates stay in one world
            for method in ("features", "forward_with_features"):
                if hasattr(network, method):
                    setattr(network, method, torch.compile(getattr(network, method)))

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I)."""
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from latents, in eval mode (batch-norm running statistics)."""
        was_training = self.training
        self.eval()
        try:
            with torch.compiler.set_stance("force_eager"):
                return self.decoder(z.to(self.device))
        finally:
            self.train(was_training)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.decode(self.prior(n, generator))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean E[z|x] (only for variants with an encoder)."""
        if not self.has_encoder:
            raise TypeError(f"{type(self).__name__} has no encoder")
        was_training = self.training
        self.eval()
        try:
            with torch.compiler.set_stance("force_eager"):
                mu, _ = self.encoder(x.to(self.device))
            return mu
        finally:
            self.train(was_training)

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
