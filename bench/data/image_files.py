"""A researcher's own images as uint8 tensors: an image folder, torchvision's CelebA layout, or an
.npz of arrays.

Image folder (PNG or JPEG), read as torchvision's ImageFolder reads it:

    root/*.png                      flat: unlabelled
    root/<class>/*.png              one subfolder per class: labelled, classes in sorted order
    root/train/..., root/test/...   either of the above per split; without them the caller splits
                                    the pool with a seeded fraction (bench/data/datasets.py)

CelebA: torchvision's layout, `root/celeba/img_align_celeba/*.jpg` with
`root/celeba/list_eval_partition.txt` (partition 0 is the training split, 2 the test split);
`root` may also be the `celeba` folder itself. Unlabelled (its attributes are not classes).

.npz: arrays `x_train` and `x_test` of uint8, (N, H, W) or (N, H, W, C), with optional `y_train`
and `y_test` (integer classes).

Decoding a folder is done once. The decoded uint8 images (after the declared preprocessing) are
cached in <cache_dir>/decoded/, keyed by the files (path relative to the root, size, modification
time, class), the channel mode and the preprocessing: a changed, added or removed file, or another
preprocessing, is another key; the same files moved to another folder are not. The first decode
shows a progress bar.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image, read_file, write_png
from tqdm import tqdm

from bench.data.cache import atomic_save, default_cache_dir
from bench.data.preprocess import Preprocessing

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DECODED_FOLDER = "decoded"
DECODE_FORMAT = 1  # bump when decoding changes what a cached array holds
CELEBA_PARTITIONS = {"train": 0, "valid": 1, "test": 2}


class ImageFileError(ValueError):
    """Images that cannot be read as asked; str() is one line naming the file and the fix."""


@dataclass
class Listing:
    """The image files of one split, in a fixed order, with their classes (None: unlabelled)."""

    root: Path
    paths: list[Path]
    labels: list[int] | None
    classes: list[str] | None = None


@dataclass
class Decoded:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor | None  # int64 (N,) or None


def has_split_folders(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def list_folder(folder: Path, class_to_idx: dict[str, int] | None = None) -> Listing:
    """The images of `folder`: flat (unlabelled) or one subfolder per class (ImageFolder's rule:
    classes sorted by name, files found recursively inside each class folder)."""
    if not folder.is_dir():
        raise ImageFileError(f"image folder {folder} does not exist; check dataset.root")
    entries = sorted(folder.iterdir())
    subfolders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    files = [e for e in entries if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES]
    if subfolders and files:
        raise ImageFileError(
            f"{folder} holds both images and subfolders: put every image in one subfolder per "
            "class, or none in subfolders (unlabelled)"
        )
    if files:
        return Listing(folder, files, None)
    if not subfolders:
        raise ImageFileError(f"no PNG or JPEG images in {folder}; check dataset.root")
    classes, found_mapping = find_classes(str(folder))
    mapping = class_to_idx or found_mapping
    unknown = sorted(set(classes) - set(mapping))
    if unknown:
        raise ImageFileError(
            f"{folder}: class folders {unknown} are not among the training classes "
            f"{sorted(mapping)}; both splits need the same class folders"
        )
    samples = make_dataset(str(folder), {c: mapping[c] for c in classes}, extensions=IMAGE_SUFFIXES)
    if not samples:
        raise ImageFileError(f"no PNG or JPEG images in the class folders of {folder}")
    ordered = sorted(mapping, key=mapping.get)
    return Listing(folder, [Path(p) for p, _ in samples], [c for _, c in samples], ordered)


def celeba_listing(root: Path, split: str) -> Listing:
    """The files of one CelebA split, in the partition file's order."""
    base = root / "celeba" if (root / "celeba").is_dir() else root
    partition_file = base / "list_eval_partition.txt"
    images = base / "img_align_celeba"
    if not partition_file.is_file() or not images.is_dir():
        raise ImageFileError(
            f"CelebA not found in {root}: expected torchvision's layout, "
            "celeba/img_align_celeba/*.jpg and celeba/list_eval_partition.txt"
        )
    wanted = CELEBA_PARTITIONS[split]
    paths = []
    for number, line in enumerate(partition_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ImageFileError(f"{partition_file}, line {number}: expected '<file> <0|1|2>'")
        if int(parts[1]) == wanted:
            paths.append(images / parts[0])
    if not paths:
        raise ImageFileError(f"{partition_file} lists no image of the {split} split")
    return Listing(base, paths, None)


def decoded(
    listing: Listing,
    preprocessing: Preprocessing,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Decoded:
    """The listing's images decoded and preprocessed: from the cache, else decoded and cached."""
    channels = preprocessing.channels or 3  # image files are read as RGB unless told otherwise
    key = _decoded_key(listing, preprocessing, channels)
    path = Path(cache_dir or default_cache_dir()) / DECODED_FOLDER / f"{key}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return Decoded(saved["images"], saved["labels"])
        except (OSError, RuntimeError, KeyError, EOFError):
            pass  # a damaged cache entry: decode again and replace it
    images = decode_files(listing.paths, preprocessing, channels, progress)
    labels = torch.tensor(listing.labels, dtype=torch.long) if listing.labels is not None else None
    atomic_save({"images": images, "labels": labels}, path)
    return Decoded(images, labels)


def _decoded_key(listing: Listing, preprocessing: Preprocessing, channels: int) -> str:
    digest = hashlib.sha256()
    header = {"format": DECODE_FORMAT, "channels": channels, "preprocessing": preprocessing.tag}
    digest.update(json.dumps(header, sort_keys=True).encode())
    labels = listing.labels if listing.labels is not None else [None] * len(listing.paths)
    for path, label in zip(listing.paths, labels, strict=True):
        try:
            stat = path.stat()
        except OSError as err:
            raise ImageFileError(f"{path}: cannot be read ({err.strerror})") from None
        relative = path.relative_to(listing.root).as_posix()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n".encode())
    return digest.hexdigest()[:24]


def decode_files(
    paths: list[Path], preprocessing: Preprocessing, channels: int, progress: bool = True
) -> torch.Tensor:
    """Decode and preprocess every file (threads: decoding releases the GIL) into one uint8
    (N, C, H, W) tensor; every image must end at the same size."""
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB

    def load(path: Path) -> torch.Tensor:
        try:
            image = decode_image(read_file(str(path)), mode=mode)
        except (RuntimeError, OSError) as err:
            problem = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ImageFileError(
                f"{path}: cannot be decoded as an image ({problem}); remove or replace the file"
            ) from None
        try:
            return preprocessing.apply(image)
        except ValueError as err:
            raise ImageFileError(f"{path}: {err}") from None

    out: torch.Tensor | None = None
    first: Path | None = None
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(load, paths)
        bar = tqdm(
            results, total=len(paths), desc="decoding images", unit="img", disable=not progress
        )
        for i, (path, image) in enumerate(zip(paths, bar, strict=True)):
            if out is None:
                out = torch.empty((len(paths), *image.shape), dtype=torch.uint8)
                first = path
            elif image.shape != out.shape[1:]:
                raise ImageFileError(
                    f"images of different sizes: {first} is {_size(out[0])}, {path} is "
                    f"{_size(image)}; set dataset.image_size (and dataset.crop) to bring them "
                    "to one size"
                )
            out[i] = image
    assert out is not None  # listings are never empty
    return out


def _size(image: torch.Tensor) -> str:
    return f"{image.shape[-1]}x{image.shape[-2]}"


def open_npz(path: Path):
    """np.load of an .npz (no pickled objects), or ImageFileError saying why not."""
    if not path.is_file():
        raise ImageFileError(f"npz file {path} does not exist; check the path")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ImageFileError(f"{path}: not a readable .npz file ({err})") from None


def read_npz(path: Path, split: str, preprocessing: Preprocessing) -> Decoded:
    """Arrays x_<split> (uint8 images) and, when present, y_<split> (classes) of an .npz file."""
    with open_npz(path) as arrays:
        name = f"x_{split}"
        if name not in arrays.files:
            raise ImageFileError(
                f"{path} has no array {name!r} (it has {sorted(arrays.files)}); store the images "
                "as x_train and x_test"
            )
        x = arrays[name]
        y = arrays[f"y_{split}"] if f"y_{split}" in arrays.files else None
    images = images_from_array(x, f"{path}: {name}")
    labels = None
    if y is not None:
        if y.ndim != 1 or len(y) != len(images) or not np.issubdtype(y.dtype, np.integer):
            raise ImageFileError(
                f"{path}: y_{split} must be {len(images)} integer classes, one per image "
                f"(got shape {y.shape}, dtype {y.dtype})"
            )
        if y.min() < 0:
            raise ImageFileError(f"{path}: y_{split} holds negative classes; use 0..K-1")
        labels = torch.from_numpy(y.astype(np.int64))
    return Decoded(apply_in_chunks(preprocessing, images), labels)


def images_from_array(x: np.ndarray, what: str) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) with C in 1, 3 -> uint8 (N, C, H, W)."""
    if x.dtype != np.uint8:
        raise ImageFileError(f"{what} has dtype {x.dtype}; store uint8 images (0..255)")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    else:
        raise ImageFileError(
            f"{what} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C 1 or 3"
        )
    if len(x) == 0:
        raise ImageFileError(f"{what} holds no images")
    return torch.from_numpy(np.ascontiguousarray(x))


def apply_in_chunks(preprocessing: Preprocessing, images: torch.Tensor, chunk: int = 4096):
    """Preprocess a whole split in chunks (a resize of 200k images at once would need a float
    copy of all of them)."""
    if preprocessing.is_identity:
        return images
    try:
        return torch.cat([preprocessing.apply(part) for part in images.split(chunk)])
    except ValueError as err:
        raise ImageFileError(str(err)) from None


def write_folder(
    folder: Path,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    class_names: list[str] | None = None,
) -> int:
    """Write uint8 (N, C, H, W) images as numbered PNG files: flat, or (with labels) in one
    subfolder per class, named `class_names[c]` or the class number. The numbering keeps the
    order, so reading the folder back gives the images in class order, then file order."""
    width = max(5, len(str(len(images))))
    for i, image in enumerate(images):
        target = folder
        if labels is not None:
            label = int(labels[i])
            target = folder / (class_names[label] if class_names else f"{label:02d}")
        target.mkdir(parents=True, exist_ok=True)
        write_png(image.cpu(), str(target / f"{i:0{width}d}.png"))
    return len(images)
