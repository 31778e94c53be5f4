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

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from bench import keys
from bench.data.cache import default_cache_dir
from bench.data.config import DatasetConfig
from bench.data.datasets import load_dataset
from bench.data.images import (
    ImageData,
    Split,
    model_batch,
    on_device,
    to_model_range,
    to_unit_range,
)
from bench.metrics import domain, fidelity, modes
from bench.metrics.interpolation import interpolation_metrics, real_scale
from bench.metrics.settings import EvaluationConfig

# Offsets keep the evaluation's random streams apart from training's (which uses the seed as is).
SAMPLES_SEED_OFFSET = 1_000_003
INTERP_SEED_OFFSET = 2_000_003
CALIBRATION_SEED_OFFSET = 3_000_003
# torch-fidelity's default; fidelity.kid_subset lowers it to half the smaller side
KID_SUBSET_SIZE = 1000


@dataclass
class Evaluator:
    data: ImageData
    config: EvaluationConfig
    device: torch.device
    eval_images: torch.Tensor  # uint8, on the device (converted per batch)
    classifier: torch.nn.Module
    classifier_path: Path
    classifier_accuracy: float
    inception_weights: Path | None
    inception_skip_reason: str | None
    cache_dir: Path

    @property
    def spaces(self) -> list[str]:
        spaces = [s for s in self.config.feature_extractors if s == "domain"]
        if "inception" in self.config.feature_extractors and self.inception_weights is not None:
            spaces.append("inception")
        return spaces

    def real_cache_name(self, space: str) -> str:
        """Identifies the real statistics: dataset, split, exact images, extractor."""
        extractor = self.classifier_path.stem if space == "domain" else "inception-v3-compat"
        tag = self.data.cache_tag
        return f"{tag}-{len(self.data.eval.images)}-{self.data.eval.digest}-{extractor}"

    @property
    def has_classes(self) -> bool:
        """Whether the domain network predicts classes (mode coverage needs them)."""
        return self.classifier.task == domain.CLASSES

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Domain-classifier features of model-range images, in batches."""
        batch = self.config.batch_size
        return torch.cat(
            [
                self.classifier.features(to_unit_range(images[i : i + batch].to(self.device)))
                for i in range(0, len(images), batch)
            ]
        )

    @cached_property
    def real_domain_logits(self) -> torch.Tensor:
        """The domain classifier's logits of the evaluation images: its head on the cached
        features (dropout is off in eval mode). Mode coverage compares the samples' predicted
        classes with these, the same labeller on both sides (the ground-truth labels would
        charge the classifier's own errors to every model)."""
        self.classifier.eval()
        with torch.no_grad():
            return self.classifier.head(self.real_domain_features.to(self.device)).cpu()

    @cached_property
    def modes_reference(self) -> modes.RealReference:
        """The evaluation images calibrated for mode coverage (bench/metrics/modes.py): the
        thresholds ~95% of them pass, and their own recognised classes."""
        return modes.real_reference(self.real_domain_logits, self.real_domain_features)

    @cached_property
    def real_scale(self) -> float:
        """The median domain-feature distance between random pairs of evaluation images: the
        yardstick of interpolation reach (bench/metrics/interpolation.py)."""
        return real_scale(self.real_domain_features)

    @cached_property
    def real_domain_features(self) -> torch.Tensor:
        """Domain features of the evaluation images: read from the disk cache (extracted and
        written there the first time), then kept here for the suite's later cells."""
        return fidelity.real_domain_features(
            self.data.eval.images,
            self.classifier,
            self.classifier_path,
            self.real_cache_name("domain"),
            self.config.batch_size,
            self.device,
            self.cache_dir,
        )


def prepare(
    data: ImageData,
    dataset: DatasetConfig,
    config: EvaluationConfig,
    device: torch.device,
    cli_root: str | None = None,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> Evaluator:
    """Train or load the domain classifier and locate the Inception weights, once per suite.

    The classifier is trained on the suite's whole training split (its train_split, without
    train_limit and without a search's validation hold-out) and measured on its whole eval_split,
    so that it is the same for every suite on that dataset and those splits; on unlabelled data
    it learns the rotation task (bench/metrics/domain.py)."""
    cache_dir = cache_dir or default_cache_dir()
    full = data
    limited = dataset.train_limit is not None or dataset.eval_limit is not None
    if limited or data.validation is not None:
        full = load_dataset(
            dataset.name,
            dataset.root,
            cli_root,
            dataset.train_split,
            dataset.eval_split,
            cache_dir=cache_dir,
            **dataset.load_options(),
        )
    classifier, accuracy = domain.load_or_train(
        full.cache_tag,
        full.fingerprint,
        full.train,
        full.eval,
        full.image_shape,
        full.num_classes,
        device,
        cache_dir=cache_dir,
        log=log,
    )
    classifier_path = domain.cache_path(
        full.cache_tag, full.fingerprint, cache_dir, domain.task_for(full.num_classes)
    )
    inception_weights, skip_reason = None, None
    if "inception" in config.feature_extractors:
        inception_weights = fidelity.inception_weights_path(config.inception_weights)
        if inception_weights is None:
            skip_reason = fidelity.inception_skip_reason()
            log(skip_reason)
    return Evaluator(
        data=data,
        config=config,
        device=device,
        eval_images=on_device(data.eval.images, device, "evaluation set"),
        classifier=classifier,
        classifier_path=classifier_path,
        classifier_accuracy=accuracy,
        inception_weights=inception_weights,
        inception_skip_reason=skip_reason,
        cache_dir=cache_dir,
    )


def scoring_on(evaluator: Evaluator, split: Split) -> Evaluator:
    """The same evaluator (classifier, settings, training pool) scoring against `split`
    instead of the evaluation split: a search's validation images. Its real features and scale
    are those of `split`, cached under its own digest."""
    data = dataclasses.replace(evaluator.data, eval=split)
    images = on_device(split.images, evaluator.device, "validation set")
    return dataclasses.replace(evaluator, data=data, eval_images=images)


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
def recon_mse(model, images: torch.Tensor, batch_size: int) -> float:
    """Mean squared error per pixel on the [0, 1] scale between images (uint8, or float in the
    model range) and their reconstructions decode(encode(x)) from the encoder mean, over all of
    `images`."""
    total, count = 0.0, 0
    for i in range(0, len(images), batch_size):
        x = model_batch(images[i : i + batch_size], images.device)
        x_hat = model.decode(model.encode(x))
        total += (to_unit_range(x_hat) - to_unit_range(x)).double().pow(2).sum().item()
        count += x.numel()
    return total / count


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
    if model.has_encoder:
        with decoder_statistics(model, evaluator, seed, "encoded"):
            metrics[keys.RECON_MSE] = recon_mse(model, evaluator.eval_images, config.batch_size)
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
