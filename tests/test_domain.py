"""The domain classifier: architecture, training on the synthetic set, the disk cache, and its
torch-fidelity feature extractor. The real-data check (Fashion-MNIST) is marked slow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from bench import keys
from bench.data import cache, load_dataset
from bench.metrics import domain, domain_network, fidelity

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def test_classifier_learns_the_synthetic_set(trained):
    classifier, accuracy, _, lines = trained
    assert accuracy > 0.9  # chance is 0.1
    assert not classifier.training
    assert len(lines) == 1 and f"test accuracy {accuracy:.4f}" in lines[0]


def test_second_call_loads_the_cache_instead_of_training(synthetic, trained, monkeypatch):
    classifier, accuracy, cache_dir, _ = trained
    path = domain.cache_path(synthetic.name, synthetic.fingerprint, cache_dir)
    assert path.name == f"domain-synthetic-{synthetic.fingerprint}-v1.pt"
    assert sorted(p.name for p in cache_dir.iterdir()) == [path.name]  # no temp file left over
    written = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the classifier is cached")

    monkeypatch.setattr(domain, "train_classifier", no_training)
    lines: list[str] = []
    loaded, loaded_accuracy = domain.load_or_train(
        synthetic.name,
        synthetic.fingerprint,
        synthetic.train,
        synthetic.eval,
        synthetic.image_shape,
        synthetic.num_classes,
        "cpu",
        cache_dir=cache_dir,
        log=lines.append,
    )
    assert loaded_accuracy == accuracy
    assert path.stat().st_mtime_ns == written
    assert not loaded.training
    expected = classifier.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert len(lines) == 1 and "cached" in lines[0]

    saved = torch.load(path, weights_only=True)
    assert saved["image_shape"] == list(synthetic.image_shape)
    assert saved["num_classes"] == synthetic.num_classes
    assert saved["accuracy"] == accuracy


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_CACHE_DIR, str(tmp_path))
    assert cache.default_cache_dir() == tmp_path
    assert domain.cache_path("mnist", "abc") == tmp_path / "domain-mnist-abc-v1.pt"


def test_training_leaves_the_callers_random_stream_alone(synthetic):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    domain.train_classifier(synthetic.eval, synthetic.image_shape, 10, "cpu", 1, 64, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_registration_is_idempotent():
    domain.register_domain_extractor()
    domain.register_domain_extractor()
    assert FEATURE_EXTRACTORS_REGISTRY[domain.EXTRACTOR_NAME] is domain.DomainFeatureExtractor


def fidelity_extractor(synthetic, trained):
    """torch-fidelity's "bench-domain" extractor, built by torch-fidelity from the cached file."""
    path = domain.cache_path(synthetic.name, synthetic.fingerprint, trained[2])
    return create_feature_extractor(
        domain.EXTRACTOR_NAME,
        ["features", "logits"],
        cuda=False,
        feature_extractor_weights_path=str(path),
        verbose=False,
    )


def test_extractor_built_by_torch_fidelity_matches_the_classifier(synthetic, trained):
    classifier = trained[0]
    extractor = fidelity_extractor(synthetic, trained)
    images = synthetic.eval.images[:10]
    with torch.no_grad():
        features, logits = extractor(images)
        x = images.float() / 255
        torch.testing.assert_close(features, classifier.features(x))
        torch.testing.assert_close(logits, classifier(x))
    assert features.dtype == torch.float32 and features.shape == (10, domain_network.FEATURE_DIM)

    with pytest.raises(ValueError, match="uint8"):
        extractor(images.float())
    with pytest.raises(ValueError, match="trained on"):
        extractor(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_one_pass_gives_the_extractors_features_and_logits(synthetic, trained):
    """domain.extract (what an evaluation runs on its samples) returns, from one pass through the
    body per image, exactly what torch-fidelity's extractor gives for features and logits."""
    classifier = trained[0]
    extractor = fidelity_extractor(synthetic, trained)
    images = synthetic.eval.images[:50]
    seen = []
    hook = classifier.body.register_forward_hook(lambda module, x, out: seen.append(len(out)))
    try:
        extracted = domain.extract(classifier, images, batch_size=16, device="cpu")
    finally:
        hook.remove()
    assert seen == [16, 16, 16, 2]  # each image once, in batches of batch_size
    with torch.no_grad():
        features, logits = zip(*(extractor(batch) for batch in images.split(16)), strict=True)
    assert torch.equal(extracted.features, torch.cat(features))
    assert torch.equal(extracted.logits, torch.cat(logits))
    assert extracted.features.dtype == extracted.logits.dtype == torch.float32
    assert extracted.logits.shape == (50, synthetic.num_classes)

    with pytest.raises(ValueError, match="uint8"):
        domain.extract(classifier, images.float(), 16, "cpu")
    with pytest.raises(ValueError, match="trained on"):
        domain.extract(classifier, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 16, "cpu")
    classifier.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            domain.extract(classifier, images, 16, "cpu")
    finally:
        classifier.eval()


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason=f"Fashion-MNIST not in {FASHION_ROOT}")
def test_fashion_mnist_classifier_and_domain_fid(tmp_path):
    """Full Fashion-MNIST train split with the default recipe: >= 90% test accuracy, and in its
    feature space real train images are far closer to the test split than uniform noise is."""
    data = load_dataset("fashion-mnist", root=FASHION_ROOT)
    started = time.perf_counter()
    _, accuracy = domain.load_or_train(
        data.name,
        data.fingerprint,
        data.train,
        data.eval,
        data.image_shape,
        data.num_classes,
        "cpu",
        cache_dir=tmp_path,
    )
    print(f"classifier: {time.perf_counter() - started:.1f} s, accuracy {accuracy:.4f}")
    assert accuracy >= 0.90

    n = 5000
    pick = torch.randperm(len(data.train.images), generator=torch.Generator().manual_seed(0))[:n]
    real = data.eval.images[:n]
    noise = torch.randint(
        0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    weights = domain.cache_path(data.name, data.fingerprint, tmp_path)
    started = time.perf_counter()
    fid = {
        which: fidelity.fidelity_metrics(
            images,
            real,
            "domain",
            f"fashion-mnist-test-{n}",
            domain_weights=weights,
            cache_dir=tmp_path,
        )[keys.fid_key("domain")]
        for which, images in (("train", data.train.images[pick]), ("noise", noise))
    }
    print(f"domain FID: {fid}, {time.perf_counter() - started:.1f} s")
    assert fid["train"] * 20 < fid["noise"]
