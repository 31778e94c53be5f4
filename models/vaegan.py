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
metric during the encoder/decoder update. Dis_l(x) and Dis_l(x_tilde) come from one pass over both
batches, so that batch norm normalises them alike and L_llike is a per-sample comparison.
Two update schedules (option `update`):

    alternating   (default) discriminator first, then encoder and decoder against the updated
                  discriminator, as GANs are usually trained (Goodfellow et al. 2014, Algorithm 1)
    simultaneous  Larsen et al.'s Algorithm 1: one forward pass (one discriminator pass per batch of
                  reals, reconstructions and prior samples, and Dis_l of the reconstructions and
                  reals from one more pass over both), then all three networks step on their own
                  loss's gradient at the same weights

With WGAN-GP the encoder and decoder update every n_critic steps in both; the steps between update
the critic alone.

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
    gaussian_nll_per_example,
    gradient_penalty,
    kl_to_standard_normal,
    neg_log_d,
    neg_log_one_minus_d,
    reparameterize,
    wgan_critic_loss,
    wgan_generator_loss,
)
from .networks import Decoder, Discriminator, Encoder, depth, init_weights
from .registry import ModelConfigError, ModelOptions, register


def random_reals(x: torch.Tensor, count: int) -> torch.Tensor:
    """`count` real images in random order (each of x used count / len(x) times) to pair with
    the fakes for the gradient penalty: Gulrajani et al. interpolate between a real and a fake
    drawn independently. Pairing each real with its own reconstruction would sample only the short
    segments between near-identical images, so the penalty would say little about the critic
    between the two distributions."""
    repeated = x.repeat((count + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))[:count]
    return repeated[torch.randperm(count, device=x.device)]


