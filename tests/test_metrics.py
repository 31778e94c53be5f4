"""Closed-form checks of the harness's own metrics: interpolation, reconstruction MSE, coverage."""

from __future__ import annotations

import math

import pytest
import torch

from bench.metrics.evaluate import recon_mse
from bench.metrics.interpolation import interpolation_metrics, lerp, slerp
from bench.metrics.modes import mode_coverage as mode_coverage_3

SCALE = 1.0  # the real scale R of these hand-made feature spaces: every varied pair is kept


def mode_coverage(generated, real, num_classes):
    """(modes_covered, class_kl) of labels with nothing unrecognised (the unrecognised bin is
    empty on both sides)."""
    covered, kl, unrecognised = mode_coverage_3(generated, real, num_classes)
    assert unrecognised == 0.0
    return covered, kl


def flatten(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


def test_linear_decoder_scores_the_ideal_energy_and_evenness():
    """Features moving linearly with t: the straight even path, energy 1 and evenness 1/T."""
    torch.manual_seed(0)
    a_matrix = torch.randn(12, 5)

    def decode(z):  # linear decoder into 1x3x4 "images"
        return (z @ a_matrix.T).view(-1, 1, 3, 4)

    z_a, z_b = torch.randn(7, 5), torch.randn(7, 5)
    steps = 8
    result = interpolation_metrics(decode, flatten, z_a, z_b, steps, SCALE, "lerp")
    assert result.energy == pytest.approx(1.0, rel=1e-6)
    assert result.evenness == pytest.approx(1 / steps, rel=1e-5)
    assert result.degenerate == 0.0
    assert result.frames.shape == (7, steps + 1, 1, 3, 4)
    torch.testing.assert_close(result.frames[:, 0], decode(z_a))
    torch.testing.assert_close(result.frames[:, -1], decode(z_b), rtol=1e-5, atol=1e-5)


def test_slerp_on_a_circle_is_even_but_not_straight():
    # Two orthogonal vectors of norm 2: the path is a quarter circle of radius 2.
    z_a = torch.tensor([[2.0, 0.0, 0.0]])
    z_b = torch.tensor([[0.0, 2.0, 0.0]])
    steps = 6
    result = interpolation_metrics(lambda z: z.view(-1, 1, 1, 3), flatten, z_a, z_b, steps, SCALE)
    chord = 2 * 2 * math.sin((math.pi / 2) / (2 * steps))  # one step
    endpoints = 2 * math.sqrt(2)  # the quarter circle's chord
    # T * sum_t s_t^2 / D^2 with T equal steps: (T * chord / D)^2 = (arc / chord)^2 > 1
    assert result.energy == pytest.approx((steps * chord / endpoints) ** 2, rel=1e-5)
    assert result.energy > 1.0
    assert result.evenness == pytest.approx(1 / steps, rel=1e-5)


def test_step_discontinuity_is_a_jump():
    c = torch.tensor([3.0, 4.0])

    def decode(z):  # 0 below 0.5, c above: all the change happens in one step
        return ((z[:, :1] > 0.5).float() * c).view(-1, 1, 1, 2)

    steps = 5  # t = 0, .2, .4, .6, .8, 1: the jump is between .4 and .6
    z_a, z_b = torch.zeros(3, 1), torch.ones(3, 1)
    result = interpolation_metrics(decode, flatten, z_a, z_b, steps, SCALE, "lerp")
    assert result.evenness == pytest.approx(1.0)
    assert result.energy == pytest.approx(steps)  # T * |c|^2 / |c|^2


def collapse_generators(dim: int = 4, features: int = 6):
    """decoders (z -> 1x1xF 'images') of a constant generator, a two-point generator that jumps
    between two images by the sign of z_0, and a linear one."""
    torch.manual_seed(5)
    a_matrix, image_a, image_b = (
        torch.randn(features, dim),
        torch.randn(features),
        torch.randn(features),
    )
    return {
        "constant": lambda z: image_a.expand(len(z), -1).reshape(-1, 1, 1, features),
        "two-point": lambda z: torch.where(z[:, :1] > 0, image_a, image_b).view(-1, 1, 1, features),
        "linear": lambda z: (z @ a_matrix.T).view(-1, 1, 1, features),
    }


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_no_collapsed_generator_beats_the_linear_one(method):
    """A constant generator has no path to measure (every pair degenerate: no score, so nothing
    to win), a two-point generator jumps (energy T, evenness 1), the linear one is ideal (energy
    1 for lerp, evenness 1/T); the old path-length metric ranked the constant generator first."""
    torch.manual_seed(6)
    z_a, z_b = torch.randn(64, 4), torch.randn(64, 4)
    steps = 10
    scores = {
        name: interpolation_metrics(decode, flatten, z_a, z_b, steps, SCALE, method)
        for name, decode in collapse_generators().items()
    }
    linear, jump, constant = scores["linear"], scores["two-point"], scores["constant"]
    assert constant.degenerate == 1.0 and constant.energy is None and constant.evenness is None
    assert linear.degenerate == 0.0
    # pairs on the same side of z_0 = 0 share their image: left out and counted
    same_side = ((z_a[:, 0] > 0) == (z_b[:, 0] > 0)).double().mean().item()
    assert jump.degenerate == pytest.approx(same_side)
    assert jump.energy == pytest.approx(steps) and jump.evenness == pytest.approx(1.0)
    assert linear.energy < jump.energy and linear.evenness < jump.evenness
    if method == "lerp":
        assert linear.energy == pytest.approx(1.0) and linear.evenness == pytest.approx(1 / steps)


def test_path_energy_is_at_least_one_and_one_only_for_even_straight_paths():
    from bench.metrics.interpolation import path_scores

    torch.manual_seed(7)
    t = torch.linspace(0, 1, 9).view(1, -1, 1)
    a, b = torch.randn(5, 1, 3), torch.randn(5, 1, 3)
    straight = a + t * (b - a)
    uneven = a + t.pow(2) * (b - a)  # straight but accelerating
    detour = straight + torch.sin(math.pi * t) * torch.randn(5, 1, 3)  # same ends, bent
    energy = {
        name: path_scores(f, SCALE)[0]
        for name, f in (("straight", straight), ("uneven", uneven), ("detour", detour))
    }
    torch.testing.assert_close(energy["straight"], torch.ones(5, dtype=torch.float64))
    assert (energy["uneven"] > 1.01).all() and (energy["detour"] > 1.01).all()


def test_interpolations_hit_their_end_points():
    torch.manual_seed(1)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    t = torch.linspace(0, 1, 5)
    for interp in (lerp, slerp):
        path = interp(a, b, t)
        torch.testing.assert_close(path[:, 0], a)
        torch.testing.assert_close(path[:, -1], b, rtol=1e-5, atol=1e-5)
    # slerp between parallel vectors falls back to lerp
    torch.testing.assert_close(slerp(a, 2 * a, t), lerp(a, 2 * a, t))


class FakeAutoencoder:
    has_encoder = True

    def __init__(self, transform):
        self.transform = transform

    def encode(self, x):
        return x

    def decode(self, z):
        return self.transform(z)


def test_recon_mse_is_zero_for_an_identity_autoencoder():
    x = torch.rand(10, 1, 28, 28) * 2 - 1
    assert recon_mse(FakeAutoencoder(lambda z: z), x, batch_size=3) == 0.0


def test_recon_mse_matches_a_hand_computation():
    torch.manual_seed(2)
    x = torch.rand(10, 1, 4, 4) * 2 - 1
    model = FakeAutoencoder(lambda z: torch.full_like(z, -1.0))  # reconstructs black, 0 in [0, 1]
    expected = ((x + 1) / 2).pow(2).mean().item()  # per pixel on the [0, 1] scale
    assert recon_mse(model, x, batch_size=4) == pytest.approx(expected, rel=1e-6)


def test_mode_coverage_of_a_perfect_generator():
    real = torch.arange(10).repeat(50)
    covered, kl = mode_coverage(real.clone(), real, 10)
    assert covered == 10
    assert kl == pytest.approx(0.0, abs=1e-12)


def test_mode_coverage_detects_a_single_class_generator():
    real = torch.arange(10).repeat(50)
    collapsed = torch.full((500,), 3)
    covered, kl = mode_coverage(collapsed, real, 10)
    assert covered == 1
    # p_gen smoothed by half a count per class: 9 classes at 0.5 / 505, class 3 at 500.5 / 505
    p_missing, p_three = 0.5 / 505, 500.5 / 505
    expected = 0.9 * math.log(0.1 / p_missing) + 0.1 * math.log(0.1 / p_three)
    assert kl == pytest.approx(expected, rel=1e-9)


def test_mode_coverage_threshold_is_half_the_real_share():
    real = torch.arange(4).repeat(25)  # 25% each
    generated = torch.tensor([0] * 40 + [1] * 40 + [2] * 13 + [3] * 7)  # 13% >= 12.5%, 7% < it
    covered, _ = mode_coverage(generated, real, 4)
    assert covered == 3


class ReplayGenerator:
    """A 'model' without an encoder whose samples are given real images (model range)."""

    has_encoder = False
    has_discriminator = False
    latent_dim = 2
    device = torch.device("cpu")

    def __init__(self, images: torch.Tensor):
        self.images = images

    def prior(self, n, generator=None):
        return torch.randn(n, self.latent_dim, generator=generator)

    def decode(self, z):
        index = (z[:, 0].abs() * 1000).long() % len(self.images)
        return self.images[index]

    def sample(self, n, generator=None):
        return self.decode(self.prior(n, generator))


def test_evaluation_detects_a_generator_that_emits_one_class(synthetic_evaluator):
    from bench import keys
    from bench.data import to_model_range
    from bench.metrics.evaluate import evaluate

    data = synthetic_evaluator.data
    assert synthetic_evaluator.classifier_accuracy > 0.9
    real = to_model_range(data.eval.images)
    collapsed = to_model_range(data.train.images[data.train.labels == 3])
    good, _ = evaluate(ReplayGenerator(to_model_range(data.train.images)), synthetic_evaluator, 0)
    bad, _ = evaluate(ReplayGenerator(collapsed), synthetic_evaluator, 0)
    assert good[keys.MODES_COVERED] == 10
    assert bad[keys.MODES_COVERED] == 1
    assert bad[keys.CLASS_KL] > 1.0 > 0.1 > good[keys.CLASS_KL]
    assert bad[keys.fid_key("domain")] > 10 * good[keys.fid_key("domain")]
    assert bad[keys.recall_key("domain")] < good[keys.recall_key("domain")]
    assert len(real) == 400


def test_evaluation_without_an_encoder_skips_encoder_metrics(synthetic_evaluator):
    from bench import keys
    from bench.data import to_model_range
    from bench.metrics.evaluate import evaluate

    model = ReplayGenerator(to_model_range(synthetic_evaluator.data.train.images))
    metrics, images = evaluate(model, synthetic_evaluator, seed=0)
    assert keys.RECON_MSE not in metrics
    assert keys.interp_degenerate_key("encoded") not in metrics
    assert keys.interp_energy_key("prior") in metrics
    assert keys.fid_key("inception") not in metrics  # not asked for in this configuration
    assert all(math.isfinite(v) for v in metrics.values())
    strips = images["interpolation"]
    assert strips.shape[1] == synthetic_evaluator.config.interp_steps + 1


@pytest.fixture
def fresh_evaluator(synthetic_evaluator):
    """The suite's evaluator as a later cell or run meets it: the real side's features in the
    disk cache (warmed here), nothing held in memory."""
    import dataclasses

    assert synthetic_evaluator.real_domain_features is not None  # extracted and cached once
    return dataclasses.replace(synthetic_evaluator)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_each_generated_image_goes_through_the_domain_classifier_once(fresh_evaluator):
    """One evaluation runs the classifier once per sample (real side cached), and both the domain
    metrics and the mode coverage come from that pass: the metrics are torch-fidelity's
    calculate_metrics("bench-domain") numbers for the same uint8 images, the classes those of
    the classifier on them."""
    import torch_fidelity

    from bench import keys
    from bench.data import to_model_range
    from bench.metrics import domain
    from bench.metrics.evaluate import evaluate, generate, to_uint8
    from bench.metrics.fidelity import UInt8Images

    evaluator = fresh_evaluator
    config, data = evaluator.config, evaluator.data
    model = ReplayGenerator(to_model_range(data.train.images))
    inputs: list[torch.Tensor] = []
    hook = evaluator.classifier.body.register_forward_pre_hook(
        lambda module, args: inputs.append(args[0].clone())
    )
    try:
        cheap, _ = evaluate(model, evaluator, seed=0, cheap=True)
        seen_cheap = torch.cat(inputs)
        inputs.clear()
        full, _ = evaluate(model, evaluator, seed=0)
        seen_full = sum(len(x) for x in inputs)
    finally:
        hook.remove()

    fake = to_uint8(generate(model, config.num_samples, config.batch_size, seed=0))
    # each generated image exactly once, in order; no real image (read from the disk cache)
    assert torch.equal(seen_cheap, domain.to_input(fake))
    # the full evaluation adds only the interpolation frames (prior pairs: no encoder here)
    assert seen_full == config.num_samples + config.interp_pairs * (config.interp_steps + 1)

    from bench.metrics import modes

    with torch.no_grad():
        features, logits = evaluator.classifier.features_and_logits(domain.to_input(fake))
        real = evaluator.classifier.features_and_logits(domain.to_input(data.eval.images))
    expected = modes.mode_metrics(
        logits, features, modes.real_reference(real[1], real[0]), data.num_classes
    )
    for metrics in (cheap, full):
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value, rel=1e-6), key

    reference = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake, 1),
        input2=UInt8Images(data.eval.images, 1),
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=domain.EXTRACTOR_NAME,
        feature_extractor_weights_path=str(evaluator.classifier_path),
        kid_subset_size=min(config.num_samples, len(data.eval.images)) // 2,
        batch_size=config.batch_size,
        cuda=False,
        cache=False,
        verbose=False,
    )
    expected = {
        keys.fid_key("domain"): reference[torch_fidelity.KEY_METRIC_FID],
        keys.kid_key("domain"): reference[torch_fidelity.KEY_METRIC_KID_MEAN],
        keys.kid_std_key("domain"): reference[torch_fidelity.KEY_METRIC_KID_STD],
        keys.precision_key("domain"): reference[torch_fidelity.KEY_METRIC_PRECISION],
        keys.recall_key("domain"): reference[torch_fidelity.KEY_METRIC_RECALL],
    }
    # same features, same torch-fidelity functions: equal up to float64 rounding (rel 1e-9), FID
    # up to rel 1e-6 (its statistics are float64 here, torch-fidelity's feature mean float32);
    # precision and recall (fractions of counts) exactly
    for key, value in expected.items():
        rel = 1e-6 if key == keys.fid_key("domain") else 1e-9
        assert full[key] == pytest.approx(value, rel=rel, abs=1e-12), key
        if key in (keys.fid_key("domain"), keys.kid_key("domain"), keys.kid_std_key("domain")):
            assert cheap[key] == full[key], key
        else:
            assert key not in cheap, key
    assert full[keys.precision_key("domain")] == expected[keys.precision_key("domain")]
    assert full[keys.recall_key("domain")] == expected[keys.recall_key("domain")]


