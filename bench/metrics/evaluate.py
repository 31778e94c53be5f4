"""Evaluation of a trained model: the same code, data and settings for every cell of a suite.

`prepare` builds what a suite's cells share (the evaluation split on the device, the domain
classifier, the Inception weights if any); `evaluate` measures one model and returns its metrics
under the keys of bench/keys.py, plus the images to log. Metrics that do not apply (no encoder,
no Inception weights) are absent, never zero or NaN.

The domain classifier sees each generated image once per evaluation: one pass gives its features
(domain FID/KID/precision/recall) and its logits (predicted class, mode coverage). The real
images' domain features are extracted once per dataset and classifier (a disk cache shared by
suites and runs) and held by the Evaluator for every cell of the suite.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bench import keys
from bench.data.images import (
    ImageData,
    model_batch,
    to_model_range,
    to_unit_range,
)
from bench.metrics import domain, fidelity, memorisation, modes, ood, probes
from bench.metrics.evaluator import Evaluator, prepare, scoring_on  # noqa: F401 (the API)
from bench.metrics.interpolation import interpolation_metrics
from bench.metrics.sharpness import laplacian_energy

# Offsets keep the evaluation's random streams apart from training's (which uses the seed as is).
SAMPLES_SEED_OFFSET = 1_000_003
INTERP_SEED_OFFSET = 2_000_003
CALIBRATION_SEED_OFFSET = 3_000_003
# Bump when the evaluation computes new metrics or changes one: `bench evaluate` re-scores every
# finished run whose evaluation_version tag differs. 1: sharpness, data copying, probes, OOD.
# 2: C_T from distances to the training points of the sample's own cell (Meehan et al.'s code).
# 3: FID statistics in float64; Inception features in float32 whatever autocast is on, with the
#    weights of bench/metrics/inception_weights.py (so runs that skipped Inception get it).
EVALUATION_VERSION = "3"
# torch-fidelity's default; fidelity.kid_subset lowers it to half the smaller side
KID_SUBSET_SIZE = 1000


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] -> uint8 [0, 255] on the CPU, as image files would store them."""
    return to_unit_range(images).mul(255).round().to(torch.uint8).cpu()


