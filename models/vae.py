"""Plain VAE (Kingma & Welling 2014): maximise the ELBO E_q[log p(x|z)] - KL(q(z|x) || p(z))."""

from __future__ import annotations

from pydantic import Field

from .base import GenerativeModel, descend
from .losses import gaussian_nll, gaussian_nll_per_example, kl_to_standard_normal, reparameterize
from .networks import Decoder, Encoder, init_weights
from .registry import ModelOptions, register


@register("vae")
class Vae(GenerativeModel):
    class Options(ModelOptions):
        kl_weight: float = Field(1.0, ge=0, description="beta: weight of the KL term")
        pixel_sigma: float = Field(
            0.2, gt=0, description="std of the Gaussian pixel likelihood, in [-1, 1] units"
        )

    has_encoder = True

    def __init__(self, options, image_shape, hparams, device):
        super().__init__(options, image_shape, hparams, device)
        self.encoder = Encoder(image_shape, hparams.latent_dim, hparams.width)
        self.decoder = Decoder(image_shape, hparams.latent_dim, hparams.width)
        init_weights(self)
        self.to(self.device)
        # Both networks minimise the same loss, so one optimizer and one backward pass suffice.
        self.optimizers = {"autoencoder": self.adam(self, hparams.lr_g)}

    def reconstruction_nll_per_example(self, x_tilde, x):
        sigma = self.options.pixel_sigma
        return gaussian_nll_per_example(x_tilde / sigma, x / sigma)

    def train_step(self, x):
        mu, logvar = self.encoder(x)
        x_tilde = self.decoder(reparameterize(mu, logvar))
        sigma = self.options.pixel_sigma
        recon = gaussian_nll(x_tilde / sigma, x / sigma)  # -log N(x | x_tilde, sigma^2 I)
        kl = kl_to_standard_normal(mu, logvar)
        loss = recon + self.options.kl_weight * kl  # the negative ELBO
        descend((loss, self, self.optimizers["autoencoder"]))
        self.num_steps += 1
        return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}
