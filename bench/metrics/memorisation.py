"""Memorisation: Meehan et al.'s (2020, "A Non-Parametric Test to Detect Data-Copying in
Generative Models") data-copying statistic C_T, in the domain feature space.

FID against held-out images cannot tell a model that copies its training images from a perfect
one: both match the held-out distribution. C_T asks whether generated samples lie closer to the
training set than held-out images do. The feature space is cut into cells by k-means on the
training features; in each cell pi, with L_pi(x) the distance from x to its nearest training
feature *in the same cell* (as in the authors' reference code, casey-meehan/data-copying), the
Mann-Whitney U statistic compares L_pi over the generated samples Q_pi (m of them) with L_pi over
the held-out images P_pi (n of them), as a z-score with the reference's continuity correction

    Z_pi = (U - m n / 2 + 1/2) / sqrt(m n (m + n + 1) / 12),
    U = #{(q, p) : L_pi(q) > L_pi(p)} (+ ties / 2)

(scipy's mannwhitneyu gives U), and C_T is their average weighted by each cell's share of the
held-out images, over the cells holding at least MIN_CELL_SAMPLES generated (and held-out)
samples; the reference's threshold tau is a share of the generated samples instead:

    C_T << 0   samples closer to the training set than held-out data is: copying
    C_T ~ 0    as close as unseen data from the same distribution
    C_T >> 0   farther: underfitting

Also returned: the nearest training image of each sample over the whole training set (for the
report's gallery).
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
    nearest: torch.Tensor  # (M,) index of each sample's nearest training feature (any cell)
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
    """The Mann-Whitney z of generated against held-out distances (negative: generated closer),
    with the continuity correction of Meehan et al.'s reference code."""
    m, n = len(generated), len(held_out)
    u = mannwhitneyu(generated, held_out, alternative="two-sided").statistic
    return float((u - (m * n / 2 - 0.5)) / np.sqrt(m * n * (m + n + 1) / 12))


def in_cell_distance(
    queries: torch.Tensor, query_cell: np.ndarray, train: torch.Tensor, train_cell: np.ndarray
) -> np.ndarray:
    """L_pi: each query row's distance to its nearest training row of the same k-means cell (inf
    in a cell k-means left without training rows, as it can when the training set has fewer
    distinct rows than cells; data_copying leaves such cells out)."""
    distance = np.full(len(queries), np.inf)
    for cell in np.unique(query_cell):
        rows = query_cell == cell
        members = torch.from_numpy(train_cell == cell)
        if not members.any():
            continue
        found, _ = nearest_training(queries[torch.from_numpy(rows)], train[members])
        distance[rows] = found.numpy()
    return distance


@dataclass
class CopyingReference:
    """What C_T needs of the real side, computed once per suite: the training features, their
    k-means cells, and the held-out images' cells and in-cell distances to the training set."""

    train: torch.Tensor
    kmeans: KMeans
    train_cell: np.ndarray
    held_distance: np.ndarray
    held_cell: np.ndarray


def copying_reference(
    held_out: torch.Tensor, train: torch.Tensor, cells: int = CELLS
) -> CopyingReference:
    cells = max(1, min(cells, len(train) // 10))
    train64 = train.double().cpu()
    kmeans = KMeans(n_clusters=cells, n_init=1, random_state=KMEANS_SEED).fit(train64.numpy())
    train_cell = kmeans.labels_
    held_cell = kmeans.predict(held_out.double().cpu().numpy())
    held_distance = in_cell_distance(held_out.double().cpu(), held_cell, train64, train_cell)
    return CopyingReference(train64, kmeans, train_cell, held_distance, held_cell)


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
    generated = generated.double().cpu()
    gen_distance, gen_nearest = nearest_training(generated, reference.train)
    gen_cell = reference.kmeans.predict(generated.numpy())
    in_cell = in_cell_distance(generated, gen_cell, reference.train, reference.train_cell)
    total, weights = 0.0, 0.0
    for cell in range(reference.kmeans.n_clusters):
        q = in_cell[gen_cell == cell]
        p = reference.held_distance[reference.held_cell == cell]
        if len(q) < MIN_CELL_SAMPLES or len(p) < MIN_CELL_SAMPLES or not np.isfinite(p).all():
            continue
        weight = len(p) / len(reference.held_cell)
        total += weight * z_score(q, p)
        weights += weight
    c_t = total / weights if weights > 0 else None
    return Memorisation(c_t, gen_nearest, gen_distance)
