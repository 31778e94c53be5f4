"""The preprocessing a suite declares for its images: a centre crop, a resize, a channel count.

Done with torchvision.transforms.v2 on uint8 tensors (C, H, W) or batches (N, C, H, W), in this
order: centre crop to `crop` x `crop`, resize to `image_size` x `image_size` (bilinear with
antialiasing, rounded back to uint8), then convert to `channels` (1: ITU-R 601-2 luma, as
torchvision's Grayscale; 3: a grey image repeated on three channels). A field left out does
nothing. `tag` names the preprocessing in every cache key (decoded images, domain network,
real-image features), so that two preprocessings of the same files never share a cache entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class Preprocessing:
    crop: int | None = None
    image_size: int | None = None
    channels: int | None = None

    @property
    def is_identity(self) -> bool:
        return self.crop is None and self.image_size is None and self.channels is None

    @property
    def tag(self) -> str:
        """A file-name-safe name: "crop148-size64-ch3"; "" for no preprocessing."""
        parts = [
            f"{name}{value}"
            for name, value in (
                ("crop", self.crop),
                ("size", self.image_size),
                ("ch", self.channels),
            )
            if value is not None
        ]
        return "-".join(parts)

    def describe(self) -> str:
        """Words for provenance and reports."""
        if self.is_identity:
            return "none (images as stored)"
        steps = []
        if self.crop is not None:
            steps.append(f"centre crop {self.crop}x{self.crop}")
        if self.image_size is not None:
            steps.append(f"resize to {self.image_size}x{self.image_size} (bilinear, antialiased)")
        if self.channels is not None:
            steps.append("greyscale" if self.channels == 1 else f"{self.channels} channels")
        return ", then ".join(steps)

    def transform(self) -> v2.Compose:
        steps: list[torch.nn.Module] = []
        if self.crop is not None:
            steps.append(v2.CenterCrop(self.crop))
        if self.image_size is not None:
            steps.append(v2.Resize((self.image_size, self.image_size), antialias=True))
        if self.channels == 1:
            steps.append(v2.Grayscale(num_output_channels=1))
        elif self.channels == 3:
            steps.append(v2.RGB())
        return v2.Compose(steps)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) or (N, C, H, W) -> uint8 in the declared shape."""
        if self.is_identity:
            return images
        if self.crop is not None and min(images.shape[-2:]) < self.crop:
            height, width = images.shape[-2:]
            raise ValueError(
                f"dataset.crop {self.crop} is larger than the images ({width}x{height}); "
                "lower it or leave it out"
            )
        if self.channels is not None and images.shape[-3] not in (1, 3):
            raise ValueError(f"images with {images.shape[-3]} channels cannot be converted")
        return self.transform()(images).contiguous()
