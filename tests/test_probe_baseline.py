"""The probes' random-weights baseline and fit (issue #35): the twin's batch-norm statistics are
its own, each network's weights are seeded by its architecture, and a fit that stops at max_iter
is logged, not printed as a ConvergenceWarning."""

from __future__ import annotations

import warnings

import pytest
import torch

import models
from bench import keys
from bench.data import load_dataset, to_model_range
from bench.metrics import probes


@pytest.fixture(scope="module")
def real():
    return load_dataset("synthetic", train_limit=400, eval_limit=200)


def build(name: str, options: dict, real):
    torch.manual_seed(0)
    hparams = models.Hparams(latent_dim=8, width=8, n_critic=1, lr_g=3e-3, lr_d=3e-3)
    model = models.build(name, options, real.image_shape, hparams, device="cpu")
    for step in range(5):
        model.train_step(to_model_range(real.train.images[step * 16 : step * 16 + 16]))
    return model


def norms(network: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_the_twin_has_batch_norm_statistics_of_its_own(real):
    model = build("vaegan", {"adversarial": "bce"}, real)
    images = real.train.images[:300]
    twin = probes.random_twin(model, images, batch_size=100)
    first = norms(twin.discriminator)[0]
    trained = norms(model.discriminator)[0]
    assert not torch.allclose(first.running_mean, trained.running_mean)
    # the plain average over the calibration batches of the twin's own inputs to that layer
    seen = []
    handle = first.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    twin.discriminator.train()
    with torch.no_grad():
        for i in range(0, len(images), 100):
            twin.discriminator(to_model_range(images[i : i + 100]))
    handle.remove()
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    calibrated = probes.random_twin(model, images, batch_size=100)
    assert torch.allclose(norms(calibrated.discriminator)[0].running_mean, means, atol=1e-5)


def test_the_same_architecture_gets_the_same_twin_in_every_family(real):
    dcgan = probes.random_twin(build("dcgan", {"loss": "bce"}, real))
    vaegan = probes.random_twin(build("vaegan", {"adversarial": "bce"}, real))
    for mine, theirs in zip(
        dcgan.discriminator.parameters(), vaegan.discriminator.parameters(), strict=True
    ):
        assert torch.equal(mine, theirs)
    vae = probes.random_twin(build("vae", {}, real))
    for mine, theirs in zip(vae.encoder.parameters(), vaegan.encoder.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_a_fit_short_of_convergence_is_logged_not_printed(real, monkeypatch):
    model = build("vae", {}, real)
    monkeypatch.setattr(probes, "MAX_ITER", 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = probes.probe_metrics(model, real.train, real.eval, batch_size=100)
    assert not [w for w in caught if "converge" in str(w.message).lower()]
    assert metrics[keys.probe_converged_key("encoder")] == 0.0
    monkeypatch.setattr(probes, "MAX_ITER", 1000)
    metrics = probes.probe_metrics(model, real.train, real.eval, batch_size=100)
    assert metrics[keys.probe_converged_key("encoder")] == 1.0


def test_descriptive_metrics_carry_no_misleading_direction():
    from bench.metrics.table import metric_specs

    specs = {m.key: m for m in metric_specs()}
    reach = specs[keys.interp_reach_key("prior")]
    assert reach.arrow == "→1" and reach.score(1.6) > reach.score(0.9)  # wide noise does not win
    baseline = specs[keys.probe_key("encoder", random=True)]
    assert baseline.arrow == "" and baseline.direction == "a baseline, no direction"
    assert specs[keys.probe_key("encoder")].arrow == "↑"
    assert "same evaluation.num_samples" in specs[keys.DATA_COPYING].about
    assert "recon. error's to about three digits" in specs[keys.ood_key("elbo", "noise")].about