@register("vaegan")
class VaeGan(GenerativeModel):
    class Options(ModelOptions):
        recon: Literal["pixel", "disfeat"] = Field(
            "disfeat", description="reconstruction space: pixels or discriminator layer Dis_l"
        )
        adversarial: Literal["bce", "wgan-gp"] = Field("bce", description="adversarial loss")
        gamma: float = Field(1e-2, ge=0, description="weight of L_llike in the decoder's loss")
        dis_layer: int = Field(
            3,
            ge=1,
            description="l of Dis_l: conv block 1..depth (3 blocks at 28 and 32 pixels, 4 at 64, "
            "5 at 128; `bench models` lists them)",
        )
        kl_weight: float = Field(1.0, ge=0, description="weight of L_prior in the encoder's loss")
        pixel_sigma: float = Field(
            0.2, gt=0, description="std of the pixel likelihood (recon: pixel), [-1, 1] units"
        )
        gp_lambda: float = Field(10.0, ge=0, description="WGAN-GP gradient penalty weight")
        update: Literal["alternating", "simultaneous"] = Field(
            "alternating",
            description="discriminator then encoder/decoder, or all three from one pass (Larsen "
            "et al.'s Algorithm 1)",
        )

    has_encoder = True
    has_discriminator = True

    @classmethod
    def uses_critic_steps(cls, options) -> bool:
        return options.adversarial == "wgan-gp"

    @classmethod
    def validate_image_shape(cls, options, image_shape) -> None:
        """dis_layer's upper bound is the discriminator's depth, which grows with the image size,
        so only here (with the image shape) can it be checked."""
        super().validate_image_shape(options, image_shape)
        size = image_shape[1]
        blocks = depth(size)
        if options.dis_layer > blocks:
            raise ModelConfigError(
                f"model {cls.registry_name!r}: dis_layer {options.dis_layer} does not exist for "
                f"{size}x{size} images: the discriminator has {blocks} conv blocks (1..{blocks})"
            )

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
        return gaussian_nll(*self.feature_pair(x_tilde, x))

    def reconstruction_nll_per_example(self, x_tilde, x):
        """reconstruction_nll of each example (N,), for the negative ELBO."""
        if self.options.recon == "pixel":
            sigma = self.options.pixel_sigma
            return gaussian_nll_per_example(x_tilde / sigma, x / sigma)
        return gaussian_nll_per_example(*self.feature_pair(x_tilde, x))

    def feature_pair(self, x_tilde, x):
        """(Dis_l(x_tilde), Dis_l(x)) from ONE discriminator pass over both batches. With batch
        norm in the discriminator, separate passes would normalise the two with different batch
        statistics, so every reconstruction's features would move with the rest of its batch;
        one pass applies the same normalisation to both and L_llike compares each
        reconstruction with its own input only. Dis_l(x) is a fixed target (no gradient)."""
        both = self.discriminator.features(torch.cat([x_tilde, x]), self.options.dis_layer)
        tilde_features, target = both.split(x.size(0))
        return tilde_features, target.detach()

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
            gp = gradient_penalty(dis, random_reals(x, len(fake)), fake)
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

    def autoencoder_losses(self, mu, logvar, llike, gan):
        """encoder: L_prior + L_llike; decoder: gamma * L_llike + GAN generator loss."""
        prior = kl_to_standard_normal(mu, logvar)
        loss_enc = self.options.kl_weight * prior + llike
        loss_dec = self.options.gamma * llike + gan
        logs = {
            "kl": prior,
            "llike": llike,
            "gan_g": gan,
            "loss_enc": loss_enc,
            "loss_dec": loss_dec,
        }
        return loss_enc, loss_dec, logs

    def generator_loss(self, d_tilde, d_p):
        """The decoder's adversarial term: non-saturating -log D(x_tilde) - log D(x_p), or the
        WGAN generator loss -E[C(fake)] over reconstructions and prior samples together."""
        if self.wgan:
            return wgan_generator_loss(torch.cat([d_tilde, d_p]))
        return neg_log_d(d_tilde) + neg_log_d(d_p)

    def discriminator_scores(self, x_tilde, x_p):
        """(Dis(x_tilde), Dis(x_p)): one pass over both for a critic without batch norm, one per
        batch for a batch-norm discriminator (as its own step scores them)."""
        if self.wgan:
            return self.discriminator(torch.cat([x_tilde, x_p])).split(x_tilde.size(0))
        return self.discriminator(x_tilde), self.discriminator(x_p)

    def autoencoder_step(self, x, mu, logvar, x_tilde, x_p):
        """Encoder and decoder against the (updated) discriminator."""
        gan = self.generator_loss(*self.discriminator_scores(x_tilde, x_p))
        llike = self.reconstruction_nll(x_tilde, x)
        loss_enc, loss_dec, logs = self.autoencoder_losses(mu, logvar, llike, gan)
        descend(
            (loss_enc, self.encoder, self.optimizers["encoder"]),
            (loss_dec, self.decoder, self.optimizers["decoder"]),
        )
        return logs

    def simultaneous_step(self, x, mu, logvar, x_tilde, x_p):
        """Larsen et al.'s Algorithm 1: the discriminator scores reals, reconstructions and prior
        samples once, and the three networks step on the gradients of their own losses, all
        taken at the current weights."""
        dis = self.discriminator
        d_x = dis(x)
        d_tilde, d_p = self.discriminator_scores(x_tilde, x_p)
        if self.wgan:
            fake = torch.cat([x_tilde, x_p])
            wasserstein = -wgan_critic_loss(d_x, torch.cat([d_tilde, d_p]))
            gp = gradient_penalty(dis, random_reals(x, len(fake)), fake)  # on detached fakes
            loss_d = -wasserstein + self.options.gp_lambda * gp
            logs = {"loss_d": loss_d, "wasserstein": wasserstein, "gp": gp}
        else:
            loss_d = neg_log_d(d_x) + neg_log_one_minus_d(d_p) + neg_log_one_minus_d(d_tilde)
            logs = {"loss_d": loss_d}
        gan = self.generator_loss(d_tilde, d_p)
        llike = self.reconstruction_nll(x_tilde, x)
        loss_enc, loss_dec, autoencoder_logs = self.autoencoder_losses(mu, logvar, llike, gan)
        descend(
            (loss_d, dis, self.optimizers["discriminator"]),
            (loss_enc, self.encoder, self.optimizers["encoder"]),
            (loss_dec, self.decoder, self.optimizers["decoder"]),
        )
        return logs | autoencoder_logs

    def train_step(self, x):
        autoencoder_turn = self.num_steps % self.n_critic == self.n_critic - 1
        with torch.set_grad_enabled(autoencoder_turn):
            mu, logvar, x_tilde, x_p = self.forward_pass(x)
        if autoencoder_turn and self.options.update == "simultaneous":
            logs = self.simultaneous_step(x, mu, logvar, x_tilde, x_p)
        else:
            logs = self.discriminator_step(x, x_tilde, x_p)
            if autoencoder_turn:
                logs |= self.autoencoder_step(x, mu, logvar, x_tilde, x_p)
        self.num_steps += 1
        return {name: value.detach() for name, value in logs.items()}
