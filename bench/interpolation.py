"""Interpolation smoothness: how evenly a model's images change along a path in latent space.

Definition (also in README.md). For each of P pairs of latents (z_a, z_b):

    z_t  = interp(z_a, z_b, t / T)           t = 0..T   (T + 1 evenly spaced points)
    x_t  = decode(z_t)                       images
    d_t  = ||phi(x_t) - phi(x_{t-1})||^2     t = 1..T, phi = the domain classifier's features

    interp_ppl       = mean over pairs and t of d_t * T^2
    interp_evenness  = mean over pairs of  max_t sqrt(d_t) / sum_t sqrt(d_t)

interp_ppl is a perceptual-path-length style number (Karras et al. 2019, with a finite step
1/T instead of an epsilon): lower is smoother, and for a path whose features move at constant
speed it equals the squared feature length of the path. interp_evenness is 1/T for a perfectly
even path and 1 when the whole change happens in one step (a jump between modes).

Pairs come from the prior (z ~ N(0, I), interpolated spherically, `slerp`) for every model, and,
for models with an encoder, from the encoder means of random evaluation images (interpolated
linearly, `lerp`, since posterior means are not on the prior's shell).
"""

from __future__ import annotations

from collections.abc import Callable

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


@torch.no_grad()
def interpolation_metrics(
    decode: Callable[[torch.Tensor], torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor],
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    steps: int,
    method: str = "slerp",
) -> tuple[float, float, torch.Tensor]:
    """(interp_ppl, interp_evenness, frames) for P latent pairs (see the module docstring).

    decode: (N, D) latents -> (N, C, H, W) images; embed: images -> (N, F) features.
    frames: (P, T + 1, C, H, W), the decoded paths, for the strip image.
    """
    if steps < 1:
        raise ValueError("interpolation needs at least one step")
    pairs, dim = z_a.shape
    t = torch.linspace(0.0, 1.0, steps + 1, device=z_a.device)
    path = INTERPOLATIONS[method](z_a, z_b, t)  # (P, T + 1, D)
    frames = decode(path.reshape(-1, dim))
    features = embed(frames).reshape(pairs, steps + 1, -1).double()
    d = (features[:, 1:] - features[:, :-1]).pow(2).sum(-1)  # (P, T)
    ppl = (d * steps**2).mean().item()
    lengths = d.sqrt()
    totals = lengths.sum(1)
    # a constant path (no change at all) is perfectly even by convention
    evenness = torch.where(totals > 0, lengths.max(1).values / totals.clamp_min(1e-30), 1 / steps)
    return ppl, evenness.mean().item(), frames.reshape(pairs, steps + 1, *frames.shape[1:])
