"""Closed-form checks of the harness's own metrics: interpolation, reconstruction MSE, coverage."""

from __future__ import annotations

import math

import pytest
import torch

from bench.evaluate import mode_coverage, recon_mse
from bench.interpolation import interpolation_metrics, lerp, slerp


def flatten(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


def test_linear_decoder_gives_the_squared_path_length_and_perfect_evenness():
    torch.manual_seed(0)
    a_matrix = torch.randn(12, 5)

    def decode(z):  # linear decoder into 1x3x4 "images"
        return (z @ a_matrix.T).view(-1, 1, 3, 4)

    z_a, z_b = torch.randn(7, 5), torch.randn(7, 5)
    steps = 8
    ppl, evenness, frames = interpolation_metrics(decode, flatten, z_a, z_b, steps, "lerp")
    expected = ((z_b - z_a) @ a_matrix.T).pow(2).sum(1).mean().item()  # ||A(z_b - z_a)||^2
    assert ppl == pytest.approx(expected, rel=1e-5)
    assert evenness == pytest.approx(1 / steps, rel=1e-5)
    assert frames.shape == (7, steps + 1, 1, 3, 4)
    torch.testing.assert_close(frames[:, 0], decode(z_a))
    torch.testing.assert_close(frames[:, -1], decode(z_b), rtol=1e-5, atol=1e-5)


def test_slerp_on_a_circle_has_equal_chords():
    # Two orthogonal vectors of norm 2: the path is a quarter circle of radius 2.
    z_a = torch.tensor([[2.0, 0.0, 0.0]])
    z_b = torch.tensor([[0.0, 2.0, 0.0]])
    steps = 6
    ppl, evenness, _ = interpolation_metrics(
        lambda z: z.view(-1, 1, 1, 3), flatten, z_a, z_b, steps, "slerp"
    )
    chord = 2 * 2 * math.sin((math.pi / 2) / (2 * steps))
    assert ppl == pytest.approx(chord**2 * steps**2, rel=1e-5)
    assert evenness == pytest.approx(1 / steps, rel=1e-5)


def test_step_discontinuity_is_a_jump():
    c = torch.tensor([3.0, 4.0])  # ||c||^2 = 25

    def decode(z):  # 0 below 0.5, c above: all the change happens in one step
        return ((z[:, :1] > 0.5).float() * c).view(-1, 1, 1, 2)

    steps = 5  # t = 0, .2, .4, .6, .8, 1: the jump is between .4 and .6
    z_a, z_b = torch.zeros(3, 1), torch.ones(3, 1)
    ppl, evenness, _ = interpolation_metrics(decode, flatten, z_a, z_b, steps, "lerp")
    assert evenness == pytest.approx(1.0)
    assert ppl == pytest.approx(25.0 * steps)  # mean(d_t) * T^2 = (25 / T) * T^2


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
    # p_gen smoothed by half a count: 9 classes at 0.5 / 505, class 3 at 500.5 / 505
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


@pytest.fixture(scope="module")
def synthetic_evaluator():
    from bench.data import load_dataset
    from bench.evaluate import prepare
    from bench.suite import DatasetConfig, EvaluationConfig

    data = load_dataset("synthetic", train_limit=1024, eval_limit=400)
    config = EvaluationConfig(
        num_samples=400, batch_size=200, feature_extractors=["domain"], interp_pairs=4
    )
    return prepare(data, DatasetConfig(name="synthetic"), config, torch.device("cpu"), log=print)


def test_evaluation_detects_a_generator_that_emits_one_class(synthetic_evaluator):
    from bench import keys
    from bench.data import to_model_range
    from bench.evaluate import evaluate

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
    from bench.evaluate import evaluate

    model = ReplayGenerator(to_model_range(synthetic_evaluator.data.train.images))
    metrics, images = evaluate(model, synthetic_evaluator, seed=0)
    assert keys.RECON_MSE not in metrics
    assert keys.interp_ppl_key("encoded") not in metrics
    assert keys.interp_ppl_key("prior") in metrics
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

    from bench import domain, keys
    from bench.data import to_model_range
    from bench.evaluate import evaluate, generate, to_uint8
    from bench.fidelity import UInt8Images

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

    with torch.no_grad():
        classes = evaluator.classifier(domain.to_input(fake)).argmax(1)
    covered, kl = mode_coverage(classes, data.eval.labels, data.num_classes)
    for metrics in (cheap, full):
        assert metrics[keys.MODES_COVERED] == covered
        assert metrics[keys.CLASS_KL] == pytest.approx(kl, rel=1e-12)

    reference = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake, 1),
        input2=UInt8Images(data.eval.images, 1),
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=domain.EXTRACTOR_NAME,
        feature_extractor_weights_path=str(evaluator.classifier_path),
        kid_subset_size=min(1000, config.num_samples, len(data.eval.images)),
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
    # same features, same torch-fidelity functions: equal up to float64 rounding (rel 1e-9);
    # precision and recall (fractions of counts) exactly
    for key, value in expected.items():
        assert full[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        if key in (keys.fid_key("domain"), keys.kid_key("domain"), keys.kid_std_key("domain")):
            assert cheap[key] == full[key], key
        else:
            assert key not in cheap, key
    assert full[keys.precision_key("domain")] == expected[keys.precision_key("domain")]
    assert full[keys.recall_key("domain")] == expected[keys.recall_key("domain")]
