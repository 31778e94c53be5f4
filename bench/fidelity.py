"""Sample-quality metrics (FID, KID, improved precision/recall) through torch-fidelity.

The numbers are torch-fidelity's own (`calculate_metrics`); this module only feeds it: uint8
image tensors wrapped as in-memory datasets, the feature extractor of the chosen space with an
explicit weights file (nothing is ever downloaded), and a disk cache for the real side so that
every evaluation against the same real images reuses their features.

Spaces: "domain" (bench/domain.py's classifier, registered as "bench-domain") and "inception"
(torch-fidelity's "inception-v3-compat", the standard FID network; grayscale is repeated to RGB).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from . import domain, keys

INCEPTION_EXTRACTOR = "inception-v3-compat"
# the file name torch.hub.load_state_dict_from_url gives the download: the URL's last part
INCEPTION_FILE = os.path.basename(urlparse(URL_INCEPTION_V3).path)
FIDELITY_CACHE_FOLDER = "fidelity"
# precision/recall look at each sample's 3rd nearest neighbour among the others: 4 samples at least
MIN_SAMPLES = 4


class UInt8Images(Dataset):
    """uint8 (N, C, H, W) images as the Dataset torch-fidelity reads; grayscale repeated to
    `channels` on the fly (Inception wants RGB) rather than tripling the tensor in memory."""

    def __init__(self, images: torch.Tensor, channels: int):
        self.images = images
        self.channels = channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index]
        if image.shape[0] != self.channels:
            image = image.expand(self.channels, -1, -1)
        return image


def fidelity_metrics(
    fake: torch.Tensor,
    real: torch.Tensor,
    space: str,
    real_cache_name: str,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    domain_weights: str | Path | None = None,
    inception_weights: str | Path | None = None,
    kid_subset_size: int = 1000,
    cache_dir: str | Path | None = None,
    prc: bool = True,
) -> dict[str, float]:
    """FID, KID (mean and std over 100 subsets) and, with prc, precision and recall (k=3) of the
    generated images `fake` against the real images `real` (both uint8 (N, C, H, W)) in `space`,
    under bench.keys names.

    real_cache_name identifies `real` (dataset, split, content, extractor): its features are
    cached under <cache_dir>/fidelity/ and read back on every later call with the same name. The
    weights file's digest is appended to it here, so new weights never meet stale features."""
    if space == "domain":
        extractor, weights, channels = domain.EXTRACTOR_NAME, domain_weights, real.shape[1]
    elif space == "inception":
        extractor, weights, channels = INCEPTION_EXTRACTOR, inception_weights, 3
    else:
        raise ValueError(f"unknown feature space {space!r}; expected one of {keys.FEATURE_SPACES}")
    if weights is None:
        raise ValueError(f"the {space} feature space needs its weights file ({space}_weights)")
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"{space} feature extractor weights not found: {weights}")
    _check_images(fake, "fake")
    _check_images(real, "real")
    if fake.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"generated images {tuple(fake.shape[1:])} and real images {tuple(real.shape[1:])} "
            "differ in shape"
        )
    if os.sep in real_cache_name or "/" in real_cache_name:
        raise ValueError(f"real_cache_name {real_cache_name!r} must be a plain file name part")

    cache_root = Path(cache_dir or domain.default_cache_dir()) / FIDELITY_CACHE_FOLDER
    results = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake.cpu(), channels),
        input2=UInt8Images(real.cpu(), channels),
        input2_cache_name=f"{real_cache_name}-{_file_digest(weights)}",
        cache=True,
        cache_root=str(cache_root),
        fid=True,
        kid=True,
        prc=prc,
        feature_extractor=extractor,
        feature_extractor_weights_path=str(weights),
        # torch-fidelity knows CUDA or CPU only
        cuda=torch.device(device).type == "cuda",
        batch_size=batch_size,
        # KID draws subsets without replacement: a subset cannot outnumber either side
        kid_subset_size=min(kid_subset_size, len(fake), len(real)),
        # no DataLoader worker processes for data already in memory (on 2 cores they cost more
        # than they save, and forking a process holding a CUDA context is asking for trouble);
        # precision/recall computed in blocks instead of whole N x N distance matrices
        save_cpu_ram=True,
        verbose=False,
    )
    metrics = {
        keys.fid_key(space): float(results[torch_fidelity.KEY_METRIC_FID]),
        keys.kid_key(space): float(results[torch_fidelity.KEY_METRIC_KID_MEAN]),
        keys.kid_std_key(space): float(results[torch_fidelity.KEY_METRIC_KID_STD]),
    }
    if prc:
        metrics[keys.precision_key(space)] = float(results[torch_fidelity.KEY_METRIC_PRECISION])
        metrics[keys.recall_key(space)] = float(results[torch_fidelity.KEY_METRIC_RECALL])
    return metrics


def _check_images(images: torch.Tensor, which: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{which} images must be uint8 (N, C, H, W) with C in (1, 3); got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if len(images) < MIN_SAMPLES:
        raise ValueError(f"{which}: {len(images)} images; the metrics need {MIN_SAMPLES} at least")


_digests: dict[tuple, str] = {}


def _file_digest(path: Path) -> str:
    """Short content hash of a weights file, remembered per (path, size, mtime) so the 90 MB
    Inception file is hashed once per process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()[:12]
    return _digests[key]


def inception_hub_file() -> Path:
    """Where torch-fidelity's own download would have put the Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_weights_path(explicit: str | Path | None) -> Path | None:
    """The Inception weights to use: `explicit` (evaluation.inception_weights) when given, which
    must exist; else torch-fidelity's download in torch hub's cache if there; else None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights not found: {path}")
        return path
    cached = inception_hub_file()
    return cached if cached.is_file() else None


def inception_skip_reason() -> str:
    """The one line logged when no Inception weights are found (the metrics are then absent)."""
    cached = inception_hub_file()
    return (
        f"Inception FID skipped: no weights at {cached}; pass evaluation.inception_weights or put "
        f"{cached.name} ({URL_INCEPTION_V3}) in {cached.parent}"
    )
