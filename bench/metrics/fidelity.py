"""Sample-quality metrics (FID, KID, improved precision/recall), computed by torch-fidelity.

Spaces: "domain" (bench/metrics/domain.py's classifier) and "inception" (torch-fidelity's
"inception-v3-compat", the standard FID network; grayscale is repeated to RGB).

Domain space: features in, metrics out. An evaluation runs each generated image through the
domain classifier once (domain.extract), for both its features (here) and its predicted class
(mode coverage, bench/metrics/evaluate.py). `feature_metrics` turns features into numbers with
torch-fidelity's own feature-level functions, called with the options calculate_metrics would
pass them, so the values are calculate_metrics(feature_extractor="bench-domain")'s. The real
images' features are computed once and cached on disk (`real_domain_features`), reused by every
later evaluation against the same images and weights.

Inception space: torch-fidelity's own extractor, batching and disk cache (the real side) give
the features (uint8 tensors wrapped as in-memory datasets, an explicit weights file from
bench/metrics/inception_weights.py: nothing is downloaded here), then the same feature-level
functions as the domain space. The standard protocol: torch-fidelity's TF1-style bilinear resize
to 299 x 299, grayscale repeated to RGB, (x - 128) / 128, the network in float32 (never under a
caller's autocast, never TF32), the FID statistics in float64.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id_cached

from bench import keys
from bench.data.cache import atomic_save, default_cache_dir
from bench.metrics import domain, domain_network
from bench.metrics.density_coverage import NEAREST_K, density_coverage

INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_LAYER = "2048"  # the pool features FID, KID and precision/recall are computed on
FIDELITY_CACHE_FOLDER = "fidelity"
# density/coverage look at each real item's 5th nearest neighbour among the others: 6 at least
MIN_SAMPLES = NEAREST_K + 1
EQUAL_COUNTS_SEED = 0
# What both paths give torch-fidelity, so that calculate_metrics (Inception) and the feature-level
# functions (domain) agree; everything else is torch-fidelity's default (100 KID subsets, cubic
# polynomial kernel, k=3 neighbours, rng seed 2020).
TORCH_FIDELITY_OPTIONS = {
    # no DataLoader worker processes for data already in memory (on 2 cores they cost more than
    # they save, and forking a process holding a CUDA context is asking for trouble);
    # precision/recall computed in blocks instead of whole N x N distance matrices
    "save_cpu_ram": True,
    "verbose": False,
}


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
    """FID, KID (mean and std over 100 subsets) and, with prc, precision and recall (k=3),
    density and coverage (k=5) of the
    generated images `fake` against the real images `real` (both uint8 (N, C, H, W)) in `space`,
    under bench.keys names.

    Domain: the classifier read from domain_weights, features by domain.extract. Inception:
    torch-fidelity's extraction (inception_features). Numbers by feature_metrics.

    real_cache_name identifies `real` (dataset, split, content, extractor): its features are
    cached under <cache_dir>/fidelity/ and read back on every later call with the same name. The
    weights file's digest is appended to it here, so new weights never meet stale features."""
    if space == "domain":
        weights = _weights_file(space, domain_weights)
    elif space == "inception":
        weights = _weights_file(space, inception_weights)
    else:
        raise ValueError(f"unknown feature space {space!r}; expected one of {keys.FEATURE_SPACES}")
    _check_images(fake, "fake")
    _check_images(real, "real")
    if fake.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"generated images {tuple(fake.shape[1:])} and real images {tuple(real.shape[1:])} "
            "differ in shape"
        )
    _check_cache_name(real_cache_name)

    if space == "domain":
        classifier = domain.read_classifier(weights)[0].to(device)
        fake_features = domain.extract(classifier, fake, batch_size, device).features
        real_features = real_domain_features(
            real, classifier, weights, real_cache_name, batch_size, device, cache_dir
        )
        return feature_metrics(space, fake_features, real_features, kid_subset_size, prc)

    fake_features, real_features = inception_features(
        fake, real, weights, real_cache_name, batch_size, device, cache_dir
    )
    return feature_metrics(space, fake_features, real_features, kid_subset_size, prc)


