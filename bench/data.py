"""Datasets as whole tensors: MNIST, Fashion-MNIST, CIFAR-10 and a deterministic synthetic set.

Where the files are looked for, first match wins for the root, then every layout inside it:

    1. dataset.root in the suite file
    2. --data-root on the command line
    3. the BENCH_DATA_ROOT environment variable
    4. with none of those: /usr/share/datasets/<name> (where Debian's dataset-* packages install),
       then the download cache ~/.cache/bench/datasets (torchvision downloads there when online)

Inside a root, MNIST-style sets are found as gzipped or plain IDX files directly in the folder
(Debian's layout), in <root>/<name>/, or in torchvision's <root>/MNIST/raw/ (FashionMNIST/raw/);
CIFAR-10 in torchvision's <root>/cifar-10-batches-py/.

A researcher's own images come as `folder`, `npz` or `celeba` (bench/image_files.py reads them);
their root must be given (suite, --data-root or the environment variable), but CelebA's, which is
also looked for in /usr/share/datasets/celeba and the cache. A folder without train/ and test/
subfolders is split here with a seeded random fraction (class-stratified when labelled).

Every dataset may be preprocessed as the suite declares (bench/preprocess.py: centre crop, resize,
channels). Images are kept as uint8 (N, C, H, W); training moves them to the device as uint8 and
`to_model_range` converts each batch to float in [-1, 1]; `to_unit_range` is the one way back to
[0, 1]. Labels are None for unlabelled data.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from . import image_files
from .preprocess import Preprocessing

ENV_ROOT = "BENCH_DATA_ROOT"
SYSTEM_ROOT = Path("/usr/share/datasets")
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench" / "datasets"

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
SYNTHETIC_SIZES = {"train": 2048, "test": 512}
FILE_DATASETS = ("folder", "npz", "celeba")


class DatasetNotFound(FileNotFoundError):
    """The dataset is not where we looked and could not be downloaded; str() says where and how."""


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


def load_dataset(
    name: str,
    root: str | Path | None = None,
    cli_root: str | Path | None = None,
    train_split: str = "train",
    eval_split: str = "test",
    train_limit: int | None = None,
    eval_limit: int | None = None,
    download: bool = True,
    subset_seed: int = 0,
    preprocessing: Preprocessing | None = None,
    eval_fraction: float = 0.1,
    split_seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ImageData:
    """Load both splits of a dataset as uint8 tensors (see the module docstring for the search),
    preprocessed as declared, then limited to seeded subsets when asked."""
    preprocessing = preprocessing or Preprocessing()
    if name in FILE_DATASETS:
        data = _load_files(
            name, root or cli_root or os.environ.get(ENV_ROOT), train_split, eval_split,
            preprocessing, eval_fraction, split_seed, cache_dir, progress,
        )  # fmt: skip
        data.train = _limit(data.train, train_limit, subset_seed)
        data.eval = _limit(data.eval, eval_limit, subset_seed)
        return data
    data = _load_builtin(
        name, root, cli_root, train_split, eval_split, train_limit, eval_limit, download,
        subset_seed,
    )  # fmt: skip
    if not preprocessing.is_identity:
        data.preprocessing = preprocessing
        for split in (data.train, data.eval):
            split.images = image_files.apply_in_chunks(preprocessing, split.images)
    return data


def _load_builtin(
    name, root, cli_root, train_split, eval_split, train_limit, eval_limit, download, subset_seed
) -> ImageData:
    if name.startswith("synthetic"):
        channels = 3 if name == "synthetic-rgb" else 1
        size = 32 if channels == 3 else 28
        train = synthetic_split(
            train_limit or SYNTHETIC_SIZES["train"], train_split, size, channels
        )
        evaluation = synthetic_split(
            eval_limit or SYNTHETIC_SIZES["test"], eval_split, size, channels
        )
        return ImageData(name, train, evaluation, source="generated")

    explicit = root or cli_root or os.environ.get(ENV_ROOT)
    if explicit:
        explicit = Path(explicit).expanduser()
        if not explicit.is_dir():
            raise DatasetNotFound(
                f"data root {explicit} does not exist (set by {_root_origin(root, cli_root)}); "
                f"point it at a folder holding {name}"
            )
        candidates = [explicit]
    else:
        candidates = [SYSTEM_ROOT / name, CACHE_ROOT]

    for candidate in candidates:
        found = _read_local(name, candidate, train_split, eval_split)
        if found is not None:
            train, evaluation = found
            return ImageData(
                name,
                _limit(train, train_limit, subset_seed),
                _limit(evaluation, eval_limit, subset_seed),
                str(candidate),
            )

    download_error = None
    if download and not explicit:
        try:
            train, evaluation = _download(name, CACHE_ROOT, train_split, eval_split)
            return ImageData(
                name,
                _limit(train, train_limit, subset_seed),
                _limit(evaluation, eval_limit, subset_seed),
                str(CACHE_ROOT),
            )
        except Exception as err:  # torchvision raises URLError, RuntimeError, OSError offline
            download_error = str(err).splitlines()[0] if str(err) else type(err).__name__
    looked = ", ".join(str(c) for c in candidates)
    tried = f"; download failed ({download_error})" if download_error else ""
    raise DatasetNotFound(
        f"dataset {name!r} not found: looked in {looked}{tried}. Provide it with dataset.root in "
        f"the suite, --data-root, or {ENV_ROOT}: a folder with {_expected_files(name)}"
    )


def _load_files(
    name: str,
    root: str | Path | None,
    train_split: str,
    eval_split: str,
    preprocessing: Preprocessing,
    eval_fraction: float,
    split_seed: int,
    cache_dir: str | Path | None,
    progress: bool,
) -> ImageData:
    """A folder, an .npz or CelebA (bench/image_files.py); errors say which file and the fix."""
    if name == "celeba":
        return _load_celeba(root, train_split, eval_split, preprocessing, cache_dir, progress)
    if not root:
        what = "the .npz file" if name == "npz" else "the folder of images"
        raise DatasetNotFound(
            f"dataset {name!r} needs its location: set dataset.root (or --data-root) to {what}"
        )
    path = Path(root).expanduser().resolve()  # provenance names the folder, not a relative path
    if name == "npz":
        train = image_files.read_npz(path, train_split, preprocessing)
        evaluation = image_files.read_npz(path, eval_split, preprocessing)
        rule = f"the file's x_{train_split} and x_{eval_split} arrays"
        return _file_data(name, train, evaluation, path, preprocessing, rule)
    if not path.is_dir():
        raise DatasetNotFound(f"image folder {path} does not exist; check dataset.root")
    if image_files.has_split_folders(path):
        train_listing = image_files.list_folder(path / train_split)
        mapping = _class_mapping(train_listing)
        eval_listing = image_files.list_folder(path / eval_split, mapping)
        if (train_listing.labels is None) != (eval_listing.labels is None):
            raise image_files.ImageFileError(
                f"{path}: one of {train_split}/ and {eval_split}/ has class subfolders and the "
                "other not; give both or neither"
            )
        train = image_files.decoded(train_listing, preprocessing, cache_dir, progress)
        evaluation = image_files.decoded(eval_listing, preprocessing, cache_dir, progress)
        rule = f"the folder's {train_split}/ and {eval_split}/ subfolders"
    else:
        listing = image_files.list_folder(path)
        pool = image_files.decoded(listing, preprocessing, cache_dir, progress)
        train, evaluation = split_pool(pool, eval_fraction, split_seed)
        if train_split == "test":  # the held-out part as training data, as asked
            train, evaluation = evaluation, train
        rule = (
            f"a seeded random split of one folder: a fraction {eval_fraction:g} of the images "
            f"(seed {split_seed}{', class-stratified' if pool.labels is not None else ''}) held "
            "out for evaluation"
        )
    return _file_data(name, train, evaluation, path, preprocessing, rule)


def _file_data(
    name: str,
    train: image_files.Decoded,
    evaluation: image_files.Decoded,
    path: Path,
    preprocessing: Preprocessing,
    rule: str,
) -> ImageData:
    return ImageData(
        name,
        Split(train.images, train.labels),
        Split(evaluation.images, evaluation.labels),
        str(path),
        preprocessing,
        rule,
    )


def _class_mapping(listing: image_files.Listing) -> dict[str, int] | None:
    if listing.classes is None:
        return None
    return {name: index for index, name in enumerate(listing.classes)}


def split_pool(
    pool: image_files.Decoded, eval_fraction: float, seed: int
) -> tuple[image_files.Decoded, image_files.Decoded]:
    """(train, eval) of one pool of images: round(fraction * N) held out at random, seeded, and
    class-stratified when the pool has labels."""
    n = len(pool.images)
    n_eval = round(eval_fraction * n)
    if not 0 < n_eval < n:
        raise image_files.ImageFileError(
            f"dataset.eval_fraction {eval_fraction:g} of {n} images leaves "
            f"{'no evaluation' if n_eval == 0 else 'no training'} images; change it or add images"
        )
    if pool.labels is not None:
        held_out = stratified_subset(pool.labels, n_eval, seed)
    else:
        generator = torch.Generator().manual_seed(seed)
        held_out = torch.randperm(n, generator=generator)[:n_eval].sort().values
    mask = torch.zeros(n, dtype=torch.bool)
    mask[held_out] = True

    def part(select: torch.Tensor) -> image_files.Decoded:
        labels = pool.labels[select] if pool.labels is not None else None
        return image_files.Decoded(pool.images[select], labels)

    return part(~mask), part(mask)


def _load_celeba(root, train_split, eval_split, preprocessing, cache_dir, progress) -> ImageData:
    candidates = [Path(root).expanduser()] if root else [SYSTEM_ROOT / "celeba", CACHE_ROOT]
    for candidate in candidates:
        base = candidate / "celeba" if (candidate / "celeba").is_dir() else candidate
        if not (base / "list_eval_partition.txt").is_file():
            continue
        splits = []
        for split in (train_split, eval_split):
            listing = image_files.celeba_listing(candidate, split)
            images = image_files.decoded(listing, preprocessing, cache_dir, progress).images
            splits.append(Split(images, None))
        rule = f"CelebA's own partition ({train_split}: 0, {eval_split}: 2)"
        return ImageData("celeba", splits[0], splits[1], str(base), preprocessing, rule)
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetNotFound(
        f"dataset 'celeba' not found: looked in {looked} (nothing is downloaded here). Place "
        "torchvision's CelebA files (celeba/img_align_celeba/*.jpg, "
        "celeba/list_eval_partition.txt) under dataset.root, --data-root or " + ENV_ROOT
    )


def _root_origin(root, cli_root) -> str:
    if root:
        return "dataset.root in the suite"
    if cli_root:
        return "--data-root"
    return ENV_ROOT


def _expected_files(name: str) -> str:
    if name == "cifar10":
        return "cifar-10-batches-py/ (torchvision's layout)"
    return "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-*.gz (or MNIST/raw/)"


def _limit(split: Split, limit: int | None, seed: int) -> Split:
    """A seeded random subset of `limit` images: class-stratified when labelled."""
    if limit is None or limit >= len(split.images):
        return split
    if split.labels is None:
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(split.images), generator=generator)[:limit].sort().values
        return Split(split.images[index], None)
    index = stratified_subset(split.labels, limit, seed)
    return Split(split.images[index], split.labels[index])


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices (ascending) of n items drawn at random, seeded, with every class in proportion to
    its share of `labels`: class c gets floor(n * share_c) items, and the items left over go to
    the classes with the largest remainders (Hamilton's method). The first n items of a file
    would be neither random nor balanced (files are often sorted or blocked by class)."""
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / len(labels)
    quota = exact.floor().long()
    remainders = exact - quota
    order = sorted(range(len(classes)), key=lambda i: (-remainders[i].item(), i))
    for i in order[: n - int(quota.sum())]:
        quota[i] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values


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
