"""Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models"), k = 5, the companions of improved precision and recall that a degenerate
generator cannot game.

With r_i the distance from real feature x_i to its k-th nearest other real feature, d_ij the
distance from x_i to generated feature y_j, N real and M generated items:

    density  = 1 / (k M) * sum_j #{i : d_ij < r_i}      how many real neighbourhoods hold each
                                                          sample, on average (1 for a good one)
    coverage = 1 / N * #{i : min_j d_ij < r_i}           share of real neighbourhoods holding at
                                                          least one sample

Precision counts a sample inside ANY real k-NN ball, so a few wide outliers near the real data
earn it whole; recall builds balls around the samples, so wide noise covers everything. Coverage
builds its balls around the real items only, so neither a constant image (one ball at most) nor
wide noise (samples in no ball) scores well. Density rewards samples packed into dense real
regions and is unbounded above: it stays descriptive.

The numbers are those of the reference implementation (the `prdc` package, tested against it on
fixed arrays in tests/test_density_coverage.py), computed here in blocks with torch so that 10k x
10k distances never sit in memory at once.
"""

from __future__ import annotations

import torch

NEAREST_K = 5
BLOCK = 1024


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # exact Euclidean distances (no |a|^2 + |b|^2 - 2ab shortcut, whose rounding moves ties)
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(features: torch.Tensor, k: int = NEAREST_K) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (its own zero distance excluded)."""
    if len(features) <= k:
        raise ValueError(f"{len(features)} items: the k-NN radii need more than k = {k}")
    radii = []
    for start in range(0, len(features), BLOCK):
        block = _distances(features[start : start + BLOCK], features)
        # the k + 1 smallest include the item itself (distance 0)
        radii.append(block.topk(k + 1, dim=1, largest=False).values[:, -1])
    return torch.cat(radii)


def nearest_distances(queries: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Distance from each query row to its nearest reference row, in float64 (blocks)."""
    queries, reference = queries.double().cpu(), reference.double().cpu()
    return torch.cat(
        [
            _distances(queries[start : start + BLOCK], reference).min(1).values
            for start in range(0, len(queries), BLOCK)
        ]
    )


def density_coverage(
    real: torch.Tensor, fake: torch.Tensor, k: int = NEAREST_K
) -> dict[str, float]:
    """{"density", "coverage"} of generated features `fake` (M, D) against real features `real`
    (N, D), both on the CPU; computed in float64."""
    real, fake = real.double().cpu(), fake.double().cpu()
    radii = knn_radii(real, k)
    inside = torch.zeros(len(fake), dtype=torch.float64)  # real balls holding each sample
    covered = torch.zeros(len(real), dtype=torch.bool)
    for start in range(0, len(real), BLOCK):
        block = _distances(real[start : start + BLOCK], fake)  # (B, M)
        within = block < radii[start : start + BLOCK, None]
        inside += within.sum(0).double()
        covered[start : start + BLOCK] = within.any(1)
    return {
        "density": float(inside.sum() / (k * len(fake))),
        "coverage": float(covered.double().mean()),
    }
