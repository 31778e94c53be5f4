"""The built-in datasets' files: MNIST-style gzipped IDX (Debian's layout, <root>/<name>/ or
torchvision's raw/), CIFAR-10 batches, torchvision's download when online, and the deterministic
synthetic sets generated in memory for tests.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from bench.data.images import DatasetNotFound, Split

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
SYNTHETIC_SIZES = {"train": 2048, "test": 512}


def _read_local(name: str, root: Path, train_split: str, eval_split: str):
    if not root.is_dir():
        return None
    if name == "cifar10":
        if not (root / "cifar-10-batches-py").is_dir():
            return None
        return _cifar10(root, train_split, download=False), _cifar10(root, eval_split, False)
    for folder in (root, root / name, root / TORCHVISION_FOLDER[name] / "raw"):
        images_file = _find_idx(folder, IDX_FILES[train_split][0])
        if images_file is not None:
            return _idx_split(folder, train_split), _idx_split(folder, eval_split)
    return None


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _idx_split(folder: Path, split: str) -> Split:
    images_stem, labels_stem = IDX_FILES[split]
    images_file, labels_file = _find_idx(folder, images_stem), _find_idx(folder, labels_stem)
    if images_file is None or labels_file is None:
        raise DatasetNotFound(f"{folder}: the {split} split is incomplete ({images_stem}[.gz])")
    images = read_idx(images_file)
    labels = read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetNotFound(f"{images_file}: not an MNIST-style image/label IDX pair")
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())


IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): 2 zero bytes, dtype code, ndim, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DatasetNotFound(f"{path}: not an IDX file")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    array = np.frombuffer(data, dtype=IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != math.prod(dims):
        raise DatasetNotFound(f"{path}: truncated IDX file")
    return array.reshape(tuple(dims)).copy()


def _cifar10(root: Path, split: str, download: bool) -> Split:
    from torchvision.datasets import CIFAR10

    dataset = CIFAR10(str(root), train=split == "train", download=download)
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor(dataset.targets, dtype=torch.long))


def _download(name: str, root: Path, train_split: str, eval_split: str):
    """Fetch through torchvision into the cache, then read its files like any local folder."""
    from torchvision import datasets

    root.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        return _cifar10(root, train_split, True), _cifar10(root, eval_split, True)
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    for train in (True, False):
        cls(str(root), train=train, download=True)
    found = _read_local(name, root, train_split, eval_split)
    if found is None:
        raise DatasetNotFound(f"torchvision downloaded {name} but its files are not in {root}")
    return found


def synthetic_split(n: int, split: str, size: int = 28, channels: int = 1) -> Split:
    """A deterministic 10-class toy set: class k is a Gaussian blob at angle 2*pi*k/10 on a circle,
    with random jitter, width and brightness (and a class colour for RGB). Same on every machine:
    only the CPU generator seeded by the split name is used."""
    generator = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=generator)]
    angle = labels.float() * (2 * math.pi / 10)
    radius = size * 0.28
    centre = size / 2 - 0.5
    cx = centre + radius * torch.cos(angle) + torch.randn(n, generator=generator) * 1.0
    cy = centre + radius * torch.sin(angle) + torch.randn(n, generator=generator) * 1.0
    sigma = 1.5 + 1.5 * torch.rand(n, generator=generator)
    peak = 0.6 + 0.4 * torch.rand(n, generator=generator)
    grid = torch.arange(size).float()
    dy = (grid.view(1, size, 1) - cy.view(n, 1, 1)) ** 2
    dx = (grid.view(1, 1, size) - cx.view(n, 1, 1)) ** 2
    blob = peak.view(n, 1, 1) * torch.exp(-(dx + dy) / (2 * sigma.view(n, 1, 1) ** 2))
    images = blob.unsqueeze(1).repeat(1, channels, 1, 1)
    if channels == 3:
        hue = labels.float().view(n, 1) * (2 * math.pi / 10)
        phases = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3]).view(1, 3)
        colour = 0.55 + 0.45 * torch.cos(hue + phases)
        images = images * colour.view(n, 3, 1, 1)
    images = images + 0.03 * torch.randn(images.shape, generator=generator)
    return Split((images.clamp(0, 1) * 255).round().to(torch.uint8), labels.long())