def inception_features(
    fake: torch.Tensor,
    real: torch.Tensor,
    weights: Path,
    real_cache_name: str,
    batch_size: int,
    device: torch.device | str,
    cache_dir: str | Path | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inception pool features (N, 2048) of the generated and the real images, extracted by
    torch-fidelity's own code (the extractor, batching and disk cache calculate_metrics uses, an
    explicit weights file: nothing is downloaded); the real side is cached under real_cache_name
    plus the weights' digest."""
    options = {
        "input1": UInt8Images(fake.cpu(), 3),
        "input2": UInt8Images(real.cpu(), 3),
        "input2_cache_name": f"{real_cache_name}-{_file_digest(weights)}",
        "cache": True,
        "cache_root": str(_cache_root(cache_dir)),
        "feature_extractor": INCEPTION_EXTRACTOR,
        "feature_extractor_weights_path": str(weights),
        # torch-fidelity knows CUDA or CPU only
        "cuda": torch.device(device).type == "cuda",
        "batch_size": batch_size,
        **TORCH_FIDELITY_OPTIONS,
    }
    extractor = create_feature_extractor(INCEPTION_EXTRACTOR, [INCEPTION_LAYER], **options)
    if not options["cuda"]:
        # the same features (within 1e-5) at 1.4-2x the images/s on 2 CPU cores (README)
        extractor = extractor.to(memory_format=torch.channels_last)
    with float32_only(torch.device(device).type):
        fake_features = extract_featuresdict_from_input_id_cached(1, extractor, **options)
        real_features = extract_featuresdict_from_input_id_cached(2, extractor, **options)
    return fake_features[INCEPTION_LAYER].cpu(), real_features[INCEPTION_LAYER].cpu()


@contextmanager
def float32_only(device_type: str) -> Iterator[None]:
    """Plain float32 for the block: no autocast a caller (a bf16 training step) left enabled, no
    TF32 convolutions or matmuls on CUDA. Inception features in bf16 move FID by percent."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def feature_metrics(
    space: str,
    fake: torch.Tensor,
    real: torch.Tensor,
    kid_subset_size: int = 1000,
    prc: bool = True,
) -> dict[str, float]:
    """fidelity_metrics from features already extracted: (N, D) of the generated images, (M, D)
    of the real ones, under bench.keys names for `space`.

    The numbers come from torch-fidelity's feature-level functions (FID statistics and distance,
    KID over subsets, precision/recall), the ones calculate_metrics itself calls on the features
    it extracts, here given the same options and CPU tensors: nothing is re-implemented. With
    prc, density and coverage (Naeem et al. 2020, k=5; bench/metrics/density_coverage.py) come
    with precision and recall, on the same equal counts."""
    _check_count(len(fake), "fake")
    _check_count(len(real), "real")
    fake, real = fake.cpu(), real.cpu()
    options = {
        **TORCH_FIDELITY_OPTIONS,
        "kid_subset_size": kid_subset(kid_subset_size, fake, real),
    }
    # float64 statistics: torch-fidelity's mean of float32 features stays float32
    results = fid_statistics_to_metric(
        fid_features_to_statistics(fake.double()),
        fid_features_to_statistics(real.double()),
        verbose=False,
    )
    results |= kid_features_to_metric(fake, real, **options)
    metrics = {}
    if prc:
        fake_equal, real_equal = equal_counts(fake, real)
        results |= prc_features_to_metric(fake_equal, real_equal, **options)
        scores = density_coverage(real_equal, fake_equal)
        metrics = {
            keys.density_key(space): scores["density"],
            keys.coverage_key(space): scores["coverage"],
        }
    return _under_bench_keys(space, results, prc) | metrics


def equal_counts(fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same number of generated and real items, for precision/recall: with k-NN radii, the
    side with more points gets the tighter manifold, so unequal counts bias precision against
    recall. The larger side is cut to the smaller one's size: the first k generated images (they
    are i.i.d. already) or a random subset of the real ones, seeded so every cell gets the same."""
    k = min(len(fake), len(real))
    if len(real) > k:
        generator = torch.Generator().manual_seed(EQUAL_COUNTS_SEED)
        real = real[torch.randperm(len(real), generator=generator)[:k].sort().values]
    return fake[:k], real


