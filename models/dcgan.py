"""DCGAN (Radford et al. 2016) with the non-saturating BCE loss (Goodfellow et al. 2014) or the
WGAN-GP loss (Gulrajani et al. 2017: no batch norm in the critic, penalty lambda, n_critic critic
updates per generator update). Updates are alternating: discriminator first, then the generator
against the updated discriminator (as in Algorithm 1 of Gulrajani et al. and pytorch/examples)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from .base import GenerativeModel, descend
from .losses import (
    gradient_penalty,
    neg_log_d,
    neg_log_one_minus_d,
    wgan_critic_loss,
    wgan_generator_loss,
)
from .networks import Decoder, Discriminator, init_weights
from .registry import ModelOptions, register


@register("dcgan")
class Dcgan(GenerativeModel):
    class Options(ModelOptions):
        loss: Literal["bce", "wgan-gp"] = Field("bce", description="adversarial loss")
        gp_lambda: float = Field(10.0, ge=0, description="WGAN-GP gradient penalty weight")

    has_encoder = False
    has_discriminator = True

    @classmethod
    def uses_critic_steps(cls, options) -> bool:
        return options.loss == "wgan-gp"

    def __init__(self, options, image_shape, hparams, device):
        super().__init__(options, image_shape, hparams, device)
        self.wgan = options.loss == "wgan-gp"
        self.n_critic = hparams.n_critic if self.wgan else 1
        self.decoder = Decoder(image_shape, hparams.latent_dim, hparams.width)  # the generator
        self.discriminator = Discriminator(image_shape, hparams.width, batch_norm=not self.wgan)
        init_weights(self)
        self.to(self.device)
        self.optimizers = {
            "generator": self.adam(self.decoder, hparams.lr_g),
            "discriminator": self.adam(self.discriminator, hparams.lr_d),
        }

    def discriminator_step(self, x, fake):
        fake = fake.detach()
        if self.wgan:
            wasserstein = -wgan_critic_loss(self.discriminator(x), self.discriminator(fake))
            gp = gradient_penalty(self.discriminator, x, fake)
            loss_d = -wasserstein + self.options.gp_lambda * gp
            logs = {"loss_d": loss_d, "wasserstein": wasserstein, "gp": gp}
        else:
            # -[log D(x) + log(1 - D(G(z)))]
            loss_d = neg_log_d(self.discriminator(x)) + neg_log_one_minus_d(
                self.discriminator(fake)
            )
            logs = {"loss_d": loss_d}
        descend((loss_d, self.discriminator, self.optimizers["discriminator"]))
        return logs

    def generator_step(self, fake):
        scores = self.discriminator(fake)
        # WGAN: -E[C(G(z))]; BCE, non-saturating: -log D(G(z))
        loss_g = wgan_generator_loss(scores) if self.wgan else neg_log_d(scores)
        descend((loss_g, self.decoder, self.optimizers["generator"]))
        return {"loss_g": loss_g}

    def train_step(self, x):
        generator_turn = self.num_steps % self.n_critic == self.n_critic - 1
        with torch.set_grad_enabled(generator_turn):
            fake = self.decoder(self.prior(x.size(0)))
        logs = self.discriminator_step(x, fake)
        if generator_turn:
            logs |= self.generator_step(fake)
        self.num_steps += 1
        return {name: value.detach() for name, value in logs.items()}
