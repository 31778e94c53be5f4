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

A researcher's own images come as `folder`, `npz` or `celeba` (bench/data/image_files.py reads
them); their root must be given (suite, --data-root or the environment variable), but CelebA's,
which is also looked for in /usr/share/datasets/celeba and the cache. A folder without train/ and
test/ subfolders is split here with a seeded random fraction (class-stratified when labelled).

Every dataset may be preprocessed as the suite declares (bench/data/preprocess.py: centre crop,
resize, channels). Images are kept as uint8 (N, C, H, W); training moves them to the device as
uint8 and `to_model_range` converts each batch to float in [-1, 1]; `to_unit_range` is the one
way back to [0, 1]. Labels are None for unlabelled data.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from bench.data import image_files
from bench.data.builtin import SYNTHETIC_SIZES, _download, _read_local, synthetic_split
from bench.data.images import DatasetNotFound, ImageData, Split
from bench.data.preprocess import Preprocessing

ENV_ROOT = "BENCH_DATA_ROOT"
SYSTEM_ROOT = Path("/usr/share/datasets")
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench" / "datasets"
FILE_DATASETS = ("folder", "npz", "celeba")


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
    """A folder, an .npz or CelebA (bench/data/image_files.py); errors name the file and the fix."""
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


VALIDATION_SHARE = 0.1
VALIDATION_CAP = 5000


def validation_size(train_count: int, requested: int | None) -> int:
    """How many training images a search holds out: `requested` (search.validation), else 10%
    of the training split or 5000, whichever is smaller."""
    if requested is not None:
        return requested
    return min(VALIDATION_CAP, max(1, round(VALIDATION_SHARE * train_count)))


def hold_out_validation(data: ImageData, size: int, seed: int) -> ImageData:
    """`data` with a seeded, class-stratified (when labelled) set of `size` training images moved
    into data.validation; data.train keeps the rest, in their order."""
    train = data.train
    if not 0 < size < len(train.images):
        raise ValueError(
            f"a validation set of {size} images cannot be held out of {len(train.images)} "
            "training images"
        )
    if train.labels is None:
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(train.images), generator=generator)[:size].sort().values
    else:
        index = stratified_subset(train.labels, size, seed)
    held = torch.zeros(len(train.images), dtype=torch.bool)
    held[index] = True
    labels = train.labels

    def part(mask: torch.Tensor) -> Split:
        return Split(train.images[mask], labels[mask] if labels is not None else None)

    return dataclasses.replace(data, train=part(~held), validation=part(held), _fingerprint=None)


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


def write_dataset_folder(
    name: str,
    folder: Path,
    flat: bool = False,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    crop: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    cli_root: str | None = None,
) -> list[str]:
    """`bench images`: a dataset's train and test splits as PNG files under folder/train and
    folder/test (one subfolder per class, or flat), a folder `dataset: {name: folder}` reads back.
    Returns what was written, a line per split."""
    data = load_dataset(
        name,
        cli_root=cli_root,
        train_limit=train_limit,
        eval_limit=eval_limit,
        preprocessing=Preprocessing(crop, image_size, channels),
    )
    if folder.exists() and any(folder.iterdir()):
        raise image_files.ImageFileError(f"{folder} is not empty; give a new or empty folder")
    lines = []
    for split_name, split in (("train", data.train), ("test", data.eval)):
        labels = None if flat else split.labels
        count = image_files.write_folder(folder / split_name, split.images, labels)
        lines.append(f"wrote {count} images of {data.image_shape} to {folder / split_name}")
    return lines
