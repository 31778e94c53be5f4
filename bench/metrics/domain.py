"""The "domain" feature space: a small CNN classifier the harness trains on the dataset's own
labelled train split, caches on disk, and registers with torch-fidelity as a feature extractor.

Inception-v3 features were learned on ImageNet photographs; on 28x28 digits or clothes they are a
poor, and offline an unavailable, yardstick. A classifier trained on the data itself gives
features that separate exactly what matters there (the classes), so FID/KID/precision/recall in
its penultimate layer ("domain" space) are meaningful for every dataset the harness loads. Its
numbers are never comparable with Inception numbers (bench/keys.py labels them apart).

Unlabelled data (an image folder without class subfolders, CelebA) has no classes to learn. The
same network then learns a self-supervised task instead: which of four rotations (0, 90, 180, 270
degrees) an image was turned by (Gidaris et al. 2018, "Unsupervised representation learning by
predicting image rotations"), on every training image in all four rotations. Telling rotations
apart needs the features of upright content (faces, objects, strokes), so its penultimate layer is
a feature space without labels. FID, KID, precision/recall and interpolation use it as they use the
classifier's; mode coverage needs classes and is absent for such data.

Cache: `<cache_dir>/domain-<dataset tag>-<fingerprint>[-rotation]-v1.pt` (cache_dir:
$BENCH_CACHE_DIR, else $XDG_CACHE_HOME/bench, else ~/.cache/bench; the dataset tag is its name and
preprocessing, bench/data/datasets.py ImageData.cache_tag), a dict {"state_dict", "image_shape",
"num_classes", "width", "accuracy", "recipe", "task"}, readable with torch.load(...,
weights_only=True). The fingerprint is content hash of both splits, so the same images give the
same file whatever folder they came from; "v1" names the architecture and training recipe: bump
it when either changes.

One pass per image: `extract` runs the classifier once over uint8 images and returns both the
features (FID/KID/precision/recall, bench/metrics/fidelity.py) and the logits (predicted classes,
mode coverage), with the very conversion and batching torch-fidelity's "bench-domain" extractor
uses, so its features are the numbers torch-fidelity would compute.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from bench.data.cache import atomic_save, default_cache_dir
from bench.data.images import Split
from bench.metrics.domain_network import (
    CLASSES,
    ROTATIONS,
    DomainClassifier,
    check_input,
    measure_accuracy,
    task_for,
    to_input,
    train_classifier,
)

CACHE_VERSION = "v1"
EXTRACTOR_NAME = "bench-domain"


def without(split: Split, held: Split) -> Split:
    """`split` without every image that is also in `held` (equal pixels): the domain network's
    training set when a search holds validation images out. A search's trials are scored in the
    network's feature space against those images; had it learned them, the trials' real side
    would be images it was fitted to, not fresh ones."""
    seen = {image.numpy().tobytes() for image in held.images}
    keep = torch.tensor([image.numpy().tobytes() not in seen for image in split.images])
    labels = split.labels[keep] if split.labels is not None else None
    return Split(split.images[keep], labels)


def cache_path(
    name: str, fingerprint: str, cache_dir: str | Path | None = None, task: str = CLASSES
) -> Path:
    """Where the domain network for this exact dataset lives (also its torch-fidelity weights
    path); `name` is the dataset's cache tag (its name and preprocessing)."""
    kind = "" if task == CLASSES else f"-{task}"
    file = f"domain-{name}-{fingerprint}{kind}-{CACHE_VERSION}.pt"
    return Path(cache_dir or default_cache_dir()) / file


class Extracted(NamedTuple):
    features: torch.Tensor  # (N, FEATURE_DIM) float32, CPU
    logits: torch.Tensor  # (N, num_classes) float32, CPU


@torch.no_grad()
def extract(
    classifier: DomainClassifier,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
) -> Extracted:
    """Features and logits of uint8 (N, C, H, W) images from ONE forward pass per image, in
    batches of `batch_size` on `device`: the same batches, conversion and float32 output as
    torch-fidelity's "bench-domain" extractor (DomainFeatureExtractor), hence the same features.

    The classifier must be in eval mode (batch norm statistics and no dropout, as torch-fidelity
    puts its extractor)."""
    if classifier.training:
        raise ValueError("extract needs the classifier in eval mode (classifier.eval())")
    check_input(images, classifier.image_shape)
    features, logits = [], []
    for batch in images.split(batch_size):
        batch_features, batch_logits = classifier.features_and_logits(to_input(batch.to(device)))
        features.append(batch_features.float().cpu())
        logits.append(batch_logits.float().cpu())
    return Extracted(torch.cat(features), torch.cat(logits))


