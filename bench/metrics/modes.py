"""Mode coverage with confidence: which classes the samples reach, as the domain classifier sees
them, counting only the predictions it is sure of.

An argmax assigns every image to some class, garbage included, so uniform noise could "cover" a
class without resembling it. Here a prediction counts only when the classifier is confident and
the image lies where real images do, by two thresholds calibrated on the real evaluation images
(`calibrate`):

  - its top-class probability is at least the one that a share sqrt(REAL_PASS) of the real
    images reach;
  - its domain feature is no farther from the nearest real feature than the nearest other real
    feature is for that same share of the real images.

Together about REAL_PASS (95%) of the real images pass. The probability alone is not enough: a
classifier trained on clothes puts uniform noise into "bag" with more confidence than it has for
many real shirts (on Fashion-MNIST 3 epochs, ~80% of noise images clear the 95% probability
threshold; their features are nowhere near a real image's). Everything that fails either test is
"unrecognised", a bin of its own for both the samples and the real images (about 5% of them by
construction), so that the histograms compared are distributions over the same K + 1 bins.

    modes_covered  classes whose share among the samples is at least half their real share
    class_kl       KL(p_real || p_gen) in nats over the K + 1 bins, p_gen smoothed by half a
                   count in each bin the real images occupy (Jeffreys prior), so that a missing
                   class gives a large but finite value and the real histogram itself gives 0
    unrecognised   the samples' share in the unrecognised bin
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench import keys
from bench.metrics.density_coverage import knn_radii, nearest_distances

REAL_PASS = 0.95
UNRECOGNISED = -1  # the label of a prediction below the threshold


def top_probabilities(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability of the top class, the top class) of each row of logits."""
    return torch.softmax(logits.double(), dim=1).max(dim=1)


@dataclass(frozen=True)
class Thresholds:
    probability: float  # the least top-class probability that counts
    distance: float  # the farthest a feature may lie from its nearest real feature


def calibrate(
    real_logits: torch.Tensor, real_nearest: torch.Tensor, real_pass: float = REAL_PASS
) -> Thresholds:
    """Thresholds each passed by a share sqrt(real_pass) of the real images: real_logits their
    logits, real_nearest the distance from each real feature to its nearest OTHER real feature
    (leave-one-out, as a sample's distance to the real set is)."""
    share = real_pass**0.5
    probability, _ = top_probabilities(real_logits)
    return Thresholds(
        probability=torch.quantile(probability, 1.0 - share).item(),
        distance=torch.quantile(real_nearest.double(), share).item(),
    )


def recognised_labels(
    logits: torch.Tensor, nearest: torch.Tensor, thresholds: Thresholds
) -> torch.Tensor:
    """The predicted class of each row, or UNRECOGNISED where its probability is below the
    threshold or its feature lies farther than the distance threshold from every real one."""
    probability, label = top_probabilities(logits)
    passed = (probability >= thresholds.probability) & (nearest.double() <= thresholds.distance)
    return torch.where(passed, label, torch.full_like(label, UNRECOGNISED))


def _histogram(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts over the K classes and, last, the unrecognised bin."""
    binned = torch.where(labels == UNRECOGNISED, torch.full_like(labels, num_classes), labels)
    return torch.bincount(binned.cpu(), minlength=num_classes + 1).double()


def mode_coverage(
    generated_labels: torch.Tensor, real_labels: torch.Tensor, num_classes: int
) -> tuple[int, float, float]:
    """(modes_covered, class_kl, unrecognised) from the confident labels of generated samples
    and of real images (UNRECOGNISED allowed), both from the same classifier and threshold."""
    real_counts = _histogram(real_labels, num_classes)
    p_real = real_counts / real_counts.sum()
    counts = _histogram(generated_labels, num_classes)
    p_gen_raw = counts / counts.sum()
    classes = slice(0, num_classes)
    covered = int(((p_gen_raw[classes] >= 0.5 * p_real[classes]) & (p_real[classes] > 0)).sum())
    present = p_real > 0
    p_gen = (counts + 0.5) / (counts.sum() + 0.5 * int(present.sum()))
    kl = (p_real[present] * (p_real[present] / p_gen[present]).log()).sum().item()
    return covered, kl, p_gen_raw[num_classes].item()


@dataclass(frozen=True)
class RealReference:
    """The real evaluation images as mode coverage sees them: their features, the calibrated
    thresholds and their own recognised labels."""

    features: torch.Tensor
    thresholds: Thresholds
    labels: torch.Tensor


def real_reference(real_logits: torch.Tensor, real_features: torch.Tensor) -> RealReference:
    """Calibrate on the real images (leave-one-out nearest distances) and label them."""
    nearest = knn_radii(real_features.double(), k=1)  # to the nearest OTHER real feature
    thresholds = calibrate(real_logits, nearest)
    return RealReference(
        real_features, thresholds, recognised_labels(real_logits, nearest, thresholds)
    )


def mode_metrics(
    logits: torch.Tensor, features: torch.Tensor, real: RealReference, num_classes: int
) -> dict[str, float]:
    """modes_covered, class_kl, unrecognised and both thresholds of generated samples, under
    bench.keys names."""
    nearest = nearest_distances(features, real.features)
    labels = recognised_labels(logits, nearest, real.thresholds)
    covered, kl, unrecognised = mode_coverage(labels, real.labels, num_classes)
    return {
        keys.MODES_COVERED: covered,
        keys.CLASS_KL: kl,
        keys.UNRECOGNISED: unrecognised,
        keys.MODES_THRESHOLD: real.thresholds.probability,
        keys.MODES_DISTANCE: real.thresholds.distance,
    }
