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
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from bench.data.cache import atomic_save, default_cache_dir
from bench.data.images import Split

CACHE_VERSION = "v1"
EXTRACTOR_NAME = "bench-domain"
FEATURE_DIM = 128
CLASSES, ROTATION = "classes", "rotation"  # the domain network's task: labels, or rotations
ROTATIONS = 4


def cache_path(
    name: str, fingerprint: str, cache_dir: str | Path | None = None, task: str = CLASSES
) -> Path:
    """Where the domain network for this exact dataset lives (also its torch-fidelity weights
    path); `name` is the dataset's cache tag (its name and preprocessing)."""
    kind = "" if task == CLASSES else f"-{task}"
    file = f"domain-{name}-{fingerprint}{kind}-{CACHE_VERSION}.pt"
    return Path(cache_dir or default_cache_dir()) / file


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # no conv bias: batch norm's shift makes it redundant
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DomainClassifier(nn.Module):
    """conv-bn-relu x2, pool, conv-bn-relu x2, pool, linear to a 128-d ReLU layer (the features),
    dropout, linear to logits. Input: float images in [0, 1], (N, C, H, W).

    Width 16 (then 32 after the first pool) is enough: 3 epochs give ~92% on Fashion-MNIST in
    under a minute on 2 CPU cores, where width 32 gains under a point for 2.7x the time."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 16,
        task: str = CLASSES,
    ):
        super().__init__()
        in_channels, height, image_width = image_shape
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.width = width
        self.task = task
        self.body = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            *_conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (height // 4) * (image_width // 4), FEATURE_DIM),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations (N, 128): the domain feature space."""
        return self.body(x)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs of one pass through the body: the logits are the head on the features."""
        features = self.features(x)
        return features, self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1], the classifier's input: the one conversion both `extract`
    and the torch-fidelity extractor use, so that their features are the same numbers."""
    return images.float().div(255.0)


def check_input(images: torch.Tensor, image_shape: tuple[int, int, int]) -> None:
    if not (torch.is_tensor(images) and images.dtype == torch.uint8):
        raise ValueError("the domain feature extractor expects uint8 image tensors")
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"images of shape {tuple(images.shape[1:])} given to a domain classifier trained on "
            f"{tuple(image_shape)}"
        )


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


def task_for(num_classes: int) -> str:
    """The domain network's task: the classes when the data has them (num_classes > 0), else the
    rotations."""
    return CLASSES if num_classes > 0 else ROTATION


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


def task_batch(
    classifier: DomainClassifier, images: torch.Tensor, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs in [0, 1], targets) of one batch of uint8 images for the network's task: the images
    and their classes, or every image in each of the four rotations and the rotation's index."""
    x = to_input(images)
    if classifier.task == CLASSES:
        return x, labels
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
    targets = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return rotated, targets


def train_classifier(
    split: Split,
    image_shape: tuple[int, int, int],
    num_classes: int,
    device: torch.device | str,
    epochs: int,
    batch_size: int,
    seed: int,
) -> DomainClassifier:
    """Adam with a one-cycle learning rate (fast convergence in few epochs), whole split on the
    device (uint8, converted per batch), reshuffled there each epoch. num_classes 0 trains the
    rotation task. Returns the classifier in eval mode."""
    device = torch.device(device)
    task = task_for(num_classes)
    images = split.images.to(device)
    labels = split.labels.to(device) if task == CLASSES else None
    batch_size = min(batch_size, len(images))
    # the last partial batch is dropped: batch norm and a one-image batch do not mix
    steps_per_epoch = len(images) // batch_size
    # Fork the global RNG so that training here (or loading from the cache instead) leaves the
    # caller's random stream, hence its models' initialisation, exactly as it was.
    rng_devices = [device.index or torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        shuffle = torch.Generator(device=device).manual_seed(seed)
        outputs = num_classes if task == CLASSES else ROTATIONS
        classifier = DomainClassifier(image_shape, outputs, task=task).to(device)
        optimizer = torch.optim.Adam(classifier.parameters())  # learning rate: the schedule's
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=3e-3, total_steps=max(1, epochs * steps_per_epoch)
        )
        classifier.train()
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=shuffle, device=device)
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                batch_labels = labels[index] if labels is not None else None
                inputs, targets = task_batch(classifier, images[index], batch_labels)
                loss = F.cross_entropy(classifier(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    return classifier.eval()


@torch.no_grad()
def measure_accuracy(
    classifier: DomainClassifier,
    split: Split,
    device: torch.device | str,
    batch_size: int = 1000,
) -> float:
    """Share of test images whose class (or, for the rotation task, rotation: each image in all
    four) the network predicts right."""
    classifier.eval()
    if classifier.task != CLASSES:
        batch_size = max(1, batch_size // ROTATIONS)  # each image goes in four times
    correct, total = 0, 0
    for i in range(0, len(split.images), batch_size):
        images = split.images[i : i + batch_size].to(device)
        labels = None
        if classifier.task == CLASSES:
            labels = split.labels[i : i + batch_size].to(device)
        inputs, targets = task_batch(classifier, images, labels)
        correct += int((classifier(inputs).argmax(1) == targets).sum())
        total += len(targets)
    return correct / total


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
