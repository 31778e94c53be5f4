"""Shared fixtures: a tiny synthetic suite written to a temp folder and a temp MLflow store."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.device import ENV as DEVICE_ENV
from tests.tiny_suites import tiny_suite


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="device of the tests marked `device` (cpu, cuda, cuda:N); the others use the CPU",
    )


def pytest_configure(config):
    device = config.getoption("--device")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError(f"--device {device}: torch sees no CUDA device here")
    os.environ[DEVICE_ENV] = device


TINY_SUITE = tiny_suite(
    "tiny",
    top="description: every variant, a handful of steps on synthetic data\n",
    budget="  n_critic: 2\n",
)


@pytest.fixture
def write_suite(tmp_path: Path):
    """write_suite(text=TINY_SUITE, name="suite.yaml") -> path of the written file."""

    def write(text: str = TINY_SUITE, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(autouse=True, scope="session")
def isolated_working_directory(tmp_path_factory):
    """Run every test in a scratch folder, so the default store (./mlflow.db), checkpoints
    (./.bench) and reports (./reports) never land in the checkout."""
    import os

    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Keep the domain classifier and torch-fidelity caches out of the user's ~/.cache; shared by
    the whole session so the synthetic classifier is trained once."""
    import os

    cache = tmp_path_factory.mktemp("bench-cache")
    previous = os.environ.get("BENCH_CACHE_DIR")
    os.environ["BENCH_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("BENCH_CACHE_DIR", None)
    else:
        os.environ["BENCH_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def synthetic():
    """The synthetic 10-class set, 1024 train / 512 eval images."""
    from bench.data import load_dataset

    return load_dataset("synthetic", train_limit=1024, eval_limit=512)


@pytest.fixture(scope="session")
def trained(synthetic, tmp_path_factory):
    """One domain classifier trained on `synthetic` into a fresh cache folder:
    (classifier, accuracy, cache folder, logged lines)."""
    from bench.metrics import domain

    cache_dir = tmp_path_factory.mktemp("classifier")
    lines: list[str] = []
    classifier, accuracy = domain.load_or_train(
        synthetic.name,
        synthetic.fingerprint,
        synthetic.train,
        synthetic.eval,
        synthetic.image_shape,
        synthetic.num_classes,
        "cpu",
        cache_dir=cache_dir,
        epochs=2,
        batch_size=32,
        log=lines.append,
    )
    return classifier, accuracy, cache_dir, lines


@pytest.fixture(scope="session")
def synthetic_evaluator():
    """An evaluator of the synthetic dataset (its domain classifier trained once per session)."""
    import torch

    from bench.data import load_dataset
    from bench.data.config import DatasetConfig
    from bench.metrics.evaluate import prepare
    from bench.metrics.settings import EvaluationConfig

    data = load_dataset("synthetic", train_limit=1024, eval_limit=400)
    # the fake models here have no batch norm to recalibrate
    config = EvaluationConfig(
        num_samples=400,
        batch_size=200,
        feature_extractors=["domain"],
        interp_pairs=4,
        batch_norm="running",
    )
    return prepare(data, DatasetConfig(name="synthetic"), config, torch.device("cpu"), log=print)


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory):
    """torch-fidelity's InceptionV3 architecture with RANDOM weights, saved as the plain state
    dict its loader reads (the Inception path's plumbing without the real network). Convolutions
    get He initialisation so that the features do not collapse to a constant."""
    import torch

    from bench.metrics import inception_weights

    generator = torch.Generator().manual_seed(0)
    state = inception_weights.extractor_skeleton()
    for name, tensor in state.items():
        if name.endswith("conv.weight"):
            torch.nn.init.kaiming_normal_(tensor, nonlinearity="relu", generator=generator)
    path = tmp_path_factory.mktemp("inception") / inception_weights.HUB_FILE
    torch.save(state, path)
    return path