@torch.no_grad()
def generate(model, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """n samples from the prior (model range, on the model's device), reproducible per seed."""
    generator = torch.Generator(device=model.device).manual_seed(seed + SAMPLES_SEED_OFFSET)
    return torch.cat(
        [model.sample(min(batch_size, n - i), generator=generator) for i in range(0, n, batch_size)]
    )


@torch.no_grad()
def reconstruction_scores(model, images: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(recon_mse, sharpness_recon) of images (uint8, or float in the model range) and their
    reconstructions decode(encode(x)) from the encoder mean, over all of `images`: the mean
    squared error per pixel on the [0, 1] scale, and the reconstructions' Laplacian energy over
    the inputs'."""
    total, count, energy_out, energy_in = 0.0, 0, 0.0, 0.0
    for i in range(0, len(images), batch_size):
        x = model_batch(images[i : i + batch_size], images.device)
        x_hat = model.decode(model.encode(x))
        total += (to_unit_range(x_hat) - to_unit_range(x)).double().pow(2).sum().item()
        count += x.numel()
        energy_out += laplacian_energy(to_unit_range(x_hat)).sum().item()
        energy_in += laplacian_energy(to_unit_range(x)).sum().item()
    return total / count, energy_out / energy_in if energy_in > 0 else float("nan")


def recon_mse(model, images: torch.Tensor, batch_size: int) -> float:
    """Mean squared error per pixel on the [0, 1] scale (reconstruction_scores)."""
    return reconstruction_scores(model, images, batch_size)[0]


@contextmanager
def decoder_statistics(model, evaluator: Evaluator, seed: int, latents: str) -> Iterator[None]:
    """The evaluation's batch-norm policy for the decoder (evaluation.batch_norm):
    "recalibrate" (default) re-estimates its running statistics, for the block, on the latents it
    is about to decode: `latents="prior"` on calibration_samples draws from N(0, I) (sampling,
    prior interpolations), `latents="encoded"` on the encoder means of as many training images
    (reconstructions, encoded interpolations); "running" keeps the statistics training left."""
    config = evaluator.config
    if config.batch_norm == "running" or (latents == "encoded" and not model.has_encoder):
        yield
        return
    n, batch = config.calibration_samples, config.batch_size
    generator = torch.Generator(device=model.device).manual_seed(seed + CALIBRATION_SEED_OFFSET)
    if latents == "prior":
        batches = (model.prior(min(batch, n - i), generator) for i in range(0, n, batch))
    else:
        train = evaluator.data.train.images
        cpu_generator = torch.Generator().manual_seed(seed + CALIBRATION_SEED_OFFSET)
        index = torch.randperm(len(train), generator=cpu_generator)[:n]
        batches = (
            model.encode(to_model_range(train[index[i : i + batch]], model.device))
            for i in range(0, len(index), batch)
        )
    with model.decoder_statistics(batches):
        yield


NEAREST_SHOWN = 8


def nearest_grid(fake: torch.Tensor, train: torch.Tensor, copying) -> torch.Tensor:
    """The NEAREST_SHOWN samples closest to the training set (domain features) in a row, their
    nearest training images in the row below, in [0, 1]: the report's copying gallery."""
    closest = copying.distance.argsort()[:NEAREST_SHOWN]
    samples = to_unit_range(fake[closest.to(fake.device)]).cpu()
    neighbours = train[copying.nearest[closest]].float().div(255.0)
    return torch.cat([samples, neighbours])


def grid_columns(n: int) -> int:
    return max(1, int(round(n**0.5)))


def reconstruction_grid(model, data: ImageData, n: int) -> torch.Tensor:
    """Rows of evaluation images, each followed by a row of their reconstructions, in [0, 1]."""
    columns = grid_columns(2 * n)
    n = max(columns, n - n % columns)
    inputs = to_model_range(data.eval.images[:n], model.device)
    recons = model.decode(model.encode(inputs))
    rows = []
    for i in range(0, len(inputs), columns):
        rows += [inputs[i : i + columns], recons[i : i + columns]]
    return to_unit_range(torch.cat(rows)).cpu()


def evaluate(model, evaluator: Evaluator, seed: int, cheap: bool = False):
    """Metrics of one model -> ({key: value}, images), images: "interpolation" (frames or None)
    and, for the final evaluation, the logged grids "samples" (grid_size prior samples, fixed
    noise per seed) and "reconstructions" (variants with an encoder), all in [0, 1] on the CPU
    but the frames. The grids are decoded in the same batch-norm blocks as the metrics.

    cheap=True (evaluation over training) computes domain FID/KID, reconstruction MSE and mode
    coverage only: no precision/recall, no Inception, no interpolation, no grids."""
    started = time.perf_counter()
    config = evaluator.config
    metrics: dict[str, float] = {keys.DOMAIN_ACCURACY: evaluator.classifier_accuracy}
    pairs = latent_pairs(model, evaluator, seed) if not cheap else {}
    strips = []
    images: dict[str, torch.Tensor | None] = {}

    def interpolate(kind: str) -> None:
        if kind not in pairs:
            return
        z_a, z_b, method = pairs[kind]
        result = interpolation_metrics(
            model.decode, evaluator.embed, z_a, z_b, config.interp_steps, evaluator.real_scale,
            method,
        )  # fmt: skip
        metrics[keys.interp_degenerate_key(kind)] = result.degenerate
        metrics[keys.interp_reach_key(kind)] = result.reach
        if result.energy is not None:  # absent when every pair's endpoints coincide
            metrics[keys.interp_energy_key(kind)] = result.energy
            metrics[keys.interp_evenness_key(kind)] = result.evenness
        strips.append(result.frames[: config.interp_strips])

    with decoder_statistics(model, evaluator, seed, "prior"):
        fake = generate(model, config.num_samples, config.batch_size, seed)
        interpolate("prior")
        if not cheap:
            generator = torch.Generator(device=model.device).manual_seed(seed)
            samples = model.sample(config.grid_size, generator=generator)
            images["samples"] = to_unit_range(samples).cpu()
    fake_uint8 = to_uint8(fake)
    real_uint8 = evaluator.data.eval.images
    if not cheap:
        sharpness = laplacian_energy(fake_uint8).mean().item() / evaluator.real_sharpness
        metrics[keys.SHARPNESS_SAMPLES] = sharpness
    # the one pass of the domain classifier over the samples: features and logits
    fake_domain = domain.extract(
        evaluator.classifier, fake_uint8, config.batch_size, evaluator.device
    )
    for space in evaluator.spaces if not cheap else ["domain"]:
        if space == "domain":
            metrics |= fidelity.feature_metrics(
                space,
                fake_domain.features,
                evaluator.real_domain_features,
                KID_SUBSET_SIZE,
                prc=not cheap,
            )
        else:  # Inception: another network, through torch-fidelity's extraction
            metrics |= fidelity.fidelity_metrics(
                fake_uint8,
                real_uint8,
                space,
                evaluator.real_cache_name(space),
                batch_size=config.batch_size,
                device=evaluator.device,
                inception_weights=evaluator.inception_weights,
                kid_subset_size=KID_SUBSET_SIZE,
                cache_dir=evaluator.cache_dir,
                prc=not cheap,
            )
    if not cheap:
        copying = memorisation.data_copying(
            fake_domain.features, reference=evaluator.copying_reference
        )
        if copying.c_t is not None:
            metrics[keys.DATA_COPYING] = copying.c_t
        images["nearest"] = nearest_grid(fake, evaluator.data.train.images, copying)
    if not cheap and evaluator.has_classes and evaluator.data.labelled:
        train, evaluation = evaluator.data.train, evaluator.data.eval  # the encoder only
        metrics |= probes.probe_metrics(model, train, evaluation, config.batch_size)
    if not cheap and evaluator.ood_sets:
        inside = ood.subset(evaluator.data.eval.images, config.ood_images)
        with decoder_statistics(model, evaluator, seed, "encoded"):
            metrics |= ood.ood_metrics(model, inside, evaluator.ood_sets, config.batch_size)
    if model.has_encoder:
        with decoder_statistics(model, evaluator, seed, "encoded"):
            mse, sharpness = reconstruction_scores(model, evaluator.eval_images, config.batch_size)
            metrics[keys.RECON_MSE] = mse
            if not cheap:
                metrics[keys.SHARPNESS_RECON] = sharpness
            interpolate("encoded")
            if not cheap:
                grid = reconstruction_grid(model, evaluator.data, config.grid_size // 2)
                images["reconstructions"] = grid
    if evaluator.has_classes:  # absent, never 0, for unlabelled data
        metrics |= modes.mode_metrics(
            fake_domain.logits,
            fake_domain.features,
            evaluator.modes_reference,
            evaluator.data.num_classes,
        )
    metrics[keys.EVAL_SECONDS] = time.perf_counter() - started
    images["interpolation"] = torch.cat(strips) if strips else None
    return metrics, images


def latent_pairs(model, evaluator: Evaluator, seed: int) -> dict[str, tuple]:
    """Latent pairs to interpolate: from the prior for every model, and encoder means of random
    evaluation images for models with an encoder."""
    n = evaluator.config.interp_pairs
    generator = torch.Generator(device=model.device).manual_seed(seed + INTERP_SEED_OFFSET)
    pairs = {"prior": (model.prior(n, generator), model.prior(n, generator), "slerp")}
    if model.has_encoder:
        cpu_generator = torch.Generator().manual_seed(seed + INTERP_SEED_OFFSET)
        index = torch.randperm(len(evaluator.eval_images), generator=cpu_generator)[: 2 * n]
        chosen = evaluator.eval_images[index.to(evaluator.eval_images.device)]
        z = model.encode(model_batch(chosen, chosen.device))
        pairs["encoded"] = (z[: len(z) // 2], z[len(z) // 2 : 2 * (len(z) // 2)], "lerp")
    return pairs