class SequentialReplay(ReplayGenerator):
    """Samples are the given images in order, each once: a generator whose distribution is
    exactly the evaluation split's."""

    def __init__(self, images: torch.Tensor):
        super().__init__(images)
        self.cursor = 0

    def sample(self, n, generator=None):
        images = self.images[self.cursor : self.cursor + n]
        self.cursor += n
        return images


def test_real_images_as_samples_cover_every_mode_with_zero_class_kl(synthetic_evaluator):
    """Both class histograms come from the same classifier: the evaluation images themselves,
    as samples, cover every mode and have class_kl ~ 0 (only the half-count smoothing is left),
    whatever the classifier's errors. Against ground-truth labels, its errors would show up as a
    KL above zero for a perfect generator."""
    from bench import keys
    from bench.data import to_model_range
    from bench.metrics.evaluate import evaluate

    data = synthetic_evaluator.data
    assert synthetic_evaluator.config.num_samples == len(data.eval.images)
    model = SequentialReplay(to_model_range(data.eval.images))
    metrics, _ = evaluate(model, synthetic_evaluator, seed=0, cheap=True)
    assert metrics[keys.MODES_COVERED] == data.num_classes
    # not exactly 0: as samples, the evaluation images sit at distance 0 from the real set, so
    # none fails the distance test, where the calibration (leave-one-out) lets ~2.5% fail it
    assert metrics[keys.CLASS_KL] < 0.02
    predicted = synthetic_evaluator.real_domain_logits.argmax(1)
    assert len(predicted) == len(data.eval.images)
    _, kl_truth = mode_coverage(predicted, data.eval.labels, data.num_classes)
    if not torch.equal(predicted.bincount(minlength=10), data.eval.labels.bincount(minlength=10)):
        assert kl_truth > 0  # the old definition charged the classifier's errors to the model


