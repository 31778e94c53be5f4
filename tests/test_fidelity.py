"""fidelity_metrics and feature_metrics: the same numbers as torch-fidelity's calculate_metrics,
the real side extracted once then read from the cache, the Inception path in float32 whatever
autocast the caller left on. All offline, synthetic data; where the Inception weights come from:
tests/test_inception_weights.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from bench import keys
from bench.metrics import domain, domain_network, fidelity

SPACE_KEYS = [
    keys.fid_key, keys.kid_key, keys.kid_std_key, keys.precision_key, keys.recall_key,
    keys.density_key, keys.coverage_key,
]  # fmt: skip


@pytest.fixture(scope="module")
def classifier_file(synthetic, trained):
    _, _, cache_dir, _ = trained
    return domain.cache_path(synthetic.name, synthetic.fingerprint, cache_dir)


@pytest.fixture
def fake_and_real(synthetic):
    """Two samples of the same distribution: train images as the "generated" side."""
    return synthetic.train.images[:200], synthetic.eval.images[:200]


class PlainImages(Dataset):
    """A Dataset written independently of bench.fidelity's, for the parity check."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


def domain_metrics(fake, real, weights, cache_dir, cache_name="synthetic-test-200", **kwargs):
    return fidelity.fidelity_metrics(
        fake,
        real,
        "domain",
        cache_name,
        batch_size=64,
        domain_weights=weights,
        kid_subset_size=100,
        cache_dir=cache_dir,
        **kwargs,
    )


def reference_metrics(fake, real, weights):
    """torch-fidelity's own numbers: calculate_metrics with the registered "bench-domain"
    extractor on the uint8 images, nothing cached, under bench.keys names."""
    reference = torch_fidelity.calculate_metrics(
        input1=PlainImages(fake),
        input2=PlainImages(real),
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=domain.EXTRACTOR_NAME,
        feature_extractor_weights_path=str(weights),
        kid_subset_size=100,
        batch_size=64,
        cuda=False,
        cache=False,
        verbose=False,
    )
    return {
        keys.fid_key("domain"): reference[torch_fidelity.KEY_METRIC_FID],
        keys.kid_key("domain"): reference[torch_fidelity.KEY_METRIC_KID_MEAN],
        keys.kid_std_key("domain"): reference[torch_fidelity.KEY_METRIC_KID_STD],
        keys.precision_key("domain"): reference[torch_fidelity.KEY_METRIC_PRECISION],
        keys.recall_key("domain"): reference[torch_fidelity.KEY_METRIC_RECALL],
    }


def assert_same_metrics(ours, expected):
    """The features are bit-identical (checked below) and go through torch-fidelity's own
    functions, so only float64 rounding could separate KID mean/std (relative 1e-9); FID's
    statistics are float64 here while torch-fidelity keeps the features' mean in float32
    (relative 1e-6); precision and recall are fractions of counts and must be equal."""
    # density and coverage are not torch-fidelity's (tests/test_density_coverage.py checks them)
    extra = {keys.density_key("domain"), keys.coverage_key("domain")}
    assert ours.keys() - extra == expected.keys()
    for key, value in expected.items():
        rtol = 1e-6 if key == keys.fid_key("domain") else 1e-9
        torch.testing.assert_close(ours[key], float(value), rtol=rtol, atol=1e-12, msg=key)
    for key in (keys.precision_key("domain"), keys.recall_key("domain")):
        assert ours[key] == expected[key], key


# torch-fidelity's default DataLoader starts 4 workers, more than this 2-core machine suggests
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_same_numbers_as_torch_fidelity_itself(fake_and_real, classifier_file, tmp_path):
    fake, real = fake_and_real
    expected = reference_metrics(fake, real, classifier_file)
    # first call extracts the real features, the second reads them from the cache
    for _ in range(2):
        assert_same_metrics(domain_metrics(fake, real, classifier_file, tmp_path), expected)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_features_from_one_pass_give_torch_fidelitys_features_and_numbers(
    fake_and_real, classifier_file
):
    """The evaluation's path: domain.extract (one pass: features and logits), then
    feature_metrics, against torch-fidelity extracting with its "bench-domain" extractor and
    computing the metrics itself. 200 images in batches of 64: the last batch is partial."""
    fake, real = fake_and_real
    classifier, _ = domain.read_classifier(classifier_file)
    extractor = create_feature_extractor(
        domain.EXTRACTOR_NAME,
        ["features"],
        cuda=False,
        feature_extractor_weights_path=str(classifier_file),
        verbose=False,
    )
    extracted = {}
    for which, images in (("fake", fake), ("real", real)):
        ours = domain.extract(classifier, images, batch_size=64, device="cpu")
        theirs = get_featuresdict_from_dataset(
            PlainImages(images), extractor, 64, cuda=False, save_cpu_ram=True, verbose=False
        )["features"]
        assert ours.features.dtype == theirs.dtype == torch.float32
        assert torch.equal(ours.features, theirs), which  # bit for bit
        extracted[which] = ours.features

    metrics = fidelity.feature_metrics("domain", extracted["fake"], extracted["real"], 100)
    assert_same_metrics(metrics, reference_metrics(fake, real, classifier_file))

    cheap = fidelity.feature_metrics("domain", extracted["fake"], extracted["real"], 100, prc=False)
    neighbours = ("precision", "recall", "density", "coverage")  # the k-NN metrics: prc only
    assert cheap == {k: v for k, v in metrics.items() if not any(n in k for n in neighbours)}