def real_domain_features(
    real: torch.Tensor,
    classifier: domain.DomainClassifier,
    weights: str | Path,
    real_cache_name: str,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """Domain features (N, 128) of the real images, extracted once, then read from the cache.

    The file: <cache_dir>/fidelity/<real_cache_name>-<weights digest>-bench-domain-features.pt,
    {"features": float32 tensor}. real_cache_name names the images (dataset, split, content
    digest); the digest of `weights`, the file `classifier` was read from, is appended here so
    that new weights never meet stale features. Written atomically (temp file, os.replace), read
    with weights_only=True; an entry that cannot be read or does not fit is extracted again."""
    _check_cache_name(real_cache_name)
    name = f"{real_cache_name}-{_file_digest(Path(weights))}-{domain.EXTRACTOR_NAME}-features.pt"
    path = _cache_root(cache_dir) / name
    features = _read_features(path, len(real))
    if features is None:
        features = domain.extract(classifier, real, batch_size, device).features
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"features": features}, path)
    return features


def _read_features(path: Path, count: int) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file: extract again rather than fail or trust it
        return None
    features = saved.get("features") if isinstance(saved, dict) else None
    fits = (
        torch.is_tensor(features)
        and features.dtype == torch.float32
        and tuple(features.shape) == (count, domain_network.FEATURE_DIM)
    )
    return features if fits else None


def _under_bench_keys(space: str, results: dict, prc: bool) -> dict[str, float]:
    """torch-fidelity's result dict -> {bench key: float}."""
    metrics = {
        keys.fid_key(space): float(results[torch_fidelity.KEY_METRIC_FID]),
        keys.kid_key(space): float(results[torch_fidelity.KEY_METRIC_KID_MEAN]),
        keys.kid_std_key(space): float(results[torch_fidelity.KEY_METRIC_KID_STD]),
    }
    if prc:
        metrics[keys.precision_key(space)] = float(results[torch_fidelity.KEY_METRIC_PRECISION])
        metrics[keys.recall_key(space)] = float(results[torch_fidelity.KEY_METRIC_RECALL])
    return metrics


def kid_subset(requested: int, fake: torch.Tensor, real: torch.Tensor) -> int:
    """KID's subset size: at most half of the smaller side, so that its subsets (drawn without
    replacement) differ from each other and kid_std measures something; a subset as large as the
    set would repeat the same estimate and report a std of 0."""
    return max(2, min(requested, len(fake) // 2, len(real) // 2))


def _cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir or default_cache_dir()) / FIDELITY_CACHE_FOLDER


def _weights_file(space: str, weights: str | Path | None) -> Path:
    if weights is None:
        raise ValueError(f"the {space} feature space needs its weights file ({space}_weights)")
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"{space} feature extractor weights not found: {weights}")
    return weights


def _check_cache_name(real_cache_name: str) -> None:
    if os.sep in real_cache_name or "/" in real_cache_name:
        raise ValueError(f"real_cache_name {real_cache_name!r} must be a plain file name part")


def _check_images(images: torch.Tensor, which: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{which} images must be uint8 (N, C, H, W) with C in (1, 3); got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    _check_count(len(images), which)


def _check_count(count: int, which: str) -> None:
    if count < MIN_SAMPLES:
        raise ValueError(f"{which}: {count} images; the metrics need {MIN_SAMPLES} at least")


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
