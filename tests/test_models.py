"""Tests of models/: every variant trains and samples, gradients reach only the network whose loss
they come from, the losses match their closed forms, and the registry and checkpoints behave.

Everything runs on CPU with tiny networks (latent 8, width 8, batch 8, 28x28x1); the size tests
(section 9) build every variant at every supported image size with 1 and 3 channels, batch 4."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from models.losses import (
    gaussian_nll,
    gradient_penalty,
    kl_to_standard_normal,
    neg_log_d,
    neg_log_one_minus_d,
)
from models.networks import (
    SUPPORTED_SIZES,
    Decoder,
    Discriminator,
    Encoder,
    depth,
    discriminator_layers,
)
from tests.device import chosen_device

DEVICE = chosen_device()  # the tests marked `device` run there (pytest --device)
IMAGE_SHAPE = (1, 28, 28)
BATCH = 8
LATENT = 8
NETWORKS = ("encoder", "decoder", "discriminator")

VARIANTS = [
    pytest.param("vae", {}, id="vae"),
    pytest.param("dcgan", {"loss": "bce"}, id="dcgan-bce"),
    pytest.param("dcgan", {"loss": "wgan-gp"}, id="dcgan-wgan"),
    pytest.param("vaegan", {"recon": "pixel", "adversarial": "bce"}, id="vaegan-pixel-bce"),
    pytest.param("vaegan", {"recon": "pixel", "adversarial": "wgan-gp"}, id="vaegan-pixel-wgan"),
    pytest.param("vaegan", {"recon": "disfeat", "adversarial": "bce"}, id="vaegan-disfeat-bce"),
    pytest.param(
        "vaegan", {"recon": "disfeat", "adversarial": "wgan-gp"}, id="vaegan-disfeat-wgan"
    ),
]
SIMULTANEOUS = [  # Larsen et al.'s Algorithm 1 schedule
    pytest.param("vaegan", p.values[1] | {"update": "simultaneous"}, id=f"{p.id}-simultaneous")
    for p in VARIANTS[3:]
]
ADVERSARIAL = VARIANTS[1:]
VAEGAN_OPTIONS = [p.values[1] for p in VARIANTS[3:]]
VAEGAN_IDS = [p.id for p in VARIANTS[3:]]


def make(name, options=None, n_critic=3, seed=0):
    torch.manual_seed(seed)
    hparams = models.Hparams(latent_dim=LATENT, width=8, n_critic=n_critic)
    return models.build(name, options or {}, IMAGE_SHAPE, hparams, device=DEVICE)


def images(seed=0, n=BATCH):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *IMAGE_SHAPE, generator=gen) * 2 - 1).to(DEVICE)


def networks(model):
    return {name: getattr(model, name) for name in NETWORKS if hasattr(model, name)}


def snapshot(model):
    return {
        name: [p.detach().clone() for p in net.parameters()]
        for name, net in networks(model).items()
    }


def changed(model, before, name):
    """Whether any parameter of network `name` differs from the snapshot."""
    after = list(getattr(model, name).parameters())
    assert len(after) == len(before[name])
    return any(not torch.equal(a, b) for a, b in zip(after, before[name], strict=True))


def grads_are_none(net):
    return all(p.grad is None for p in net.parameters())


def grads(net):
    out = [p.grad for p in net.parameters()]
    assert all(g is not None for g in out), "network received no gradient"
    return [g.clone() for g in out]


def assert_grads_equal(a, b):
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def grads_differ(a, b):
    return any(not torch.allclose(ga, gb) for ga, gb in zip(a, b, strict=True))


def perturb_(module, scale=0.5, seed=123):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


# --- 1. every variant trains, samples, decodes ----------------------------------------------------


@pytest.mark.device
@pytest.mark.parametrize(("name", "options"), VARIANTS + SIMULTANEOUS)
def test_train_step_sample_decode_encode(name, options):
    model = make(name, options, n_critic=3)
    for step in range(3):
        logs = model.train_step(images(seed=step))
        assert logs, "train_step returned no losses"
        for key, value in logs.items():
            assert isinstance(value, torch.Tensor), key
            assert value.dim() == 0, key
            assert not value.requires_grad, f"{key} is not detached"
            assert torch.isfinite(value), f"{key} = {value}"
    assert model.num_steps == 3
    # the third step is the generator's turn for WGAN-GP with n_critic=3, every step otherwise
    if name == "dcgan":
        assert "loss_d" in logs and "loss_g" in logs
    if name == "vaegan":
        assert {"loss_d", "kl", "llike", "gan_g", "loss_enc", "loss_dec"} <= logs.keys()
    if name == "vae":
        assert set(logs) == {"loss", "recon", "kl"}

    samples = model.sample(5)
    assert samples.shape == (5, *IMAGE_SHAPE)
    assert samples.min() >= -1 and samples.max() <= 1
    assert torch.isfinite(samples).all()
    assert model.training, "sample() must restore train mode"

    z = torch.randn(6, LATENT, device=DEVICE) * 3
    decoded = model.decode(z)
    assert decoded.shape == (6, *IMAGE_SHAPE)
    assert decoded.min() >= -1 and decoded.max() <= 1
    assert not decoded.requires_grad
    # decode runs in eval mode: each image depends on its own z only, running stats stay put
    buffers = [b.clone() for b in model.buffers()]
    torch.testing.assert_close(model.decode(z[:1]), decoded[:1])
    for before, after in zip(buffers, model.buffers(), strict=True):
        assert torch.equal(before, after), "decode() changed batch-norm statistics"

    # sampling with an explicit generator is repeatable
    s1 = model.sample(4, generator=torch.Generator(device=DEVICE).manual_seed(7))
    s2 = model.sample(4, generator=torch.Generator(device=DEVICE).manual_seed(7))
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)

    assert model.has_encoder == (name in ("vae", "vaegan"))
    if model.has_encoder:
        mu = model.encode(images(seed=9, n=5))
        assert mu.shape == (5, LATENT)
        assert torch.isfinite(mu).all()
        assert model.training, "encode() must restore train mode"
    else:
        with pytest.raises(TypeError):
            model.encode(images(seed=9, n=5))


# --- 2. gradient routing, checked on weights -----------------------------------------------------


def fake_batch(model, x, seed=1):
    """The arguments of the adversarial variants' two steps, from one forward pass."""
    torch.manual_seed(seed)
    if model.registry_name == "dcgan":
        return (model.decoder(model.prior(x.size(0))),)
    return model.forward_pass(x)