def test_fid_is_zero_against_itself_and_grows_with_a_shift(
    fake_and_real, classifier_file, tmp_path
):
    fake, real = fake_and_real
    itself = domain_metrics(real, real, classifier_file, tmp_path)
    same_distribution = domain_metrics(fake, real, classifier_file, tmp_path)
    shifted = domain_metrics(torch.roll(real, 7, dims=3), real, classifier_file, tmp_path)
    fid = keys.fid_key("domain")
    assert abs(itself[fid]) < 1e-6
    assert itself[keys.precision_key("domain")] == itself[keys.recall_key("domain")] == 1.0
    assert shifted[fid] > 5 * same_distribution[fid] > 0
    assert shifted[keys.kid_key("domain")] > same_distribution[keys.kid_key("domain")]


def count_images_through_the_classifier(monkeypatch) -> list[int]:
    """Batch sizes seen by every DomainClassifier's body (the features), from any path."""
    batches: list[int] = []
    features = domain.DomainClassifier.features

    def counting_features(self, x):
        batches.append(len(x))
        return features(self, x)

    monkeypatch.setattr(domain.DomainClassifier, "features", counting_features)
    return batches


def test_real_side_is_extracted_once_then_read_from_the_cache(
    synthetic, fake_and_real, classifier_file, tmp_path, monkeypatch, capfd
):
    fake, real = fake_and_real
    batches = count_images_through_the_classifier(monkeypatch)
    cache = tmp_path / fidelity.FIDELITY_CACHE_FOLDER

    first = domain_metrics(fake, real, classifier_file, tmp_path)
    assert sum(batches) == len(fake) + len(real)
    files = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    (path,) = files  # the real features, no temp file left over
    assert path.name.startswith("synthetic-test-200-")
    assert path.name.endswith(f"-{domain.EXTRACTOR_NAME}-features.pt")
    saved = torch.load(path, weights_only=True)
    assert saved.keys() == {"features"}
    assert saved["features"].shape == (len(real), domain_network.FEATURE_DIM)

    batches.clear()
    other_fake = synthetic.train.images[200:300]
    domain_metrics(other_fake, real, classifier_file, tmp_path)
    assert sum(batches) == len(other_fake)  # the generated side only
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == files
    assert capfd.readouterr() == ("", "")  # nothing printed

    # a damaged entry is extracted again (and rewritten), never trusted or fatal
    path.write_bytes(b"not a torch file")
    batches.clear()
    assert domain_metrics(fake, real, classifier_file, tmp_path) == first
    assert sum(batches) == len(fake) + len(real)
    assert torch.equal(torch.load(path, weights_only=True)["features"], saved["features"])

    # a classifier with other weights must not meet the cached features of the first one
    retrained = tmp_path / "retrained" / classifier_file.name
    retrained.parent.mkdir()
    classifier = domain.train_classifier(
        synthetic.train, synthetic.image_shape, synthetic.num_classes, "cpu", 1, 64, seed=1
    )
    domain.save_classifier(classifier, 0.0, {}, retrained)
    batches.clear()
    domain_metrics(fake, real, retrained, tmp_path)
    assert sum(batches) == len(fake) + len(real)
    assert len(list(cache.iterdir())) == 2


def test_precision_recall_can_be_left_out(fake_and_real, classifier_file, tmp_path):
    fake, real = fake_and_real
    metrics = domain_metrics(fake, real, classifier_file, tmp_path, prc=False)
    assert set(metrics) == {
        keys.fid_key("domain"),
        keys.kid_key("domain"),
        keys.kid_std_key("domain"),
    }


def test_kid_subset_size_is_clamped_to_the_samples(fake_and_real, classifier_file, tmp_path):
    fake, real = fake_and_real
    metrics = fidelity.fidelity_metrics(
        fake[:30], real, "domain", "clamp", domain_weights=classifier_file, cache_dir=tmp_path
    )
    assert all(math.isfinite(metrics[key("domain")]) for key in SPACE_KEYS)


