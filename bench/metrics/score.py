"""`bench score REAL FAKE`: the harness's sample metrics for images from any model.

REAL and FAKE are each an image folder (flat, or one subfolder per class: bench/data/image_files.py)
or an .npz file (its array `x`, `images` or `x_test`, or its only array; uint8, (N, H, W[, C])).
Both are preprocessed alike (centre crop, resize, channels) and must end at the same shape.

The feature space is a run's domain space: the domain network of the dataset named with
`dataset` (the very network, from the same cache, that a suite on that dataset uses), or one
trained on REAL itself (`train_domain`): a classifier when REAL has class folders or labels, the
rotation network otherwise, trained on a seeded 90% of REAL and measured on the rest; FAKE is then
scored against that held-out 10% only, never against images the feature network learned. The
`*_inception` metrics come too (unless `inception=False`), with the weights a run would use
(bench/metrics/inception_weights.py), and where they came from. Every metric has the name a run
logs it under (bench/keys.py), so a score sits beside a run in the same table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from bench import keys
from bench.data.cache import default_cache_dir
from bench.data.config import DATASETS
from bench.data.datasets import load_dataset, split_pool
from bench.data.image_files import (
    Decoded,
    ImageFileError,
    apply_in_chunks,
    decoded,
    images_from_array,
    list_folder,
    open_npz,
)
from bench.data.images import Split
from bench.data.preprocess import Preprocessing
from bench.metrics import domain, fidelity, inception_weights, modes
from bench.metrics.evaluate import KID_SUBSET_SIZE
from bench.metrics.settings import ScoreArgumentError
from bench.metrics.table import metric_specs

NPZ_ARRAYS = ("x", "images", "x_test")
SCORE_SPLIT_SEED = 0
SCORE_HELD_OUT = 0.1


def read_image_set(
    path: str | Path,
    preprocessing: Preprocessing,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Decoded:
    """The images (and classes, when a folder has class subfolders or an .npz has `y`) of a
    folder or an .npz file, preprocessed."""
    path = Path(path).expanduser()
    if path.suffix == ".npz":
        return _read_npz_set(path, preprocessing)
    if not path.is_dir():
        raise ImageFileError(f"{path} is neither a folder of images nor an .npz file")
    return decoded(list_folder(path), preprocessing, cache_dir, progress)


def _read_npz_set(path: Path, preprocessing: Preprocessing) -> Decoded:
    with open_npz(path) as arrays:
        names = [n for n in NPZ_ARRAYS if n in arrays.files]
        if not names and len(arrays.files) == 1:
            names = arrays.files
        if not names:
            raise ImageFileError(
                f"{path} has arrays {sorted(arrays.files)}; name the images one of "
                f"{', '.join(NPZ_ARRAYS)} (or store only them)"
            )
        images = images_from_array(arrays[names[0]], f"{path}: {names[0]}")
        labels = None
        label_name = {"x": "y", "x_test": "y_test"}.get(names[0])
        if label_name in arrays.files:
            y = arrays[label_name]
            if y.ndim == 1 and len(y) == len(images) and np.issubdtype(y.dtype, np.integer):
                labels = torch.from_numpy(y.astype(np.int64))
    return Decoded(apply_in_chunks(preprocessing, images), labels)


def domain_network(
    real: Decoded,
    real_path: str | Path,
    dataset: str | None,
    data_root: str | None,
    preprocessing: Preprocessing,
    device: torch.device,
    cache_dir: Path,
    log: Callable[[str], None],
) -> tuple[domain.DomainClassifier, str, Decoded]:
    """The domain network to score in, words saying which one it is, and the real images to
    score against: all of REAL for a dataset's network, the held-out part of REAL that a network
    trained on REAL never saw."""
    shape = tuple(real.images.shape[1:])
    if dataset is not None:
        data = load_dataset(dataset, cli_root=data_root, preprocessing=preprocessing)
        if data.image_shape != shape:
            raise ImageFileError(
                f"the images are {_shape(shape)} but the {dataset} domain network takes "
                f"{_shape(data.image_shape)}; pass --image-size/--crop/--channels to match, or "
                "--train-domain"
            )
        network, accuracy = domain.load_or_train(
            data.cache_tag,
            data.fingerprint,
            data.train,
            data.eval,
            data.image_shape,
            data.num_classes,
            device,
            cache_dir=cache_dir,
            log=log,
        )
        return network, f"the {dataset} domain network (test accuracy {accuracy:.4f})", real
    train, held_out = split_pool(real, SCORE_HELD_OUT, SCORE_SPLIT_SEED)
    num_classes = int(real.labels.max()) + 1 if real.labels is not None else 0
    digest = hashlib.sha256(real.images.numpy().tobytes())
    if real.labels is not None:
        digest.update(real.labels.numpy().tobytes())
    name = f"score-{Path(real_path).stem or 'real'}" + (
        f"-{preprocessing.tag}" if preprocessing.tag else ""
    )
    network, accuracy = domain.load_or_train(
        name,
        digest.hexdigest()[:16],
        Split(train.images, train.labels),
        Split(held_out.images, held_out.labels),
        shape,
        num_classes,
        device,
        cache_dir=cache_dir,
        log=log,
    )
    which = (
        f"a {network.task} network trained on {len(train.images)} images of REAL (held-out "
        f"accuracy {accuracy:.4f}), scored against the {len(held_out.images)} held-out ones"
    )
    return network, which, Decoded(held_out.images, held_out.labels)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def score(
    real: Decoded,
    fake: Decoded,
    network: domain.DomainClassifier,
    device: torch.device,
    batch_size: int = 500,
    inception_weights: Path | None = None,
    cache_dir: Path | None = None,
) -> dict[str, float]:
    """The metrics of FAKE against REAL under the runs' keys: domain FID, KID, coverage,
    precision, recall and density; confident mode coverage, class KL and the unrecognised share
    when the network predicts classes (the threshold calibrated on REAL); the Inception ones when
    weights are given."""
    if real.images.shape[1:] != fake.images.shape[1:]:
        raise ImageFileError(
            f"REAL images are {_shape(tuple(real.images.shape[1:]))} and FAKE images "
            f"{_shape(tuple(fake.images.shape[1:]))}; bring both to one size with --image-size "
            "(and --crop, --channels)"
        )
    network = network.to(device).eval()
    real_out = domain.extract(network, real.images, batch_size, device)
    fake_out = domain.extract(network, fake.images, batch_size, device)
    metrics = fidelity.feature_metrics(
        "domain", fake_out.features, real_out.features, KID_SUBSET_SIZE, prc=True
    )
    if network.task == domain.CLASSES:
        reference = modes.real_reference(real_out.logits, real_out.features)
        metrics |= modes.mode_metrics(
            fake_out.logits, fake_out.features, reference, network.num_classes
        )
    if inception_weights is not None:
        real_name = "score-" + hashlib.sha256(real.images.numpy().tobytes()).hexdigest()[:12]
        metrics |= fidelity.fidelity_metrics(
            fake.images,
            real.images,
            "inception",
            real_name,
            batch_size=batch_size,
            device=device,
            inception_weights=inception_weights,
            kid_subset_size=KID_SUBSET_SIZE,
            cache_dir=cache_dir or default_cache_dir(),
        )
    return metrics


def native_channels(path: str | Path, sample: int = 16) -> int:
    """1 when a set's images are single-channel (grey, or grey with alpha: the first `sample`
    files of a folder, or the array of an .npz), else 3."""
    path = Path(path).expanduser()
    if path.suffix == ".npz":
        with open_npz(path) as arrays:
            names = [n for n in NPZ_ARRAYS if n in arrays.files] or arrays.files
            shape = arrays[names[0]].shape
        return 1 if len(shape) == 3 or shape[-1] == 1 else 3
    if not path.is_dir():
        raise ImageFileError(f"{path} is neither a folder of images nor an .npz file")
    paths = list_folder(path).paths[:sample]
    grey = [decode_image(read_file(str(p)), mode=ImageReadMode.UNCHANGED).shape[0] <= 2
            for p in paths]  # fmt: skip
    return 1 if grey and all(grey) else 3


def network_channels(
    dataset: str, data_root: str | None, preprocessing: Preprocessing, sets: tuple[str, ...]
) -> Preprocessing:
    """`bench score --dataset NAME` without --channels: read the sets with the channel count of
    that dataset's domain network. Single-channel files against an RGB network are widened; colour
    files against a greyscale network are a mismatch, one line saying how to convert them."""
    data = load_dataset(dataset, cli_root=data_root, preprocessing=preprocessing)
    wanted = data.image_shape[0]
    if wanted == 1:
        for path in sets:
            if native_channels(path) != 1:
                raise ImageFileError(
                    f"{path} holds colour images but the {dataset} domain network takes "
                    f"greyscale {_shape(data.image_shape)}; pass --channels 1 to convert them, "
                    "or score with --train-domain"
                )
    return Preprocessing(preprocessing.crop, preprocessing.image_size, wanted)


def score_paths(
    real: str,
    fake: str,
    dataset: str | None,
    train_domain: bool,
    data_root: str | None,
    preprocessing: Preprocessing,
    channels_free: bool,
    device: torch.device,
    batch_size: int,
    weights_file: str | None,
    cache_dir: Path,
    log: Callable[[str], None],
    inception: bool = True,
) -> tuple[dict[str, float], str, dict[str, str]]:
    """`bench score`: the metrics of the set at `fake` against the one at `real`, a line saying
    what was scored in which feature space (`dataset`'s domain network, or one trained on `real`:
    `train_domain`), and the runs' Inception tags: where the weights came from, or why there are
    no Inception metrics. With `dataset` and no channels given (`channels_free`), the sets are
    read with that dataset's network's channels."""
    if (dataset is None) == (not train_domain):
        raise ScoreArgumentError("pass either --dataset NAME or --train-domain (the feature space)")
    if dataset is not None and dataset not in DATASETS:
        raise ScoreArgumentError(
            f"--dataset {dataset!r} is unknown; use one of {', '.join(DATASETS)}"
        )
    if weights_file is not None and not inception:
        raise ScoreArgumentError("--inception-weights and --no-inception contradict each other")
    if weights_file is not None and not Path(weights_file).expanduser().is_file():
        raise ScoreArgumentError(f"--inception-weights {weights_file} does not exist")
    if dataset is not None and channels_free:
        preprocessing = network_channels(dataset, data_root, preprocessing, (real, fake))
    real_set = read_image_set(real, preprocessing, cache_dir)
    fake_set = read_image_set(fake, preprocessing, cache_dir)
    network, which, reference = domain_network(
        real_set, real, dataset, data_root, preprocessing, device, cache_dir, log
    )
    weights, tags = None, {}
    if inception:
        found = inception_weights.resolve(weights_file, "--inception-weights", cache_dir, log)
        if found is None:
            tags = {keys.TAG_INCEPTION_SKIPPED: inception_weights.skip_reason()}
            log(tags[keys.TAG_INCEPTION_SKIPPED])
        else:
            weights, tags = found.path, {keys.TAG_INCEPTION_SOURCE: found.source}
    metrics = score(reference, fake_set, network, device, batch_size, weights, cache_dir)
    header = (
        f"{fake} ({len(fake_set.images)} images) against {real} ({len(real_set.images)} images), "
        f"in the feature space of {which}:"
    )
    return in_table_order(metrics), header, tags


def in_table_order(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics in the metric table's order (bench/metrics/table.py), any others after."""
    order = [m.key for m in metric_specs() if m.key in metrics]
    return {key: metrics[key] for key in order + sorted(set(metrics) - set(order))}
