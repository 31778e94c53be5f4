"""Latent probes: do a model's representations make good features? ("VAE latents make good
features", and Radford et al. 2015 used a DCGAN's discriminator features for classification.)

For labelled data, a linear classifier (scikit-learn's logistic regression on standardised
features, fixed settings and seed) is trained on the features of a seeded, class-stratified
subset of PROBE_TRAIN training images and scored on the evaluation split:

    probe_accuracy_encoder          features: the encoder means (models with an encoder)
    probe_accuracy_discriminator    features: the discriminator's penultimate layer, the input of
                                    its last linear layer (models with a discriminator on
                                    images, GenerativeModel.discriminator_on_images)

and, as the baseline a reviewer asks for, the same probe on the same architecture with random
weights (the initialisation the model trained from, re-drawn with a seed of the network's
architecture, so the same encoder gets the same twin in a VAE and a VAE-GAN):
`probe_accuracy_random_encoder` and `probe_accuracy_random_discriminator`. A trained network
whose probe does not beat its random twin has learned nothing a linear classifier can use. The
twin's batch-norm statistics are its own, re-estimated on the probe's training images (train-mode
forwards, a cumulative average): the trained model's statistics would normalise random features
with the moments of trained ones, a baseline of neither.

Some features (a WGAN-GP critic's, unbounded and unnormalised) leave the fit short of
convergence at max_iter even standardised. The probe's accuracy is still the one of its last
iterate; `probe_converged_<features>` (1 or 0) logs whether it converged, and scikit-learn's
ConvergenceWarning, once per fit, is kept out of `bench run`'s output.

The fit runs with BLAS on one thread (threadpoolctl). Multi-threaded BLAS sums in an order that
depends on the machine's core count, so the probe's iterates and accuracy did too; and on a small
machine its threads contend with torch's: on 2 cores a probe took 2.5 to 8 times as long.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from bench import keys
from bench.data.datasets import stratified_subset
from bench.data.images import Split, model_batch
from models.networks import init_weights

PROBE_TRAIN = 5000
PROBE_EVAL = 5000
PROBE_SEED = 0
MAX_ITER = 1000


class ProbeFit(NamedTuple):
    accuracy: float
    converged: bool  # lbfgs stopped before MAX_ITER


def accuracy(
    features: Callable[[torch.Tensor], torch.Tensor],
    train: Split,
    evaluation: Split,
    batch_size: int,
) -> float:
    """Test accuracy of a logistic-regression probe on `features` (fit_probe)."""
    return fit_probe(features, train, evaluation, batch_size).accuracy


def fit_probe(
    features: Callable[[torch.Tensor], torch.Tensor],
    train: Split,
    evaluation: Split,
    batch_size: int,
) -> ProbeFit:
    """A logistic-regression probe on `features` (model-range batches in, (N, D) out), trained on
    `train`, scored on `evaluation`: its test accuracy and whether the fit converged."""

    def embed(images: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                features(model_batch(images[i : i + batch_size], images.device)).flatten(1).cpu()
                for i in range(0, len(images), batch_size)
            ]
        )

    regression = LogisticRegression(max_iter=MAX_ITER, C=1.0, random_state=PROBE_SEED)
    probe = make_pipeline(StandardScaler(), regression)
    train_features = embed(train.images).double().numpy()
    evaluation_features = embed(evaluation.images).double().numpy()
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # logged as probe_converged_<features> instead of a warning block per fit
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_features, train.labels.numpy())
        predicted = probe.predict(evaluation_features)
    correct = (torch.from_numpy(predicted) == evaluation.labels).double().mean()
    return ProbeFit(float(correct), bool(regression.n_iter_.max() < MAX_ITER))


def probe_splits(train: Split, evaluation: Split) -> tuple[Split, Split]:
    """The seeded, class-stratified subsets the probes train and are scored on."""

    def cut(split: Split, n: int) -> Split:
        if len(split.images) <= n:
            return split
        index = stratified_subset(split.labels, n, PROBE_SEED)
        return Split(split.images[index], split.labels[index])

    return cut(train, PROBE_TRAIN), cut(evaluation, PROBE_EVAL)


def feature_functions(model) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The representations of a model: "encoder" and/or "discriminator"."""
    functions = {}
    if model.has_encoder:
        functions["encoder"] = model.encode
    if model.has_discriminator and model.discriminator_on_images:
        dis = model.discriminator

        @torch.no_grad()
        def penultimate(x: torch.Tensor) -> torch.Tensor:
            was_training = dis.training
            dis.eval()
            try:
                return dis.features(x.to(model.device), dis.num_layers)
            finally:
                dis.train(was_training)

        functions["discriminator"] = penultimate
    return functions


def architecture_seed(network: torch.nn.Module) -> int:
    """A seed of the network's architecture (its layers and their shapes, as repr prints them):
    the same architecture draws the same random weights in every model family."""
    return int.from_bytes(hashlib.sha256(repr(network).encode()).digest()[:4], "little")


def random_twin(model, images: torch.Tensor | None = None, batch_size: int = 500):
    """The model's architecture with freshly drawn initial weights (each network seeded by its
    architecture) and batch-norm statistics of its own, re-estimated on `images` (uint8 or
    model-range; None: reset only): the probes' baseline."""
    twin = copy.deepcopy(model)
    device = torch.device(model.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for network in twin.children():
            torch.manual_seed(architecture_seed(network))
            init_weights(network)
    for network in (getattr(twin, "encoder", None), getattr(twin, "discriminator", None)):
        if network is not None:
            recalibrate(network, images, batch_size, device)
    return twin


@torch.no_grad()
def recalibrate(
    network: torch.nn.Module, images: torch.Tensor | None, batch_size: int, device
) -> None:
    """The network's batch-norm running statistics reset, then the plain average over train-mode
    forwards of `images` (momentum None), as the decoder's recalibration does."""
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    if norms and images is not None:
        was_training = network.training
        network.train()
        for i in range(0, len(images), batch_size):
            network(model_batch(images[i : i + batch_size], device))
        network.train(was_training)


def probe_metrics(model, train: Split, evaluation: Split, batch_size: int) -> dict[str, float]:
    """probe_accuracy_<features> and probe_accuracy_random_<features> for every representation
    the model has (labelled splits only; train and evaluation already on the model's device or
    the CPU)."""
    if not feature_functions(model):
        return {}  # no encoder, no discriminator: nothing to probe
    train, evaluation = probe_splits(train, evaluation)
    metrics = {}
    twin = random_twin(model, train.images, batch_size)
    for trained, random in ((model, False), (twin, True)):
        for name, features in feature_functions(trained).items():
            fit = fit_probe(features, train, evaluation, batch_size)
            metrics[keys.probe_key(name, random)] = fit.accuracy
            metrics[keys.probe_converged_key(name, random)] = float(fit.converged)
    return metrics