@pytest.mark.device
@pytest.mark.parametrize(("name", "options"), ADVERSARIAL)
def test_discriminator_step_updates_only_discriminator(name, options):
    model = make(name, options)
    x = images()
    before = snapshot(model)
    out = fake_batch(model, x)
    if name == "dcgan":
        model.discriminator_step(x, out[0])
    else:
        _, _, x_tilde, x_p = out
        model.discriminator_step(x, x_tilde, x_p)
    assert changed(model, before, "discriminator")
    assert not grads_are_none(model.discriminator)
    for net in ("encoder", "decoder"):
        if hasattr(model, net):
            assert not changed(model, before, net), f"discriminator step moved the {net}"
            assert grads_are_none(getattr(model, net)), f"discriminator step gave {net} a .grad"


@pytest.mark.device
@pytest.mark.parametrize(("name", "options"), ADVERSARIAL)
def test_generator_step_updates_only_generator_side(name, options):
    model = make(name, options)
    x = images()
    before = snapshot(model)
    out = fake_batch(model, x)
    if name == "dcgan":
        model.generator_step(out[0])
    else:
        model.autoencoder_step(x, *out)
    for net in ("encoder", "decoder"):
        if hasattr(model, net):
            assert changed(model, before, net), f"generator-side step did not move the {net}"
            assert not grads_are_none(getattr(model, net))
    assert not changed(model, before, "discriminator"), "generator-side step moved the critic"
    assert grads_are_none(model.discriminator), "generator-side step gave the critic a .grad"


@pytest.mark.device
@pytest.mark.parametrize(
    ("name", "options"), [p for p in ADVERSARIAL + SIMULTANEOUS if "wgan" in p.id]
)
def test_wgan_generator_side_updates_every_n_critic_steps(name, options):
    model = make(name, options, n_critic=3)
    generator_side = [n for n in ("encoder", "decoder") if hasattr(model, n)]
    for step in range(2):
        before = snapshot(model)
        logs = model.train_step(images(seed=step))
        assert changed(model, before, "discriminator"), f"critic not updated at step {step}"
        for net in generator_side:
            assert not changed(model, before, net), f"{net} updated at critic-only step {step}"
            assert grads_are_none(getattr(model, net))
        assert "loss_g" not in logs and "loss_dec" not in logs
    before = snapshot(model)
    logs = model.train_step(images(seed=2))
    assert changed(model, before, "discriminator")
    for net in generator_side:
        assert changed(model, before, net), f"{net} not updated on the n_critic-th step"
    assert "loss_g" in logs or "loss_dec" in logs


@pytest.mark.device
@pytest.mark.parametrize(
    ("name", "options"), [p for p in ADVERSARIAL + SIMULTANEOUS if "bce" in p.id]
)
def test_bce_updates_every_network_every_step(name, options):
    model = make(name, options, n_critic=3)  # n_critic applies to WGAN-GP only
    before = snapshot(model)
    model.train_step(images())
    for net in networks(model):
        assert changed(model, before, net), f"{net} not updated by a BCE train_step"


@pytest.mark.device
def test_vae_train_step_updates_encoder_and_decoder():
    model = make("vae")
    before = snapshot(model)
    model.train_step(images())
    assert changed(model, before, "encoder")
    assert changed(model, before, "decoder")


# --- 3. gradient routing inside the VAE-GAN autoencoder step --------------------------------------


def autoencoder_grads(model, x, seed=5):
    """Run one autoencoder_step from a forward pass under a fixed seed; return (enc, dec) grads."""
    torch.manual_seed(seed)
    out = model.forward_pass(x)
    torch.manual_seed(seed + 1)
    model.autoencoder_step(x, *out)
    return grads(model.encoder), grads(model.decoder)


def rebuild_with(model, **changes):
    """A model with the same weights and different options."""
    options = model.options.model_dump() | changes
    other = make("vaegan", options, n_critic=model.n_critic, seed=99)
    other.load_state_dict(model.state_dict())
    return other


