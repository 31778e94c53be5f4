"""Interpolation smoothness: how evenly and how directly a model's images change along a path in
latent space, measured so that a degenerate model cannot win.

Definition (also in README.md). For each of P pairs of latents (z_a, z_b):

    z_t  = interp(z_a, z_b, t / T)           t = 0..T   (T + 1 evenly spaced points)
    x_t  = decode(z_t)                       images
    s_t  = ||phi(x_t) - phi(x_{t-1})||       t = 1..T, phi = the domain classifier's features
    D    = ||phi(x_T) - phi(x_0)||           the endpoints' distance

    R    = median ||phi(x) - phi(x')|| over random pairs of real evaluation images (the real
           data's scale, `real_scale`)

    interp_reach       = mean over pairs of  D / R
    interp_degenerate  = share of pairs whose endpoints are closer than REACH_FLOOR * R
    interp_energy      = mean over the other pairs of  T * sum_t s_t^2 / D^2
    interp_evenness    = mean over the other pairs of  max_t s_t / sum_t s_t

interp_energy is a perceptual path length (Karras et al. 2019, a finite step 1/T: T^2 * mean_t
s_t^2) divided by the squared endpoint distance, so it has no unit. By Cauchy-Schwarz it is at
least (sum_t s_t / D)^2 >= 1, with equality exactly when the features move along the straight
segment between the endpoints at constant speed: 1 is the ideal; a path that jumps in one step
scores T, one that wanders off and comes back scores more. interp_evenness is 1/T for an even
path and 1 for a jump.

Energy and evenness have no unit, so on their own they reward near-collapse: a near-constant
generator x0 + eps W z is affine in z and scores the ideal 1 at any eps. The endpoints' distance
is therefore measured against the real data's scale R. Pairs whose endpoints lie closer than
REACH_FLOOR (10%) of R carry no path worth measuring (a constant or collapsed generator makes every
pair such): they are left out of energy and evenness and counted in interp_degenerate, and when no
pair is left both numbers are absent. interp_reach says how far the paths go at all: about 1 for a
generator whose images differ as much as real images do, 0 for a constant one.

Pairs come from the prior (z ~ N(0, I), interpolated spherically, `slerp`) for every model, and,
for models with an encoder, from the encoder means of random evaluation images (interpolated
linearly, `lerp`, since posterior means are not on the prior's shell).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rows a + t (b - a); a, b (P, D), t (S,) -> (P, S, D)."""
    t = t.view(1, -1, 1)
    return a.unsqueeze(1) + t * (b - a).unsqueeze(1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the great circle between a and b (Shoemake 1985), with the
    norm interpolated linearly; falls back to lerp for (nearly) parallel vectors."""
    a_norm, b_norm = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    cos = ((a / a_norm) * (b / b_norm)).sum(1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(cos).unsqueeze(1)  # (P, 1, 1)
    sin = torch.sin(omega)
    t = t.view(1, -1, 1)
    parallel = sin.abs() < 1e-6
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe_sin)
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe_sin)
    return wa * a.unsqueeze(1) + wb * b.unsqueeze(1)


INTERPOLATIONS = {"lerp": lerp, "slerp": slerp}


# endpoints closer than this fraction of the real scale (the median distance between random real
# images) make a degenerate pair
REACH_FLOOR = 0.1
REAL_SCALE_PAIRS = 5000
REAL_SCALE_SEED = 0


@dataclass(frozen=True)
class InterpolationResult:
    energy: float | None  # None: every pair was degenerate
    evenness: float | None
    degenerate: float  # share of pairs left out
    reach: float  # mean endpoint distance over the real scale
    frames: torch.Tensor  # (P, T + 1, C, H, W), the decoded paths, for the strip image


def real_scale(features: torch.Tensor) -> float:
    """R: the median distance between the features of random pairs of distinct real images
    (seeded: the same images give the same scale); features (N, F), N >= 2."""
    if len(features) < 2:
        raise ValueError("the real scale needs two real images at least")
    generator = torch.Generator().manual_seed(REAL_SCALE_SEED)
    n = len(features)
    count = min(REAL_SCALE_PAIRS, n * (n - 1) // 2)
    first = torch.randint(n, (count,), generator=generator)
    # a nonzero offset modulo n: the second image of each pair is never the first
    second = (first + torch.randint(1, n, (count,), generator=generator)) % n
    distances = (features[first].double() - features[second].double()).norm(dim=1)
    return distances.median().item()


def path_scores(
    features: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(energy, evenness, reach, kept) per pair from path features (P, T + 1, F) and the real
    scale R; `kept` is False for pairs whose endpoints lie closer than REACH_FLOOR * R (their
    energy and evenness are meaningless, set to NaN)."""
    if not scale > 0:
        raise ValueError(f"the real scale must be positive, got {scale}")
    features = features.double()
    steps = features.shape[1] - 1
    lengths = (features[:, 1:] - features[:, :-1]).norm(dim=-1)  # s_t, (P, T)
    chord = (features[:, -1] - features[:, 0]).norm(dim=-1)  # D, (P,)
    kept = chord >= REACH_FLOOR * scale
    safe_chord = torch.where(kept, chord, torch.ones_like(chord))
    energy = steps * lengths.pow(2).sum(1) / safe_chord.pow(2)
    evenness = lengths.max(1).values / lengths.sum(1).clamp_min(1e-300)
    nan = torch.full_like(energy, float("nan"))
    return torch.where(kept, energy, nan), torch.where(kept, evenness, nan), chord / scale, kept


@torch.no_grad()
def interpolation_metrics(
    decode: Callable[[torch.Tensor], torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor],
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    steps: int,
    scale: float,
    method: str = "slerp",
) -> InterpolationResult:
    """Interpolation metrics of P latent pairs (see the module docstring), `scale` the real
    scale R (real_scale of the real evaluation images' features).

    decode: (N, D) latents -> (N, C, H, W) images; embed: images -> (N, F) features."""
    if steps < 1:
        raise ValueError("interpolation needs at least one step")
    pairs, dim = z_a.shape
    t = torch.linspace(0.0, 1.0, steps + 1, device=z_a.device)
    path = INTERPOLATIONS[method](z_a, z_b, t)  # (P, T + 1, D)
    frames = decode(path.reshape(-1, dim))
    features = embed(frames).reshape(pairs, steps + 1, -1)
    energy, evenness, reach, kept = path_scores(features, scale)
    any_kept = bool(kept.any())
    return InterpolationResult(
        energy=energy[kept].mean().item() if any_kept else None,
        evenness=evenness[kept].mean().item() if any_kept else None,
        degenerate=1.0 - kept.double().mean().item(),
        reach=reach.mean().item(),
        frames=frames.reshape(pairs, steps + 1, *frames.shape[1:]),
    )
