"""The shared DCGAN-style networks every variant is built from.

One encoder, one decoder/generator and one discriminator/critic per image shape, so that a VAE, a
GAN and a VAE-GAN differ only in their losses, never in their capacity. Square images of 28, 32,
64 or 128 pixels are supported (MNIST and Fashion-MNIST at 28, CIFAR-10 at 32, CelebA and image
folders at 64 or 128), with any number of channels.

Depth: stride-2 conv blocks halve the image until it is 4x4, so one block more per doubling:
    28: 28 -> 14 -> 7 -> 4                  3 blocks (the odd 7 -> 4 step has kernel 3)
    32: 32 -> 16 -> 8 -> 4                  3 blocks
    64: 64 -> 32 -> 16 -> 8 -> 4            4 blocks
   128: 128 -> 64 -> 32 -> 16 -> 8 -> 4     5 blocks
Every kernel is 4 (stride 2, padding 1), except 3 where the input side is odd (only 7 -> 4).

Channels: conv block i (1-based) has min(2^(i-1), 8) * width output channels: width, 2*width,
4*width, 8*width, 8*width, ... (DCGAN at 64x64: 64-128-256-512 with width 64; the cap at 8*width
keeps the 128x128 networks at about twice the 64x64 ones instead of eight times). 28 and 32 are
exactly the three-block networks of before (width, 2w, 4w), so their checkpoints stay valid.

The encoder and the discriminator run these blocks down (no batch norm on the first, DCGAN); the
decoder is their mirror image: a linear layer to the 4x4 map of the last block's channels, then
transposed convs back up through the same channels in reverse, ending in `channels` and tanh.
`discriminator_layers(image_shape, width)` lists each block's output shape (the Dis_l choices).

Images are in [-1, 1] (the decoder ends in tanh); see models/__init__.py.
"""

from __future__ import annotations

import torch
from torch import nn

SUPPORTED_SIZES = (28, 32, 64, 128)
MAX_CHANNEL_FACTOR = 8  # channels stop doubling at 8 * width
FINAL_SIZE = 4  # every trunk ends in a 4x4 map


def check_image_shape(image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(channels, size) of a supported image shape; ValueError (one line) otherwise."""
    channels, height, width = image_shape
    if height != width or height not in SUPPORTED_SIZES or channels < 1:
        raise ValueError(
            f"image shape {tuple(image_shape)} is not supported: the shared networks take square "
            f"images of size {', '.join(map(str, SUPPORTED_SIZES[:-1]))} or "
            f"{SUPPORTED_SIZES[-1]} with at least one channel"
        )
    return channels, height


def spatial_sizes(size: int) -> list[int]:
    """The side of the map after each stride-2 block: 28 -> [14, 7, 4], 64 -> [32, 16, 8, 4]."""
    check_image_shape((1, size, size))
    sides = []
    while size > FINAL_SIZE:
        size = (size + 1) // 2
        sides.append(size)
    return sides


def depth(size: int) -> int:
    """The number of stride-2 conv blocks at this image size (3 at 28 and 32, 4 at 64, 5 at 128):
    also the number of Dis_l layers, 1..depth."""
    return len(spatial_sizes(size))


def block_channels(size: int, width: int) -> list[int]:
    """Output channels of each conv block: width, 2w, 4w, 8w, 8w, ... (capped at 8 * width)."""
    return [min(2**i, MAX_CHANNEL_FACTOR) * width for i in range(depth(size))]


def discriminator_layers(
    image_shape: tuple[int, int, int], width: int = 64
) -> list[tuple[int, int, int]]:
    """(channels, height, width) of each conv block's output, for Dis_l with l = 1..depth: the
    encoder's and the discriminator's trunk alike. 28x28: [(w, 14, 14), (2w, 7, 7), (4w, 4, 4)]."""
    _, size = check_image_shape(image_shape)
    return [
        (c, side, side)
        for c, side in zip(block_channels(size, width), spatial_sizes(size), strict=True)
    ]


def _kernels(size: int) -> list[int]:
    """The kernel of each down block: 3 where its input side is odd (7 -> 4 needs kernel 3 with
    stride 2 and padding 1; so does the transposed 4 -> 7), 4 everywhere else."""
    inputs = [size, *spatial_sizes(size)[:-1]]
    return [3 if side % 2 else 4 for side in inputs]


def _conv_trunk(channels: int, size: int, width: int, norm: bool) -> nn.ModuleList:
    """depth(size) stride-2 conv blocks: channels -> w -> 2w -> 4w (-> 8w -> 8w), ending at 4x4."""

    def block(c_in: int, c_out: int, kernel: int, use_norm: bool) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, 2, 1, bias=not use_norm)]
        if use_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        return nn.Sequential(*layers)

    outs = block_channels(size, width)
    ins = [channels, *outs[:-1]]
    return nn.ModuleList(
        # no norm on the first layer (DCGAN)
        block(c_in, c_out, kernel, norm and i > 0)
        for i, (c_in, c_out, kernel) in enumerate(zip(ins, outs, _kernels(size), strict=True))
    )


class Encoder(nn.Module):
    """q(z|x): a conv trunk, then a linear layer giving the Gaussian's mean and log-variance."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 64):
        super().__init__()
        channels, size = check_image_shape(image_shape)
        self.trunk = nn.Sequential(*_conv_trunk(channels, size, width, norm=True))
        top = block_channels(size, width)[-1]
        self.head = nn.Linear(top * FINAL_SIZE * FINAL_SIZE, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.trunk(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """p(x|z), also the GAN generator: linear to 4x4, then depth(size) stride-2 transposed convs
    (the encoder's blocks in reverse), tanh."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 64):
        super().__init__()
        channels, size = check_image_shape(image_shape)
        self.width = width
        widths = block_channels(size, width)
        self.top_channels = widths[-1]
        projected = self.top_channels * FINAL_SIZE * FINAL_SIZE
        self.project = nn.Sequential(
            nn.Linear(latent_dim, projected, bias=False),
            nn.BatchNorm1d(projected),
            nn.ReLU(inplace=True),
        )
        ins = widths[::-1]  # 4w, 2w, w at 32; 8w, 8w, 4w, 2w, w at 128
        outs = [*ins[1:], channels]
        kernels = _kernels(size)[::-1]
        layers: list[nn.Module] = []
        for i, (c_in, c_out, kernel) in enumerate(zip(ins, outs, kernels, strict=True)):
            last = i == len(ins) - 1  # the image layer: a bias, no norm
            layers.append(nn.ConvTranspose2d(c_in, c_out, kernel, 2, 1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers.append(nn.Tanh())
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, self.top_channels, FINAL_SIZE, FINAL_SIZE)
        return self.upsample(x)


class Discriminator(nn.Module):
    """D(x) as a logit (BCE) or a critic value (WGAN-GP), with access to its intermediate layers.

    `features(x, layer)` returns the activation after conv block `layer` (1..num_layers, where
    num_layers = depth(size): 3 at 28 and 32, 4 at 64, 5 at 128): the Dis_l of Larsen et al. A
    WGAN-GP critic is built with `batch_norm=False` (the gradient penalty is per-sample, which
    batch norm would break; Gulrajani et al. 2017, section 4).
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int = 64, batch_norm: bool = True):
        super().__init__()
        channels, size = check_image_shape(image_shape)
        self.blocks = _conv_trunk(channels, size, width, norm=batch_norm)
        self.num_layers = len(self.blocks)
        top = block_channels(size, width)[-1]
        self.head = nn.Linear(top * FINAL_SIZE * FINAL_SIZE, 1)

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