def load_or_train(
    name: str,
    fingerprint: str,
    train_split: Split,
    eval_split: Split,
    image_shape: tuple[int, int, int],
    num_classes: int,
    device: torch.device | str,
    cache_dir: str | Path | None = None,
    epochs: int = 3,
    batch_size: int = 128,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[DomainClassifier, float]:
    """The domain network for this dataset (eval mode, on `device`) and its test accuracy on
    eval_split: read from the cache when there, else trained, measured and cached. num_classes 0
    (unlabelled data) trains the rotation task; its accuracy is the rotation accuracy."""
    task = task_for(num_classes)
    outputs = num_classes if task == CLASSES else ROTATIONS
    what = "domain classifier" if task == CLASSES else "rotation domain network"
    path = cache_path(name, fingerprint, cache_dir, task)
    if path.is_file():
        classifier, accuracy = read_classifier(path)
        if classifier.image_shape == tuple(image_shape) and classifier.num_classes == outputs:
            log(f"{what} for {name}: test accuracy {accuracy:.4f} (cached, {path})")
            return classifier.to(device), accuracy
        log(f"{what} cache {path} is for other images; retraining")

    started = time.perf_counter()
    classifier = train_classifier(
        train_split, image_shape, num_classes, device, epochs, batch_size, seed
    )
    accuracy = measure_accuracy(classifier, eval_split, device)
    seconds = time.perf_counter() - started
    recipe = {"epochs": epochs, "batch_size": batch_size, "seed": seed}
    save_classifier(classifier, accuracy, recipe, path)
    log(
        f"{what} for {name}: test accuracy {accuracy:.4f} "
        f"({len(train_split.images)} images x {epochs} epochs in {seconds:.0f} s, saved to {path})"
    )
    return classifier, accuracy


def read_classifier(path: str | Path) -> tuple[DomainClassifier, float]:
    """A cached classifier (eval mode, CPU) and its recorded test accuracy."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    classifier = DomainClassifier(
        tuple(saved["image_shape"]),
        int(saved["num_classes"]),
        int(saved["width"]),
        saved.get("task", CLASSES),
    )
    classifier.load_state_dict(saved["state_dict"])
    return classifier.eval(), float(saved["accuracy"])


def install_classifier(path: Path, content: bytes) -> None:
    """Put a classifier file received from another machine (the main process of a distributed
    run) at `path` unless one is there already; atomic like save_classifier."""
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    read_classifier(path)  # a truncated or foreign file fails here, not in the metrics


def save_classifier(
    classifier: DomainClassifier, accuracy: float, recipe: dict, path: Path
) -> None:
    """Write the classifier and its accuracy to the cache, atomically (atomic_save)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        "image_shape": list(classifier.image_shape),
        "num_classes": classifier.num_classes,
        "width": classifier.width,
        "task": classifier.task,
        "accuracy": accuracy,
        "recipe": recipe,
    }
    atomic_save(payload, path)


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity's view of a cached DomainClassifier: built by torch-fidelity itself from
    `feature_extractor_weights_path` (the cache file), fed uint8 (N, C, H, W) batches.

    Features: "features" (the 128-d penultimate layer; FID, KID, precision/recall) and "logits"
    (an Inception-Score-like use). Both float32, like Inception's, so that cached real statistics
    and fresh generated ones always share a dtype (torch-fidelity asserts it)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(
                f"feature extractor {name!r} needs feature_extractor_weights_path: the cached "
                "classifier file (bench.domain.cache_path)"
            )
        self.classifier, _ = read_classifier(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        # a CNN this small gains nothing from torch.compile but its compile time
        return False

    def forward(self, x):
        check_input(x, self.classifier.image_shape)
        features, logits = self.classifier.features_and_logits(to_input(x))
        computed = {"features": features, "logits": logits}
        return tuple(computed[name].float() for name in self.features_list)


def register_domain_extractor() -> None:
    """Register DomainFeatureExtractor under EXTRACTOR_NAME; calling it again is a no-op.

    torch-fidelity's registry refuses a second registration of a name, so check first; a class
    of the same name from a reloaded copy of this module replaces the stale one."""
    existing = FEATURE_EXTRACTORS_REGISTRY.get(EXTRACTOR_NAME)
    if existing is DomainFeatureExtractor:
        return
    if existing is not None:
        same_origin = (existing.__module__, existing.__qualname__) == (
            DomainFeatureExtractor.__module__,
            DomainFeatureExtractor.__qualname__,
        )
        if not same_origin:
            raise ValueError(f"torch-fidelity extractor name {EXTRACTOR_NAME!r} is taken")
        del FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR_NAME]
    register_feature_extractor(EXTRACTOR_NAME, DomainFeatureExtractor)


register_domain_extractor()
