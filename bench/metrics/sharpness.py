"""Sharpness: the high-frequency energy of images against that of the real images they should
look like, so that "VAE samples are blurrier" is a number.

The energy of an image is the variance of its Laplacian (the 3x3 kernel [[0, 1, 0], [1, -4, 1],
[0, 1, 0]] over each channel, valid positions only, on the [0, 1] scale; channels averaged), a
standard focus measure (Pech-Pacheco et al. 2000). Blur removes high frequencies and lowers it;
noise adds them and raises it.

    sharpness_samples = mean energy of the generated samples / mean energy of the real
                        evaluation images
    sharpness_recon   = mean energy of the reconstructions / mean energy of their inputs

1 is as sharp as the data, the ideal: below 1 is blurrier, above 1 has more high-frequency energy
than the data (noise, artefacts). The direction is therefore "closest to 1" (the metric table's
`target`), so a noise generator, "sharper" than anything, cannot win it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_energy(images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per image, the variance of its Laplacian: images (N, C, H, W), uint8 or float in [0, 1]."""
    energies = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        x = batch.double() / 255.0 if batch.dtype == torch.uint8 else batch.double()
        channels = x.shape[1]
        kernel = LAPLACIAN.to(x).view(1, 1, 3, 3).expand(channels, 1, 3, 3)
        response = F.conv2d(x, kernel, groups=channels)  # (N, C, H - 2, W - 2)
        energies.append(response.flatten(2).var(dim=2).mean(dim=1).cpu())
    return torch.cat(energies)


def sharpness_ratio(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean Laplacian energy of `images` over that of `reference` (both as laplacian_energy
    takes them)."""
    reference_energy = laplacian_energy(reference).mean().item()
    if reference_energy <= 0:
        raise ValueError("the reference images have no high-frequency energy (constant images)")
    return laplacian_energy(images).mean().item() / reference_energy
