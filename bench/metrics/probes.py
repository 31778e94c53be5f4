"""Latent probes: do a model's representations make good features? ("VAE latents make good
features", and Radford et al. 2015 used a DCGAN's discriminator features for classification.)

For labelled data, a linear classifier (scikit-learn's logistic regression on standardised
features, fixed settings and seed) is trained on the features of a seeded, class-stratified
subset of PROBE_TRAIN training images and scored on the evaluation split:

    probe_accuracy_encoder          features: the encoder means (models with an encoder)
    probe_accuracy_discriminator    features: the discriminator's penultimate layer, the input of
                                    its last linear layer (models with a discriminator)

and, as the baseline a reviewer asks for, the same probe on the same architecture with random
weights (the initialisation the model trained from, re-drawn with a fixed seed):
`probe_accuracy_random_encoder` and `probe_accuracy_random_discriminator`. A trained network
whose probe does not beat its random twin has learned nothing a linear classifier can use.

The fit runs with BLAS on one thread (threadpoolctl). Multi-threaded BLAS sums in an order that
depends on the machine's core count, so the probe's iterates and accuracy did too; and on a small
machine its threads contend with torch's: on 2 cores a probe took 2.5 to 8 times as long.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
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
RANDOM_INIT_SEED = 0


def accuracy(
    features: Callable[[torch.Tensor], torch.Tensor],
    train: Split,
    evaluation: Split,
    batch_size: int,
) -> float:
    """Test accuracy of a logistic-regression probe on `features` (model-range batches in,
    (N, D) out), trained on `train`, scored on `evaluation`."""

    def embed(images: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                features(model_batch(images[i : i + batch_size], images.device)).flatten(1).cpu()
                for i in range(0, len(images), batch_size)
            ]
        )

    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000, C=1.0, random_state=PROBE_SEED)
    )
    train_features = embed(train.images).double().numpy()
    evaluation_features = embed(evaluation.images).double().numpy()
    with threadpool_limits(limits=1, user_api="blas"):
        probe.fit(train_features, train.labels.numpy())
        predicted = probe.predict(evaluation_features)
    return float((torch.from_numpy(predicted) == evaluation.labels).double().mean())


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
    if model.has_discriminator:
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


def random_twin(model):
    """The model's architecture with freshly drawn initial weights (a fixed seed): the probes'
    baseline."""
    twin = copy.deepcopy(model)
    device = torch.device(model.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(RANDOM_INIT_SEED)
        init_weights(twin)
    return twin


def probe_metrics(model, train: Split, evaluation: Split, batch_size: int) -> dict[str, float]:
    """probe_accuracy_<features> and probe_accuracy_random_<features> for every representation
    the model has (labelled splits only; train and evaluation already on the model's device or
    the CPU)."""
    if not feature_functions(model):
        return {}  # no encoder, no discriminator: nothing to probe
    train, evaluation = probe_splits(train, evaluation)
    metrics = {}
    for trained, random in ((model, False), (random_twin(model), True)):
        for name, features in feature_functions(trained).items():
            key = keys.probe_key(name, random)
            metrics[key] = accuracy(features, train, evaluation, batch_size)
    return metrics