@pytest.mark.parametrize("options", VAEGAN_OPTIONS, ids=VAEGAN_IDS)
def test_encoder_gradient_ignores_gan_loss(options):
    model = make("vaegan", options)
    other = copy.deepcopy(model)
    # the copy's optimizers must drive the copy's own parameters
    assert other.optimizers["encoder"].param_groups[0]["params"][0] is next(
        other.encoder.parameters()
    )
    with torch.no_grad():
        other.discriminator.head.weight.mul_(-3.0).add_(0.05)
    x = images()
    # the perturbation changes D's output but not its Dis_l features
    model.eval()
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(model.discriminator(x), other.discriminator(x))
        for layer in (1, 2, 3):
            torch.testing.assert_close(
                model.discriminator.features(x, layer), other.discriminator.features(x, layer)
            )
    model.train()
    other.train()

    enc_a, dec_a = autoencoder_grads(model, x)
    enc_b, dec_b = autoencoder_grads(other, x)
    assert_grads_equal(enc_a, enc_b)
    assert grads_differ(dec_a, dec_b), "the GAN loss did not reach the decoder"


@pytest.mark.parametrize("options", VAEGAN_OPTIONS, ids=VAEGAN_IDS)
def test_gamma_weights_only_the_decoders_llike(options):
    model = make("vaegan", {**options, "gamma": 0.01})
    other = rebuild_with(model, gamma=1.0)
    x = images()
    enc_a, dec_a = autoencoder_grads(model, x)
    enc_b, dec_b = autoencoder_grads(other, x)
    assert_grads_equal(enc_a, enc_b)
    assert grads_differ(dec_a, dec_b), "gamma did not change the decoder's gradient"


@pytest.mark.parametrize("options", VAEGAN_OPTIONS, ids=VAEGAN_IDS)
def test_kl_weight_weights_only_the_encoders_prior(options):
    model = make("vaegan", {**options, "kl_weight": 1.0})
    other = rebuild_with(model, kl_weight=0.25)
    x = images()
    enc_a, dec_a = autoencoder_grads(model, x)
    enc_b, dec_b = autoencoder_grads(other, x)
    assert grads_differ(enc_a, enc_b), "kl_weight did not change the encoder's gradient"
    assert_grads_equal(dec_a, dec_b)


@pytest.mark.parametrize("adversarial", ["bce", "wgan-gp"])
def test_pixel_recon_encoder_gradient_ignores_whole_discriminator(adversarial):
    model = make("vaegan", {"recon": "pixel", "adversarial": adversarial})
    other = copy.deepcopy(model)
    perturb_(other.discriminator)
    x = images()
    enc_a, dec_a = autoencoder_grads(model, x)
    enc_b, dec_b = autoencoder_grads(other, x)
    assert_grads_equal(enc_a, enc_b)
    assert grads_differ(dec_a, dec_b)


@pytest.mark.parametrize("adversarial", ["bce", "wgan-gp"])
def test_disfeat_encoder_gradient_follows_the_feature_metric(adversarial):
    """Control for the tests above: with recon=disfeat, Dis_l is the encoder's metric, so changing
    a conv block of D must change the encoder's gradient (the comparison is sensitive)."""
    model = make("vaegan", {"recon": "disfeat", "adversarial": adversarial})
    other = copy.deepcopy(model)
    perturb_(other.discriminator.blocks[0])
    x = images()
    enc_a, _ = autoencoder_grads(model, x)
    enc_b, _ = autoencoder_grads(other, x)
    assert grads_differ(enc_a, enc_b)


# --- 3b. the simultaneous schedule is Larsen et al.'s Algorithm 1 -------------------------------


def algorithm_1_gradients(model, x, seed):
    """Algorithm 1 of Larsen et al. by hand, on a copy of `model` at its current weights: one
    forward pass, then the gradient of each network's own loss w.r.t. that network's parameters.
    Calls the networks the way the paper writes them (Dis and Dis_l as separate calls; Dis_l of x
    and x_tilde in one batch, so batch norm treats them alike), draws the random numbers in the
    model's order (reparameterisation, prior, then the penalty's eps)."""
    model = copy.deepcopy(model)
    opts = model.options
    enc, dec, dis = model.encoder, model.decoder, model.discriminator
    torch.manual_seed(seed)
    mu, logvar = enc(x)
    x_tilde = dec(mu + torch.randn_like(mu) * (0.5 * logvar).exp())
    x_p = dec(torch.randn(x.size(0), LATENT))
    if opts.recon == "pixel":
        llike = 0.5 * ((x_tilde - x) / opts.pixel_sigma).pow(2).flatten(1).sum(1).mean()
    else:
        tilde_features, target = dis.features(torch.cat([x_tilde, x]), opts.dis_layer).chunk(2)
        llike = 0.5 * (tilde_features - target.detach()).pow(2).flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()
    if opts.adversarial == "bce":
        d_x, d_tilde, d_p = dis(x), dis(x_tilde), dis(x_p)
        # L_GAN = log Dis(x) + log(1 - Dis(x_tilde)) + log(1 - Dis(x_p)), Dis = sigmoid(logit)
        l_gan = F.logsigmoid(d_x).mean() + F.logsigmoid(-d_tilde).mean() + F.logsigmoid(-d_p).mean()
        loss_dis = -l_gan
        generator = -F.logsigmoid(d_tilde).mean() - F.logsigmoid(d_p).mean()  # non-saturating
    else:
        fake = torch.cat([x_tilde, x_p])
        # Gulrajani et al.: each fake paired with a real drawn at random (the batch twice, shuffled)
        reals = torch.cat([x, x])[torch.randperm(fake.size(0))]
        eps = torch.rand(fake.size(0), 1, 1, 1)
        x_hat = (eps * reals + (1 - eps) * fake.detach()).requires_grad_(True)
        (slope,) = torch.autograd.grad(dis(x_hat).sum(), x_hat, create_graph=True)
        penalty = (slope.flatten(1).norm(dim=1) - 1).pow(2).mean()
        loss_dis = dis(fake).mean() - dis(x).mean() + opts.gp_lambda * penalty
        generator = -dis(fake).mean()
    losses = {
        "encoder": opts.kl_weight * kl + llike,
        "decoder": opts.gamma * llike + generator,
        "discriminator": loss_dis,
    }
    return {
        name: torch.autograd.grad(loss, list(getattr(model, name).parameters()), retain_graph=True)
        for name, loss in losses.items()
    }


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize(("name", "options"), SIMULTANEOUS)
def test_simultaneous_step_is_algorithm_1(name, options, float64):
    """Every network's gradient is its own loss's gradient at the weights before the step: the
    discriminator has not moved when the encoder and decoder are differentiated. In float64, so
    that the different order of the hand computation's sums stays far below the tolerance."""
    model = make(name, options | {"gamma": 0.5}, n_critic=1)
    model.train_step(images(seed=3))  # step once so that the weights are not the initial ones
    x = images(seed=4)
    expected = algorithm_1_gradients(model, x, seed=11)
    torch.manual_seed(11)
    model.train_step(x)
    for network, grads_expected in expected.items():
        for got, want in zip(grads(getattr(model, network)), grads_expected, strict=True):
            torch.testing.assert_close(got, want, msg=lambda m, n=network: f"{n}: {m}")


