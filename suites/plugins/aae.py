"""Adversarial autoencoder (Makhzani et al. 2016, "Adversarial Autoencoders"): a plugin model.

An autoencoder whose codes are pushed towards the prior by a discriminator instead of a KL term:

    reconstruction phase   encoder and decoder:  -log N(x | Dec(z), sigma^2 I),  z ~ q(z|x)
    regularisation phase   discriminator:        -log D(z_p) - log(1 - D(z)),    z_p ~ N(0, I)
                           encoder (generator):  -log D(z)   (non-saturating)

q(z|x) is the Gaussian posterior of section 2.1 (the shared Encoder's mean and log-variance,
sampled by reparameterisation), so that the aggregated posterior q(z) the discriminator sees
is smooth. The discriminator judges latent codes, not images: an MLP with two hidden layers of
1000 ReLU units, as the paper's MNIST networks. Encoder and decoder are the harness's shared
networks, so the comparison with the VAE and the VAE-GAN differs in the losses only.

Each phase steps its own Adam optimizer (the paper, too, sets each phase's learning rate on its
own): the encoder's reconstruction and regularisation steps keep separate moment estimates, and
the pixel likelihood's scale (pixel_sigma) does not weigh one phase against the other.

A plugin: `plugins: [plugins/aae.py]` in a suite, or `bench ... --plugin suites/plugins/aae.py`.
It follows the contract of README.md, "Your own model", and imports nothing but `models`. Its
content hash is part of its cells' ids: an edit makes new cells (and new ids for
tests/golden/cell_ids.json).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from models import GenerativeModel, ModelOptions, descend, register
from models.losses import (
    gaussian_nll,
    gaussian_nll_per_example,
    neg_log_d,
    neg_log_one_minus_d,
    reparameterize,
)
from models.networks import Decoder, Encoder, init_weights


class LatentDiscriminator(nn.Module):
    """D(z) as a logit: is this code a prior sample (real) or an encoded image (fake)?"""

    def __init__(self, latent_dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z).squeeze(1)


@register("aae")
class AdversarialAutoencoder(GenerativeModel):
    class Options(ModelOptions):
        pixel_sigma: float = Field(
            0.2, gt=0, description="std of the Gaussian pixel likelihood, in [-1, 1] units"
        )
        hidden: int = Field(
            1000, ge=1, description="units of each of the latent discriminator's 2 hidden layers"
        )

    has_encoder = True  # recon MSE, encoded interpolations, encoder probes, -ELBO and recon OOD
    has_discriminator = True  # it trains one (lr_d, discriminator_updates) ...
    discriminator_on_images = False  # ... on latent codes: no image-discriminator probes or OOD

    def __init__(self, options, image_shape, hparams, device):
        super().__init__(options, image_shape, hparams, device)
        self.encoder = Encoder(image_shape, hparams.latent_dim, hparams.width)
        self.decoder = Decoder(image_shape, hparams.latent_dim, hparams.width)
        self.discriminator = LatentDiscriminator(hparams.latent_dim, options.hidden)
        init_weights(self)
        self.to(self.device)
        self.optimizers = {
            "encoder": self.adam(self.encoder, hparams.lr_g),
            "decoder": self.adam(self.decoder, hparams.lr_g),
            "discriminator": self.adam(self.discriminator, hparams.lr_d),
            "generator": self.adam(self.encoder, hparams.lr_g),  # the encoder's adversarial phase
        }

    def reconstruction_nll_per_example(self, x_tilde, x):
        """-log N(x | x_tilde, sigma^2 I) per example: the likelihood of the -ELBO OOD score."""
        sigma = self.options.pixel_sigma
        return gaussian_nll_per_example(x_tilde / sigma, x / sigma)

    def train_step(self, x):
        sigma, dis = self.options.pixel_sigma, self.discriminator
        # reconstruction phase: encoder and decoder minimise the pixel reconstruction error
        z = reparameterize(*self.encoder(x))
        recon = gaussian_nll(self.decoder(z) / sigma, x / sigma)
        descend(
            (recon, self.encoder, self.optimizers["encoder"]),
            (recon, self.decoder, self.optimizers["decoder"]),
        )
        # regularisation phase, discriminator: prior samples are real, the codes of x are fake
        z = reparameterize(*self.encoder(x))  # the codes of the encoder just updated
        z_p = self.prior(x.size(0))
        loss_d = neg_log_d(dis(z_p)) + neg_log_one_minus_d(dis(z.detach()))
        descend((loss_d, dis, self.optimizers["discriminator"]))
        # regularisation phase, generator: the encoder fools the updated discriminator
        loss_g = neg_log_d(dis(z))
        descend((loss_g, self.encoder, self.optimizers["generator"]))
        self.num_steps += 1
        return {"recon": recon.detach(), "loss_d": loss_d.detach(), "loss_g": loss_g.detach()}