@pytest.mark.parametrize(
    ("fake", "real", "subset"), [(30, 200, 15), (5000, 10000, 1000), (9, 9, 4)]
)
def test_kid_subsets_hold_at_most_half_of_the_smaller_side(fake, real, subset):
    assert fidelity.kid_subset(1000, torch.empty(fake, 2), torch.empty(real, 2)) == subset


def test_kid_std_measures_the_spread_of_different_subsets():
    """With subsets as large as the set every subset is the whole set: 100 identical estimates
    and a std of exactly 0. At half the set they differ."""
    torch.manual_seed(0)
    fake, real = torch.randn(60, 8), torch.randn(60, 8) + 0.3
    metrics = fidelity.feature_metrics("domain", fake, real, kid_subset_size=1000, prc=False)
    assert metrics[keys.kid_std_key("domain")] > 0


def test_precision_recall_use_equal_counts(monkeypatch):
    """More real than generated features: precision/recall see k of each (a seeded subset of the
    real side, the same for every call), FID and KID see everything."""
    seen = []
    original = fidelity.prc_features_to_metric

    def spy(fake, real, **options):
        seen.append((len(fake), len(real), real.clone()))
        return original(fake, real, **options)

    monkeypatch.setattr(fidelity, "prc_features_to_metric", spy)
    torch.manual_seed(1)
    fake, real = torch.randn(40, 8), torch.randn(150, 8)
    first = fidelity.feature_metrics("domain", fake, real)
    fidelity.feature_metrics("domain", fake, real)
    assert [s[:2] for s in seen] == [(40, 40), (40, 40)]
    torch.testing.assert_close(seen[0][2], seen[1][2])  # the same subset every time
    assert set(map(tuple, seen[0][2].tolist())) <= set(map(tuple, real.tolist()))
    # FID used every real feature: it differs from FID against the subset alone
    subset_only = fidelity.feature_metrics("domain", fake, seen[0][2], prc=False)
    assert first[keys.fid_key("domain")] != subset_only[keys.fid_key("domain")]
    fake_side, real_side = fidelity.equal_counts(torch.randn(90, 2), torch.randn(30, 2))
    assert len(fake_side) == len(real_side) == 30


def test_bad_inputs_fail_with_a_clear_message(fake_and_real, classifier_file, tmp_path):
    fake, real = fake_and_real
    with pytest.raises(ValueError, match="unknown feature space"):
        fidelity.fidelity_metrics(fake, real, "vgg", "x", domain_weights=classifier_file)
    with pytest.raises(ValueError, match="uint8"):
        domain_metrics(fake.float(), real, classifier_file, tmp_path)
    with pytest.raises(ValueError, match="at least"):
        domain_metrics(fake[:3], real, classifier_file, tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        domain_metrics(fake, real, tmp_path / "nowhere.pt", tmp_path)
    with pytest.raises(ValueError, match="needs its weights"):
        fidelity.fidelity_metrics(fake, real, "inception", "x", cache_dir=tmp_path)


def test_inception_space_runs_on_grayscale_images(synthetic, random_inception_weights, tmp_path):
    """Plumbing only: the weights are random, so the values mean nothing; they must be finite,
    under the inception keys, with the real side cached."""
    fake, real = synthetic.train.images[:16], synthetic.eval.images[:16]
    metrics = fidelity.fidelity_metrics(
        fake,
        real,
        "inception",
        "synthetic-test-16",
        batch_size=32,
        inception_weights=random_inception_weights,
        cache_dir=tmp_path,
    )
    assert set(metrics) == {key("inception") for key in SPACE_KEYS}
    assert all(math.isfinite(value) for value in metrics.values())
    assert metrics[keys.fid_key("inception")] > 0
    cached = [p.name for p in (tmp_path / fidelity.FIDELITY_CACHE_FOLDER).iterdir()]
    assert any(fidelity.INCEPTION_EXTRACTOR in name for name in cached)


def test_inception_features_are_float32_under_a_callers_bf16_autocast(
    synthetic, random_inception_weights, tmp_path
):
    """A training step's autocast left enabled around the evaluation must not reach Inception:
    the same numbers inside torch.autocast(bfloat16) as outside."""
    fake, real = synthetic.train.images[:6], synthetic.eval.images[:6]  # the fewest allowed

    def inception(cache):
        return fidelity.fidelity_metrics(
            fake, real, "inception", "synthetic-test-6", batch_size=6,
            inception_weights=random_inception_weights, cache_dir=cache, prc=False,
        )  # fmt: skip

    plain = inception(tmp_path / "plain")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
        under_autocast = inception(tmp_path / "autocast")
        with fidelity.float32_only("cpu"):
            assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    assert under_autocast == plain