@pytest.mark.parametrize("adversarial", ["bce", "wgan-gp"])
def test_alternating_step_differs_from_algorithm_1(adversarial, float64):
    """Control for the test above: the default schedule differentiates the encoder and decoder
    against the updated discriminator, so their gradients are not Algorithm 1's."""
    model = make("vaegan", {"adversarial": adversarial, "gamma": 0.5}, n_critic=1)
    x = images(seed=4)
    expected = algorithm_1_gradients(model, x, seed=11)
    torch.manual_seed(11)
    model.train_step(x)
    for got, want in zip(grads(model.discriminator), expected["discriminator"], strict=True):
        torch.testing.assert_close(got, want)  # the discriminator's step is the same
    assert grads_differ(grads(model.decoder), expected["decoder"])


# discriminator passes per step (its first conv block's calls), with recon: disfeat; both
# schedules end with one Dis_l pass over x_tilde and x together (the feature loss)
PASSES = [
    # alternating: D step on reals, prior samples, reconstructions; then Dis(x_tilde), Dis(x_p)
    # | simultaneous: one pass per batch (reals, reconstructions, prior samples)
    pytest.param("bce", 6, 4, id="bce"),
    # alternating: critic on reals, fakes, penalty points; then one pass over the fakes
    # | simultaneous: reals, fakes, penalty points
    pytest.param("wgan-gp", 5, 4, id="wgan-gp"),
]


@pytest.mark.parametrize(("adversarial", "alternating", "simultaneous"), PASSES)
def test_simultaneous_step_runs_the_discriminator_once_per_batch(
    adversarial, alternating, simultaneous
):
    counts = {}
    for update in ("alternating", "simultaneous"):
        model = make("vaegan", {"adversarial": adversarial, "update": update}, n_critic=1)
        counts[update] = 0

        def count(*_, update=update):
            counts[update] += 1

        model.discriminator.blocks[0].register_forward_pre_hook(count)
        model.train_step(images())
    assert counts == {"alternating": alternating, "simultaneous": simultaneous}


# --- 4. WGAN-GP penalty against hand computations -------------------------------------------------


