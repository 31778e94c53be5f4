"""Losses shared by the variants, each one the equation of its paper.

All reductions are "sum over the dimensions of one example, mean over the batch", so that the KL
term, the reconstruction term and the adversarial term are in the same units (nats per example).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2).

    Kingma & Welling 2014, appendix B."""
    return kl_per_example(mu, logvar).mean()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I)."""
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


def gaussian_nll(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log N(x | x_hat, I) up to a constant: 1/2 ||x_hat - x||^2 per example, mean over the batch.

    Used for pixels (the VAE likelihood) and for discriminator features (Larsen et al.'s
    L_llike^Dis_l, a Gaussian observation model on Dis_l(x)).
    """
    return gaussian_nll_per_example(x_hat, x).mean()


def gaussian_nll_per_example(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """1/2 ||x_hat - x||^2 of each example (N,): gaussian_nll before the batch mean."""
    return 0.5 * (x_hat - x).pow(2).flatten(1).sum(1)


def kl_per_example(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) of each example (N,): kl_to_standard_normal before the
    batch mean."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).flatten(1).sum(1)


# --- WGAN-GP (Gulrajani et al. 2017) --------------------------------------------------------------


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[C(x_fake)] - E[C(x_real)] (the penalty is added separately)."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-E[C(G(z))]."""
    return -fake_scores.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad C(x_hat)||_2 - 1)^2], x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1].

    Multiply by lambda (10 in the paper) at the call site. The graph is kept (create_graph) so the
    penalty trains the critic. The critic runs eagerly here even when compiled (torch.compile's
    graphs do not support the double backward the penalty needs); it is the same module and weights.
    """
    eps = torch.rand(real.size(0), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    with torch.compiler.set_stance("force_eager"):
        scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


# --- BCE GAN (Goodfellow et al. 2014), written as the log-probabilities of the paper -------------
# With D(x) = sigmoid(logit): -log D(x) = softplus(-logit), -log(1 - D(x)) = softplus(logit).


def neg_log_d(logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(x)]: the discriminator's loss on real images, and the non-saturating generator loss
    on fakes."""
    return F.softplus(-logits).mean()


def neg_log_one_minus_d(logits: torch.Tensor) -> torch.Tensor:
    """-E[log(1 - D(x))]: the discriminator's loss on fakes."""
    return F.softplus(logits).mean()
