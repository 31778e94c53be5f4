"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric").

    L_prior = KL(q(z|x) || p(z))
    L_llike = -E_q[log p(Dis_l(x) | z)]      Gaussian on the discriminator's layer-l features
                                             (recon: disfeat), or on pixels (recon: pixel)
    L_GAN   = log Dis(x) + log(1 - Dis(Dec(z_p))) + log(1 - Dis(Dec(Enc(x))))

    encoder:       L_prior + L_llike
    decoder:       gamma * L_llike - L_GAN   (non-saturating form: -log D(x_tilde) - log D(x_p))
    discriminator: L_GAN                     (reals vs reconstructions and prior samples)

Each network receives the gradient of its own loss only (models.base.descend): the GAN loss never
reaches the encoder, L_llike never reaches the discriminator, whose layer-l features are a fixed
metric during the encoder/decoder update. Updates alternate: discriminator first, then encoder and
decoder against the updated discriminator (every n_critic steps for WGAN-GP).

With WGAN-GP the critic compares reals with the mixture of reconstructions and prior samples:
    critic:  E[C(fake)] - E[C(x)] + lambda * GP,  fake = reconstructions and prior samples
    decoder: gamma * L_llike - E[C(fake)]
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from .base import GenerativeModel, descend
from .losses import (
    gaussian_nll,
    gradient_penalty,
    kl_to_standard_normal,
    neg_log_d,
    neg_log_one_minus_d,
    reparameterize,
    wgan_critic_loss,
    wgan_generator_loss,
)
from .networks import Decoder, Discriminator, Encoder, init_weights
from .registry import ModelOptions, register


@register("vaegan")
class VaeGan(GenerativeModel):
    class Options(ModelOptions):
        recon: Literal["pixel", "disfeat"] = Field(
            "disfeat", description="reconstruction space: pixels or discriminator layer Dis_l"
        )
        adversarial: Literal["bce", "wgan-gp"] = Field("bce", description="adversarial loss")
        gamma: float = Field(1e-2, ge=0, description="weight of L_llike in the decoder's loss")
        dis_layer: int = Field(3, ge=1, le=3, description="l of Dis_l: conv block 1..3")
        kl_weight: float = Field(1.0, ge=0, description="weight of L_prior in the encoder's loss")
        pixel_sigma: float = Field(
            0.2, gt=0, description="std of the pixel likelihood (recon: pixel), [-1, 1] units"
        )
        gp_lambda: float = Field(10.0, ge=0, description="WGAN-GP gradient penalty weight")

    has_encoder = True

    def __init__(self, options, image_shape, hparams, device):
        super().__init__(options, image_shape, hparams, device)
        self.wgan = options.adversarial == "wgan-gp"
        self.n_critic = hparams.n_critic if self.wgan else 1
        self.encoder = Encoder(image_shape, hparams.latent_dim, hparams.width)
        self.decoder = Decoder(image_shape, hparams.latent_dim, hparams.width)
        self.discriminator = Discriminator(image_shape, hparams.width, batch_norm=not self.wgan)
        init_weights(self)
        self.to(self.device)
        self.optimizers = {
            "encoder": self.adam(self.encoder, hparams.lr_g),
            "decoder": self.adam(self.decoder, hparams.lr_g),
            "discriminator": self.adam(self.discriminator, hparams.lr_d),
        }

    def reconstruction_nll(self, x_tilde, x):
        """L_llike: Gaussian negative log-likelihood of x given its reconstruction, measured on the
        discriminator's layer-l features (disfeat) or on pixels."""
        if self.options.recon == "pixel":
            sigma = self.options.pixel_sigma
            return gaussian_nll(x_tilde / sigma, x / sigma)
        layer = self.options.dis_layer
        with torch.no_grad():
            target = self.discriminator.features(x, layer)
        return gaussian_nll(self.discriminator.features(x_tilde, layer), target)

    def forward_pass(self, x):
        """x -> (mu, logvar, x_tilde = Dec(Enc(x)), x_p = Dec(z_p)), z_p ~ N(0, I)."""
        mu, logvar = self.encoder(x)
        x_tilde = self.decoder(reparameterize(mu, logvar))
        x_p = self.decoder(self.prior(x.size(0)))
        return mu, logvar, x_tilde, x_p

    def discriminator_step(self, x, x_tilde, x_p):
        x_tilde, x_p = x_tilde.detach(), x_p.detach()
        dis = self.discriminator
        if self.wgan:
            fake = torch.cat([x_tilde, x_p])
            wasserstein = -wgan_critic_loss(dis(x), dis(fake))
            gp = gradient_penalty(dis, torch.cat([x, x]), fake)
            loss_d = -wasserstein + self.options.gp_lambda * gp
            logs = {"loss_d": loss_d, "wasserstein": wasserstein, "gp": gp}
        else:
            # -L_GAN = -[log Dis(x) + log(1 - Dis(x_p)) + log(1 - Dis(x_tilde))]
            loss_d = (
                neg_log_d(dis(x))
                + neg_log_one_minus_d(dis(x_p))
                + neg_log_one_minus_d(dis(x_tilde))
            )
            logs = {"loss_d": loss_d}
        descend((loss_d, dis, self.optimizers["discriminator"]))
        return logs

    def autoencoder_step(self, x, mu, logvar, x_tilde, x_p):
        prior = kl_to_standard_normal(mu, logvar)
        llike = self.reconstruction_nll(x_tilde, x)
        if self.wgan:
            gan = wgan_generator_loss(self.discriminator(torch.cat([x_tilde, x_p])))
        else:
            gan = neg_log_d(self.discriminator(x_tilde)) + neg_log_d(self.discriminator(x_p))
        loss_enc = self.options.kl_weight * prior + llike
        loss_dec = self.options.gamma * llike + gan
        descend(
            (loss_enc, self.encoder, self.optimizers["encoder"]),
            (loss_dec, self.decoder, self.optimizers["decoder"]),
        )
        return {
            "kl": prior,
            "llike": llike,
            "gan_g": gan,
            "loss_enc": loss_enc,
            "loss_dec": loss_dec,
        }

    def train_step(self, x):
        autoencoder_turn = self.num_steps % self.n_critic == self.n_critic - 1
        with torch.set_grad_enabled(autoencoder_turn):
            mu, logvar, x_tilde, x_p = self.forward_pass(x)
        logs = self.discriminator_step(x, x_tilde, x_p)
        if autoencoder_turn:
            logs |= self.autoencoder_step(x, mu, logvar, x_tilde, x_p)
        self.num_steps += 1
        return {name: value.detach() for name, value in logs.items()}