class LinearCritic(nn.Module):
    """C(x) = <w, x.flatten()> + b: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor, b: float = 0.3):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b, dtype=w.dtype))

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b


class QuadraticCritic(nn.Module):
    """C(x) = 0.5 ||x||^2: its input gradient is x."""

    def forward(self, x):
        return 0.5 * x.flatten(1).pow(2).sum(1)


@pytest.mark.parametrize("norm", [0.5, 1.0, 3.0])
def test_gradient_penalty_linear_critic(norm):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(IMAGE_SHAPE[1] * IMAGE_SHAPE[2], generator=gen, dtype=torch.float64)
    w = w / w.norm() * norm
    critic = LinearCritic(w)
    real = torch.rand(BATCH, *IMAGE_SHAPE, generator=gen, dtype=torch.float64) * 2 - 1
    fake = torch.rand(BATCH, *IMAGE_SHAPE, generator=gen, dtype=torch.float64) * 2 - 1
    gp = gradient_penalty(critic, real, fake)
    expected = (norm - 1.0) ** 2
    assert gp.dim() == 0
    assert gp.item() == pytest.approx(expected, abs=1e-12)
    # create_graph: the penalty trains the critic, d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    assert gp.requires_grad
    gp.backward()
    torch.testing.assert_close(critic.w.grad, 2 * (norm - 1.0) * w / norm)
    assert critic.b.grad is None or critic.b.grad.abs().item() < 1e-12


def test_gradient_penalty_quadratic_critic_matches_hand_formula():
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(BATCH, *IMAGE_SHAPE, generator=gen, dtype=torch.float64) * 2 - 1
    fake = torch.rand(BATCH, *IMAGE_SHAPE, generator=gen, dtype=torch.float64) * 0.1
    torch.manual_seed(42)
    gp = gradient_penalty(QuadraticCritic(), real, fake)
    torch.manual_seed(42)
    eps = torch.rand(BATCH, 1, 1, 1, dtype=torch.float64)
    x_hat = eps * real + (1 - eps) * fake
    expected = (x_hat.flatten(1).norm(dim=1) - 1).pow(2).mean()
    torch.testing.assert_close(gp, expected)
    assert gp.item() > 0
    # the interpolation really is random: another seed gives another value
    torch.manual_seed(43)
    assert gradient_penalty(QuadraticCritic(), real, fake).item() != pytest.approx(gp.item())


def test_gradient_penalty_reaches_discriminator_parameters():
    model = make("dcgan", {"loss": "wgan-gp"})
    real, fake = images(seed=0), images(seed=1)
    torch.manual_seed(0)
    gp = gradient_penalty(model.discriminator, real, fake)
    params = list(model.discriminator.parameters())
    grads_ = torch.autograd.grad(gp, params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_)


# --- 5. the Dis_l reconstruction loss -------------------------------------------------------------


@pytest.mark.parametrize("adversarial", ["bce", "wgan-gp"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_disfeat_llike_is_zero_for_identical_inputs(adversarial, mode):
    model = make("vaegan", {"recon": "disfeat", "adversarial": adversarial})
    model.train(mode == "train")
    x = images()
    with torch.no_grad():
        assert model.reconstruction_nll(x.clone(), x).item() == 0.0
        assert model.reconstruction_nll(images(seed=1), x).item() > 0.0


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_disfeat_llike_uses_the_configured_layer(layer):
    model = make("vaegan", {"recon": "disfeat", "dis_layer": layer}).eval()
    dis = model.discriminator
    a, b = images(seed=0), images(seed=1)

    def loss():
        with torch.no_grad():
            return model.reconstruction_nll(a, b)

    with torch.no_grad():
        expected = 0.5 * (dis.features(a, layer) - dis.features(b, layer)).pow(2)
        expected = expected.flatten(1).sum(1).mean()
        other_layers = {
            other: 0.5 * (dis.features(a, other) - dis.features(b, other)).pow(2)
            for other in (1, 2, 3)
            if other != layer
        }
    base = loss()
    torch.testing.assert_close(base, expected)
    for other, value in other_layers.items():
        assert not torch.allclose(base, value.flatten(1).sum(1).mean()), f"matches layer {other}"

    # blocks after layer l (or the head, for l = 3) do not enter the loss ...
    later = dis.blocks[layer] if layer < dis.num_layers else dis.head
    perturb_(later)
    torch.testing.assert_close(loss(), base, rtol=0, atol=0)
    # ... block l does
    perturb_(dis.blocks[layer - 1][0], scale=0.2)
    assert not torch.allclose(loss(), base)


def test_pixel_llike_is_scaled_gaussian_nll():
    sigma = 0.4
    model = make("vaegan", {"recon": "pixel", "pixel_sigma": sigma})
    a, b = images(seed=0), images(seed=1)
    expected = 0.5 * ((a - b) / sigma).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(model.reconstruction_nll(a, b), expected)


# --- 6. registry ----------------------------------------------------------------------------------


def test_unknown_model_lists_registered_names():
    with pytest.raises(models.ModelConfigError) as info:
        make("vaeggan")
    message = str(info.value)
    assert "vaeggan" in message
    for registered in ("vae", "dcgan", "vaegan"):
        assert registered in message
    # the package's own; a suite's plugin (tests/test_plugins.py, the shipped AAE suite read by
    # tests/test_cell_ids.py) may have added its models to the registry of this process
    registry = models.REGISTRY.items()
    builtin = {name for name, cls in registry if cls.__module__.startswith("models.")}
    assert builtin == {"vae", "dcgan", "vaegan"}


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("vaegan", {"recon": "pixels"}, "recon"),
        ("vaegan", {"dis_layer": 0}, "dis_layer"),
        ("vaegan", {"gamma": -1.0}, "gamma"),
        ("vaegan", {"discriminator_layer": 2}, "discriminator_layer"),
        ("dcgan", {"loss": "hinge"}, "loss"),
        ("dcgan", {"recon": "pixel"}, "recon"),
        ("vae", {"pixel_sigma": 0.0}, "pixel_sigma"),
        ("vae", {"gamma": 1.0}, "gamma"),
    ],
)
def test_bad_options_name_the_option(name, options, field):
    with pytest.raises(models.ModelConfigError) as info:
        make(name, options)
    message = str(info.value)
    assert f"'{field}'" in message
    assert name in message
    assert "\n" not in message


def test_unknown_option_is_reported_as_unknown():
    with pytest.raises(models.ModelConfigError, match="unknown option 'kl_wieght'"):
        make("vae", {"kl_wieght": 2.0})


def test_option_table_lists_every_option_with_default():
    rows = models.option_table("vaegan")
    assert all(len(row) == 3 for row in rows)
    table = {name: default for name, _, default in rows}
    assert table == {
        "recon": "disfeat",
        "adversarial": "bce",
        "gamma": 1e-2,
        "dis_layer": 3,
        "kl_weight": 1.0,
        "pixel_sigma": 0.2,
        "gp_lambda": 10.0,
        "update": "alternating",
    }
    kinds = {name: kind for name, kind, _ in rows}
    assert "pixel" in kinds["recon"] and "disfeat" in kinds["recon"]
    assert "bce" in kinds["adversarial"] and "wgan-gp" in kinds["adversarial"]
    assert "alternating" in kinds["update"] and "simultaneous" in kinds["update"]
    # defaults build a valid model with exactly these options
    assert models.validate_options("vaegan", {}).model_dump() == table


# --- 7. checkpoints -------------------------------------------------------------------------------


@pytest.mark.device
@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_checkpoint_round_trip(name, options, tmp_path):
    model = make(name, options, n_critic=3, seed=0)
    for step in range(2):
        torch.manual_seed(100 + step)
        model.train_step(images(seed=step))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optim": model.optimizer_state()}, path)

    fresh = make(name, options, n_critic=3, seed=1)
    assert fresh.num_steps == 0
    state = torch.load(path, weights_only=True)
    fresh.load_state_dict(state["model"])
    fresh.load_optimizer_state(state["optim"])
    assert fresh.num_steps == model.num_steps == 2

    x = images(seed=2)
    torch.manual_seed(7)
    logs_a = model.train_step(x)
    torch.manual_seed(7)
    logs_b = fresh.train_step(x)
    # with WGAN-GP and n_critic=3 the third step is the generator's: num_steps must have travelled
    assert logs_a.keys() == logs_b.keys()
    for key in logs_a:
        torch.testing.assert_close(logs_a[key], logs_b[key], msg=key)
    for (ka, pa), (kb, pb) in zip(
        model.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert ka == kb
        if isinstance(pa, torch.Tensor):
            torch.testing.assert_close(pa, pb, msg=ka)


# --- 8. losses in closed form ---------------------------------------------------------------------


def test_kl_to_standard_normal():
    zeros = torch.zeros(4, LATENT)
    assert kl_to_standard_normal(zeros, zeros).item() == 0.0
    mu = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [math.log(0.25), 0.0]])
    # per dim: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2); sum over dims, mean over the batch
    row0 = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (4 + 4 - 1 - math.log(4.0))
    row1 = 0.5 * (0 + 0.25 - 1 - math.log(0.25)) + 0.5 * (1 + 1 - 1 - 0)
    expected = (row0 + row1) / 2
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert kl_to_standard_normal(mu, logvar).item() > 0


def test_bce_losses_are_log_probabilities():
    logits = torch.tensor([-5.0, -1.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    d = torch.sigmoid(logits)
    torch.testing.assert_close(neg_log_d(logits), -torch.log(d).mean())
    torch.testing.assert_close(neg_log_one_minus_d(logits), -torch.log(1 - d).mean())
    # stable for large logits, where the naive form overflows
    big = torch.tensor([200.0, -200.0])
    assert torch.isfinite(neg_log_d(big)) and torch.isfinite(neg_log_one_minus_d(big))
    torch.testing.assert_close(neg_log_d(big), torch.tensor(100.0))
    torch.testing.assert_close(neg_log_one_minus_d(big), F.softplus(big).mean())


def test_gaussian_nll_sums_per_example_and_averages_over_batch():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.ones(2, 1, 2, 2)
    b[1] = 2.0
    # example 0: 0.5 * 4 * 1 = 2; example 1: 0.5 * 4 * 4 = 8; mean 5
    assert gaussian_nll(a, b).item() == pytest.approx(5.0)


# --- 6. batch norm: a per-sample feature loss, and the decoder's evaluation statistics -----------


def test_feature_loss_compares_each_reconstruction_with_its_own_input_only():
    """With batch norm in the discriminator (BCE), Dis_l(x) and Dis_l(x_tilde) are normalised
    with the same batch statistics: changing one reconstruction changes only its own row of the
    feature difference. Separate passes (the old way) move every row."""
    model = make("vaegan", {"recon": "disfeat", "adversarial": "bce", "dis_layer": 2})
    model.train()
    x = images(seed=0)
    x_tilde = x.clone()
    x_tilde[0] = images(seed=1)[0]
    with torch.no_grad():
        tilde_features, target = model.feature_pair(x_tilde, x)
        separate = model.discriminator.features(x_tilde, 2) - model.discriminator.features(x, 2)
    difference = (tilde_features - target).flatten(1).abs().sum(1)
    assert difference[0] > 0
    torch.testing.assert_close(difference[1:], torch.zeros_like(difference[1:]))
    assert (separate[1:].flatten(1).abs().sum(1) > 1e-4).all()


def decoder_norm_buffers(model):
    return [
        t.clone()
        for m in model.decoder.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for t in (m.running_mean, m.running_var, m.num_batches_tracked)
    ]


@pytest.mark.parametrize("name", ["vae", "dcgan", "vaegan"])
def test_decoder_statistics_are_those_of_the_calibration_latents_then_restored(name):
    model = make(name, {})
    for _ in range(3):
        model.train_step(images())
    before = decoder_norm_buffers(model)
    torch.manual_seed(0)
    latents = [torch.randn(32, LATENT) for _ in range(4)]
    projection = model.decoder.project[0]  # the linear layer ahead of the first batch norm
    norm = model.decoder.project[1]
    with model.decoder_statistics(iter(latents)):
        with torch.no_grad():
            activations = torch.cat([projection(z) for z in latents])
        # a plain average over the calibration batches, not the training-time moving average
        torch.testing.assert_close(norm.running_mean, activations.mean(0), rtol=1e-4, atol=1e-5)
        assert not model.decoder.training or model.training
        inside = model.decode(latents[0])
    after = decoder_norm_buffers(model)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(inside, model.decode(latents[0]))  # the statistics mattered


# --- 9. networks at every supported size ----------------------------------------------------------

SIZES = SUPPORTED_SIZES
SIZE_BATCH = 4

# Today's 28 and 32 pixel networks, pinned: their checkpoints and logged results must stay valid,
# so the same state-dict keys in the same order and the same parameter counts.
ENCODER_KEYS = [
    "trunk.0.0.weight",
    "trunk.0.0.bias",
    *(
        f"trunk.{i}.{k}"
        for i in (1, 2)
        for k in (
            "0.weight",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
        )
    ),
    "head.weight",
    "head.bias",
]
DISCRIMINATOR_KEYS = [key.replace("trunk.", "blocks.") for key in ENCODER_KEYS]
CRITIC_KEYS = [f"blocks.{i}.0.{k}" for i in (0, 1, 2) for k in ("weight", "bias")] + [
    "head.weight",
    "head.bias",
]
NORM_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
DECODER_KEYS = [
    "project.0.weight",
    *(f"project.1.{k}" for k in NORM_KEYS),
    "upsample.0.weight",
    *(f"upsample.1.{k}" for k in NORM_KEYS),
    "upsample.3.weight",
    *(f"upsample.4.{k}" for k in NORM_KEYS),
    "upsample.6.weight",
    "upsample.6.bias",
]
# (size, channels, width, latent) -> parameters of encoder, decoder, discriminator, critic
PINNED_PARAMETER_COUNTS = {
    (28, 1, 8, 8): (15096, 11953, 7401, 7353),
    (28, 3, 8, 8): (15352, 12211, 7657, 7609),
    (32, 1, 8, 8): (18680, 15537, 10985, 10937),
    (32, 3, 8, 8): (18936, 15795, 11241, 11193),
    (28, 1, 64, 64): (952256, 697729, 431937, 431553),
    (28, 3, 64, 64): (954304, 699779, 433985, 433601),
    (32, 1, 64, 64): (1181632, 927105, 661313, 660929),
    (32, 3, 64, 64): (1183680, 929155, 663361, 662977),
}


def count(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("size", "channels", "width", "latent"),
    list(PINNED_PARAMETER_COUNTS),
    ids=[f"{s}x{s}x{c}-w{w}" for s, c, w, _ in PINNED_PARAMETER_COUNTS],
)
def test_28_and_32_pixel_networks_are_unchanged(size, channels, width, latent):
    shape = (channels, size, size)
    nets = (
        Encoder(shape, latent, width),
        Decoder(shape, latent, width),
        Discriminator(shape, width),
        Discriminator(shape, width, batch_norm=False),
    )
    assert tuple(map(count, nets)) == PINNED_PARAMETER_COUNTS[size, channels, width, latent]
    for net, keys in zip(
        nets, (ENCODER_KEYS, DECODER_KEYS, DISCRIMINATOR_KEYS, CRITIC_KEYS), strict=True
    ):
        assert list(net.state_dict()) == keys
    assert nets[2].num_layers == nets[3].num_layers == 3


def test_depth_and_layer_shapes_follow_the_size():
    assert SIZES == (28, 32, 64, 128)
    assert [depth(size) for size in SIZES] == [3, 3, 4, 5]
    w = 64
    assert discriminator_layers((1, 28, 28), w) == [(64, 14, 14), (128, 7, 7), (256, 4, 4)]
    assert discriminator_layers((3, 32, 32), w) == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert discriminator_layers((3, 64, 64), w) == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
    ]
    # channels double per block and stop at 8 * width
    assert discriminator_layers((3, 128, 128), w) == [
        (64, 64, 64),
        (128, 32, 32),
        (256, 16, 16),
        (512, 8, 8),
        (512, 4, 4),
    ]
    assert discriminator_layers((1, 128, 128), 8)[-1] == (64, 4, 4)


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 48, 48), (3, 256, 256), (3, 64, 32)])
def test_unsupported_image_shapes_are_rejected_in_one_line(shape):
    for net in (
        lambda: Encoder(shape, LATENT, 8),
        lambda: Decoder(shape, LATENT, 8),
        lambda: Discriminator(shape, 8),
    ):
        with pytest.raises(ValueError, match="not supported"):
            net()
    hparams = models.Hparams(latent_dim=LATENT, width=8)
    with pytest.raises(models.ModelConfigError) as info:
        models.build("vae", {}, shape, hparams)
    assert "28, 32, 64 or 128" in str(info.value) and "\n" not in str(info.value)


def make_sized(name, options, image_shape, seed=0):
    """A tiny model at any image shape; n_critic 1, so one train_step updates every network."""
    torch.manual_seed(seed)
    hparams = models.Hparams(latent_dim=LATENT, width=8, n_critic=1)
    return models.build(name, options, image_shape, hparams, device=DEVICE)


def sized_images(image_shape, seed=0, n=SIZE_BATCH):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *image_shape, generator=gen) * 2 - 1).to(DEVICE)


@pytest.mark.device
@pytest.mark.parametrize(("name", "options"), VARIANTS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_every_variant_at_every_size(size, channels, name, options):
    shape = (channels, size, size)
    model = make_sized(name, options, shape)
    x = sized_images(shape)
    with torch.no_grad():
        if model.has_encoder:
            mu, logvar = model.encoder(x)
            assert mu.shape == logvar.shape == (SIZE_BATCH, LATENT)
        if model.has_discriminator:
            dis = model.discriminator
            assert dis.num_layers == depth(size)
            assert dis(x).shape == (SIZE_BATCH,)
            for layer, layer_shape in enumerate(discriminator_layers(shape, 8), 1):
                assert dis.features(x, layer).shape == (SIZE_BATCH, *layer_shape)
            with pytest.raises(ValueError):
                dis.features(x, dis.num_layers + 1)
        generated = model.decoder(torch.randn(SIZE_BATCH, LATENT, device=DEVICE))
        assert generated.shape == (SIZE_BATCH, *shape)
    before = snapshot(model)
    logs = model.train_step(x)
    assert logs
    for key, value in logs.items():
        assert value.dim() == 0 and torch.isfinite(value), f"{key} = {value}"
    for net in networks(model):
        assert changed(model, before, net), f"{net} not updated at {size}x{size}x{channels}"
    samples = model.sample(3)
    assert samples.shape == (3, *shape)
    assert torch.isfinite(samples).all() and samples.abs().max() <= 1
    if model.has_encoder:
        assert model.encode(x).shape == (SIZE_BATCH, LATENT)


@pytest.mark.parametrize("size", SIZES)
def test_dis_layer_beyond_the_depth_is_rejected_in_one_line(size):
    blocks = depth(size)
    shape = (3, size, size)
    options = models.validate_options("vaegan", {"dis_layer": blocks + 1})
    expected = (
        f"dis_layer {blocks + 1} does not exist for {size}x{size} images: the discriminator has "
        f"{blocks} conv blocks (1..{blocks})"
    )
    # without building anything (what a suite can check before training) and when building
    with pytest.raises(models.ModelConfigError) as checked:
        models.model_class("vaegan").validate_image_shape(options, shape)
    with pytest.raises(models.ModelConfigError) as built:
        make_sized("vaegan", {"dis_layer": blocks + 1}, shape)
    for info in (checked, built):
        message = str(info.value)
        assert expected in message and "vaegan" in message and "\n" not in message
    # the deepest layer that exists is accepted
    assert make_sized("vaegan", {"dis_layer": blocks}, shape).options.dis_layer == blocks


def test_dis_layer_message_at_64():
    with pytest.raises(models.ModelConfigError) as info:
        make_sized("vaegan", {"dis_layer": 5}, (3, 64, 64))
    assert str(info.value).endswith(
        "dis_layer 5 does not exist for 64x64 images: the discriminator has 4 conv blocks (1..4)"
    )


@pytest.mark.parametrize("adversarial", ["bce", "wgan-gp"])
@pytest.mark.parametrize("layer", [1, 2, 3, 4])
def test_every_dis_layer_trains_vaegan_disfeat_at_64(layer, adversarial):
    shape = (3, 64, 64)
    options = {"recon": "disfeat", "adversarial": adversarial, "dis_layer": layer}
    model = make_sized("vaegan", options, shape)
    x = sized_images(shape)
    with torch.no_grad():
        tilde_features, target = model.feature_pair(sized_images(shape, seed=1), x)
    layer_shape = discriminator_layers(shape, 8)[layer - 1]
    assert tilde_features.shape == target.shape == (SIZE_BATCH, *layer_shape)
    before = snapshot(model)
    logs = model.train_step(x)
    for key, value in logs.items():
        assert torch.isfinite(value), f"{key} = {value}"
    assert logs["llike"] > 0
    for net in NETWORKS:
        assert changed(model, before, net)


@pytest.mark.parametrize("name", ["vae", "vaegan"])
def test_decoder_statistics_recalibrate_a_model_left_in_eval_mode(name):
    """The encoded calibration latents are made by encode(), which leaves a model in the mode it
    found it: a model in eval mode used to turn its decoder back to eval before each calibration
    batch, so the reset statistics were never re-estimated (mean 0, variance 1 decoded every
    reconstruction). The decoder is put in train mode for every batch now."""
    model = make(name, {})
    for _ in range(3):
        model.train_step(images())
    model.eval()
    batches = [images(seed) for seed in range(3)]
    projection, norm = model.decoder.project[0], model.decoder.project[1]
    with torch.no_grad():
        latents = [model.encode(x) for x in batches]
        expected = torch.cat([projection(z) for z in latents]).mean(0)
    with model.decoder_statistics(model.encode(x) for x in batches):
        torch.testing.assert_close(norm.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert not model.training and not model.decoder.training


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_vaegan_gradient_penalty_pairs_reals_and_fakes_at_random(update, monkeypatch):
    """Gulrajani et al. interpolate between a real and a fake drawn independently. The WGAN-GP
    VAE-GAN's fakes are the reconstructions and the prior samples; pairing each real with its own
    reconstruction would sample only short segments. The reals are every image of the batch
    twice, in random order."""
    import models.vaegan as vaegan

    captured = []

    def spy(critic, real, fake):
        captured.append((real.detach().clone(), fake.detach().clone()))
        return gradient_penalty(critic, real, fake)

    monkeypatch.setattr(vaegan, "gradient_penalty", spy)
    model = make("vaegan", {"adversarial": "wgan-gp", "update": update})
    x = images(3, n=16)
    model.train_step(x)
    assert captured
    doubled = torch.cat([x, x]).flatten(1)
    for real, fake in captured:
        assert real.shape == fake.shape == (32, *IMAGE_SHAPE)
        # the same images, each twice, but not in the order of their reconstructions
        assert torch.equal(real.flatten(1).sort(0).values, doubled.sort(0).values)
        own = (real.flatten(1) == doubled).all(1).double().mean().item()
        assert own < 0.5
