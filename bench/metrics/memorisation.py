"""Memorisation: Meehan et al.'s (2020, "A Non-Parametric Test to Detect Data-Copying in
Generative Models") data-copying statistic C_T, in the domain feature space.

FID against held-out images cannot tell a model that copies its training images from a perfect
one: both match the held-out distribution. C_T asks whether generated samples lie closer to the
training set than held-out images do. The feature space is cut into cells by k-means on the
training features; in each cell pi, with L(x) the distance from x to its nearest training feature,
the Mann-Whitney U statistic compares L over the generated samples Q_pi (m of them) with L over
the held-out images P_pi (n of them), as a z-score

    Z_pi = (U - m n / 2) / sqrt(m n (m + n + 1) / 12),   U = #{(q, p) : L(q) > L(p)} (+ ties / 2)

(scipy's mannwhitneyu gives U), and C_T is their average weighted by each cell's share of the
held-out images, over the cells holding at least MIN_CELL_SAMPLES generated samples:

    C_T << 0   samples closer to the training set than held-out data is: copying
    C_T ~ 0    as close as unseen data from the same distribution
    C_T >> 0   farther: underfitting

Also returned: the nearest training image of each sample (for the report's gallery).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans

CELLS = 20  # k-means cells (Meehan et al. used 20 to 50 for MNIST-sized data)
MIN_CELL_SAMPLES = 5  # a cell with fewer generated (or held-out) samples is left out
KMEANS_SEED = 0


@dataclass(frozen=True)
class Memorisation:
    c_t: float | None  # None: no cell held enough samples on both sides
    nearest: torch.Tensor  # (M,) index of each sample's nearest training feature
    distance: torch.Tensor  # (M,) its distance


def nearest_training(
    queries: torch.Tensor, train: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each query row's nearest training row, in float64, in blocks of
    query rows small enough that a block's distances stay under ~128 MB."""
    queries, train = queries.double().cpu(), train.double().cpu()
    block = max(1, (1 << 24) // max(1, len(train)))
    distances, indices = [], []
    for start in range(0, len(queries), block):
        found = torch.cdist(queries[start : start + block], train).min(dim=1)
        distances.append(found.values)
        indices.append(found.indices)
    return torch.cat(distances), torch.cat(indices)


def z_score(generated: np.ndarray, held_out: np.ndarray) -> float:
    """The Mann-Whitney z of generated against held-out distances (negative: generated closer)."""
    m, n = len(generated), len(held_out)
    u = mannwhitneyu(generated, held_out, alternative="two-sided").statistic
    return float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


@dataclass
class CopyingReference:
    """What C_T needs of the real side, computed once per suite: the training features, their
    k-means cells, and the held-out images' distances to the training set and cells."""

    train: torch.Tensor
    kmeans: KMeans
    held_distance: np.ndarray
    held_cell: np.ndarray


def copying_reference(
    held_out: torch.Tensor, train: torch.Tensor, cells: int = CELLS
) -> CopyingReference:
    cells = max(1, min(cells, len(train) // 10))
    train64 = train.double().cpu()
    kmeans = KMeans(n_clusters=cells, n_init=1, random_state=KMEANS_SEED).fit(train64.numpy())
    held_distance, _ = nearest_training(held_out, train64)
    held_cell = kmeans.predict(held_out.double().cpu().numpy())
    return CopyingReference(train64, kmeans, held_distance.numpy(), held_cell)


def data_copying(
    generated: torch.Tensor,
    held_out: torch.Tensor | None = None,
    train: torch.Tensor | None = None,
    reference: CopyingReference | None = None,
) -> Memorisation:
    """C_T of generated features against held-out features, both relative to the training
    features (all (N, D)); `reference` (copying_reference) in place of held_out and train."""
    if reference is None:
        reference = copying_reference(held_out, train)
    gen_distance, gen_nearest = nearest_training(generated, reference.train)
    gen_cell = reference.kmeans.predict(generated.double().cpu().numpy())
    total, weights = 0.0, 0.0
    for cell in range(reference.kmeans.n_clusters):
        q = gen_distance.numpy()[gen_cell == cell]
        p = reference.held_distance[reference.held_cell == cell]
        if len(q) < MIN_CELL_SAMPLES or len(p) < MIN_CELL_SAMPLES:
            continue
        weight = len(p) / len(reference.held_cell)
        total += weight * z_score(q, p)
        weights += weight
    c_t = total / weights if weights > 0 else None
    return Memorisation(c_t, gen_nearest, gen_distance)