class ConstantGenerator(ReplayGenerator):
    def decode(self, z):
        return self.images[:1].expand(len(z), -1, -1, -1)


def test_a_constant_generator_wins_no_interpolation_metric(synthetic_evaluator):
    from bench import keys
    from bench.data import to_model_range
    from bench.metrics.evaluate import evaluate

    data = synthetic_evaluator.data
    constant, _ = evaluate(
        ConstantGenerator(to_model_range(data.train.images)), synthetic_evaluator, seed=0
    )
    assert constant[keys.interp_degenerate_key("prior")] == 1.0
    assert keys.interp_energy_key("prior") not in constant
    assert keys.interp_evenness_key("prior") not in constant
    varied, _ = evaluate(
        ReplayGenerator(to_model_range(data.train.images)), synthetic_evaluator, seed=0
    )
    assert varied[keys.interp_energy_key("prior")] >= 1.0


def test_prepare_trains_the_classifier_on_the_suites_own_splits(tmp_path):
    """With limits set, prepare reloads the whole dataset for the domain classifier: the suite's
    own train_split and eval_split, not a hard-coded train / test."""
    from bench.data import load_dataset
    from bench.data.config import DatasetConfig
    from bench.metrics import domain
    from bench.metrics.evaluate import prepare
    from bench.metrics.settings import EvaluationConfig

    config = DatasetConfig(
        name="synthetic", train_split="test", eval_split="train", train_limit=256, eval_limit=64
    )
    data = load_dataset(
        "synthetic", train_split="test", eval_split="train", train_limit=256, eval_limit=64
    )
    settings = EvaluationConfig(num_samples=64, batch_size=64, feature_extractors=["domain"])
    evaluator = prepare(data, config, settings, torch.device("cpu"), cache_dir=tmp_path)
    full = load_dataset("synthetic", train_split="test", eval_split="train")
    swapped = load_dataset("synthetic", train_split="train", eval_split="test")
    assert full.fingerprint != swapped.fingerprint
    expected = domain.cache_path(full.cache_tag, full.fingerprint, tmp_path)
    assert evaluator.classifier_path == expected
