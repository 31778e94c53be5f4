"""Out-of-distribution detection: does the model tell its own data from other data?

"VAEs suit anomaly detection" is a common claim; Nalisnick et al. (2019, "Do deep generative
models know what they don't know?") found a VAE trained on Fashion-MNIST giving MNIST digits a
*higher* likelihood than Fashion-MNIST's own test images. Here every model scores
`evaluation.ood_images` evaluation images (in-distribution) and as many images of each set in
`evaluation.ood` with every anomaly score it has (higher = more anomalous):

    elbo   the negative ELBO under the model's own likelihood (models with an encoder;
           GenerativeModel.negative_elbo)
    recon  the pixel reconstruction error, squared, per image (models with an encoder)
    disc   minus the discriminator's or critic's output (models with a discriminator on images:
           it scores real-looking images high)

and logs `ood_auroc_<score>_<set>`, scikit-learn's roc_auc_score with the out-of-distribution
images as the positive class: 1 separates them perfectly, 0.5 is chance, below 0.5 the model
prefers the outliers (Nalisnick et al.'s finding).

A set is a dataset the harness reads (its test split, preprocessed to the suite's image shape and
channels: for a Fashion-MNIST suite, `mnist` is Nalisnick et al.'s set-up), or a shift of the
evaluation images that needs no files: `noise` (uniform pixels), `invert` (255 - x), `vflip`.
A search's validation evaluation reads no test split: its shifts are of the validation images,
and its dataset sets come from those datasets' train splits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from sklearn.metrics import roc_auc_score

from bench import keys
from bench.data.images import model_batch
from bench.metrics.settings import OOD_SHIFTS

OOD_SEED = 0


def shifted(images: torch.Tensor, shift: str, seed: int = OOD_SEED) -> torch.Tensor:
    """A built-in shift of uint8 images (N, C, H, W)."""
    if shift == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8)
    if shift == "invert":
        return 255 - images
    if shift == "vflip":
        return images.flip(2)
    raise ValueError(f"unknown shift {shift!r}; expected one of {OOD_SHIFTS}")


def subset(images: torch.Tensor, n: int, seed: int = OOD_SEED) -> torch.Tensor:
    """A seeded random subset of at most n images."""
    if len(images) <= n:
        return images
    generator = torch.Generator().manual_seed(seed)
    return images[torch.randperm(len(images), generator=generator)[:n].sort().values]


def validation_sets(
    sets: dict[str, torch.Tensor],
    dataset_sets: dict[str, torch.Tensor],
    images: torch.Tensor,
    n: int,
) -> dict[str, torch.Tensor]:
    """The OOD sets of a search's validation evaluation, so that scoring a trial never reads a
    test split: each shift made of the validation images (`images`), as the evaluation's are made
    of the evaluation images, and each dataset set from `dataset_sets` (that dataset's train
    split) in place of its test split."""
    return {
        name: shifted(subset(images, n), name) if name in OOD_SHIFTS else dataset_sets[name]
        for name in sets
    }


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """AUROC of anomaly scores, out-of-distribution as the positive class."""
    labels = [0] * len(in_scores) + [1] * len(out_scores)
    scores = torch.cat([in_scores, out_scores]).double().cpu().numpy()
    return float(roc_auc_score(labels, scores))


def score_functions(model) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The anomaly scores this model has: model-range batches in, (N,) scores out."""
    functions = {}
    if model.has_encoder:
        functions["elbo"] = model.negative_elbo

        def recon(x: torch.Tensor) -> torch.Tensor:
            return (model.decode(model.encode(x)) - x.to(model.device)).pow(2).flatten(1).sum(1)

        functions["recon"] = recon
    if model.has_discriminator and model.discriminator_on_images:

        @torch.no_grad()
        def disc(x: torch.Tensor) -> torch.Tensor:
            was_training = model.training
            model.eval()
            try:
                return -model.discriminator(x.to(model.device)).flatten()
            finally:
                model.train(was_training)

        functions["disc"] = disc
    return functions


def anomaly_scores(score, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """One score over uint8 images, in batches."""
    return torch.cat(
        [
            score(model_batch(images[i : i + batch_size], images.device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def ood_metrics(
    model, in_images: torch.Tensor, sets: dict[str, torch.Tensor], batch_size: int
) -> dict[str, float]:
    """ood_auroc_<score>_<set> of every score the model has against every set (uint8 images,
    already cut to evaluation.ood_images)."""
    metrics = {}
    for name, score in score_functions(model).items():
        inside = anomaly_scores(score, in_images, batch_size)
        for ood_set, images in sets.items():
            outside = anomaly_scores(score, images, batch_size)
            metrics[keys.ood_key(name, ood_set)] = auroc(inside, outside)
    return metrics
