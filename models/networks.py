"""The shared DCGAN-style networks every variant is built from.

One encoder, one decoder/generator and one discriminator/critic per image shape, so that a VAE, a
GAN and a VAE-GAN differ only in their losses, never in their capacity. Two image shapes are
supported: 28x28 (MNIST, Fashion-MNIST) and 32x32 (CIFAR-10), with any number of channels.

Spatial path (both sizes end in a 4x4 map with 4*width channels):
    28: 28 -> 14 -> 7 -> 4      (the last down-conv has kernel 3, the first up-conv kernel 3)
    32: 32 -> 16 -> 8 -> 4      (all kernels 4)

Images are in [-1, 1] (the decoder ends in tanh); see models/__init__.py.
"""

from __future__ import annotations

import torch
from torch import nn

SUPPORTED_SIZES = (28, 32)


def _check_shape(image_shape: tuple[int, int, int]) -> tuple[int, int]:
    channels, height, width = image_shape
    if height != width or height not in SUPPORTED_SIZES:
        raise ValueError(
            f"image shape {tuple(image_shape)} is not supported: the shared networks take square "
            f"images of size {' or '.join(map(str, SUPPORTED_SIZES))}"
        )
    return channels, height


def _last_kernel(size: int) -> int:
    # 7 -> 4 (down) and 4 -> 7 (up) need kernel 3 with stride 2, padding 1; 8 <-> 4 needs kernel 4.
    return 3 if size == 28 else 4


def _conv_trunk(channels: int, size: int, width: int, norm: bool) -> nn.ModuleList:
    """Three stride-2 conv blocks: channels -> w -> 2w -> 4w, ending at 4x4."""

    def block(c_in: int, c_out: int, kernel: int, use_norm: bool) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, 2, 1, bias=not use_norm)]
        if use_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        return nn.Sequential(*layers)

    return nn.ModuleList(
        [
            block(channels, width, 4, False),  # no norm on the first layer (DCGAN)
            block(width, 2 * width, 4, norm),
            block(2 * width, 4 * width, _last_kernel(size), norm),
        ]
    )


class Encoder(nn.Module):
    """q(z|x): a conv trunk, then a linear layer giving the Gaussian's mean and log-variance."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 64):
        super().__init__()
        channels, size = _check_shape(image_shape)
        self.trunk = nn.Sequential(*_conv_trunk(channels, size, width, norm=True))
        self.head = nn.Linear(4 * width * 4 * 4, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.trunk(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """p(x|z), also the GAN generator: linear to 4x4, then three stride-2 transposed convs, tanh."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 64):
        super().__init__()
        channels, size = _check_shape(image_shape)
        self.width = width
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 4 * width * 4 * 4, bias=False),
            nn.BatchNorm1d(4 * width * 4 * 4),
            nn.ReLU(inplace=True),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, _last_kernel(size), 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(-1, 4 * self.width, 4, 4))


class Discriminator(nn.Module):
    """D(x) as a logit (BCE) or a critic value (WGAN-GP), with access to its intermediate layers.

    `features(x, layer)` returns the activation after conv block `layer` (1, 2 or 3): the Dis_l of
    Larsen et al. A WGAN-GP critic is built with `batch_norm=False` (the gradient penalty is
    per-sample, which batch norm would break; Gulrajani et al. 2017, section 4).
    """

    num_layers = 3

    def __init__(self, image_shape: tuple[int, int, int], width: int = 64, batch_norm: bool = True):
        super().__init__()
        channels, size = _check_shape(image_shape)
        self.blocks = _conv_trunk(channels, size, width, norm=batch_norm)
        self.head = nn.Linear(4 * width * 4 * 4, 1)

    def features(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"discriminator layer must be 1..{self.num_layers}, got {layer}")
        for block in self.blocks[:layer]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x, self.num_layers).flatten(1)).squeeze(1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) for conv/linear weights, N(1, 0.02) for norm scales."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
