"""What a dataset is once loaded: uint8 splits (N, C, H, W) with optional labels, their content
digest, and the one conversion each way between uint8 and the model range [-1, 1]
(`to_model_range`; `to_unit_range` back to [0, 1]), on the device they train on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import torch

from bench.data.preprocess import Preprocessing


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor | None  # int64 (N,); None: unlabelled

    @cached_property
    def digest(self) -> str:
        """Content hash of the images: sha256 of the uint8 tensor as stored, 12 hex digits.
        Computed once per split (a 200k-image split takes seconds), then reused by every cell:
        its MLflow dataset input and the name of its cached real features."""
        return hashlib.sha256(self.images.contiguous().numpy().tobytes()).hexdigest()[:12]


@dataclass
class ImageData:
    name: str
    train: Split
    eval: Split
    source: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    split_rule: str = "the dataset's own train and test splits"
    _fingerprint: str | None = field(default=None, repr=False)
    # images held out of the training split to make a search's choices on (bench.data.datasets
    # hold_out_validation); `train` is then the rest. None: nothing held out.
    validation: Split | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    @property
    def labelled(self) -> bool:
        return self.train.labels is not None and self.eval.labels is not None

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for unlabelled data)."""
        if not self.labelled:
            return 0
        return int(torch.cat([self.train.labels, self.eval.labels]).max()) + 1

    @property
    def cache_tag(self) -> str:
        """The dataset's name in cache keys: its name and its preprocessing."""
        tag = self.preprocessing.tag
        return f"{self.name}-{tag}" if tag else self.name

    @property
    def fingerprint(self) -> str:
        """Content hash of both splits: identifies the data whatever folder it came from."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for split in (self.train, self.eval):
                digest.update(str(tuple(split.images.shape)).encode())
                digest.update(split.images.numpy().tobytes())
                if split.labels is not None:
                    digest.update(split.labels.numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint


class DeviceMemoryError(RuntimeError):
    """A split does not fit on the device; str() says how large it is and how much room there is."""


def on_device(images: torch.Tensor, device: torch.device | str, what: str) -> torch.Tensor:
    """uint8 images moved to `device` as they are (a quarter of float32's size): batches are
    converted with `to_model_range` one at a time. On a GPU they must fit in 90% of the free
    memory, leaving room for the networks; otherwise DeviceMemoryError says by how much not."""
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        need = images.numel() * images.element_size()
        if need > 0.9 * free:
            raise DeviceMemoryError(
                f"the {what} ({len(images)} x {' x '.join(map(str, images.shape[1:]))} uint8, "
                f"{need / 2**30:.2f} GiB) does not fit on {device}: {free / 2**30:.2f} GiB free of "
                f"{total / 2**30:.2f} GiB; lower dataset.train_limit or dataset.image_size"
            )
    return images.to(device)


def to_model_range(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] on `device` (the range of every model boundary)."""
    return images.to(device).float().div_(127.5).sub_(1.0)


def model_batch(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch for a model: uint8 images converted by to_model_range, float ones (already in the
    model range) moved as they are."""
    if images.dtype == torch.uint8:
        return to_model_range(images, device)
    return images.to(device)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] -> [0, 1] (metrics, image files)."""
    return images.add(1.0).div(2.0).clamp(0.0, 1.0)


class DatasetNotFound(FileNotFoundError):
    """The dataset is not where we looked and could not be downloaded; str() says where and how."""
