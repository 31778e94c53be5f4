"""A search's validation images stay out of what scores its trials (issue #35): the domain
classifier never trains on them, a validation evaluation's OOD shifts are made of them, and its
dataset OOD sets come from those datasets' train splits, never their test splits."""

from __future__ import annotations

import torch

from bench.data import load_dataset
from bench.data.config import DatasetConfig
from bench.data.datasets import hold_out_validation
from bench.metrics import domain, evaluator
from bench.metrics.settings import EvaluationConfig


class Stop(Exception):
    pass


def test_the_domain_classifier_never_sees_the_validation_images(monkeypatch, tmp_path):
    config = DatasetConfig(name="synthetic")
    data = hold_out_validation(load_dataset("synthetic"), 100, 0)
    seen = {}

    def capture(name, fingerprint, train_split, *args, **kwargs):
        seen["train"], seen["fingerprint"] = train_split, fingerprint
        raise Stop

    monkeypatch.setattr(domain, "load_or_train", capture)
    try:
        evaluator.prepare(data, config, EvaluationConfig(), torch.device("cpu"), None, tmp_path)
    except Stop:
        pass
    held = {image.numpy().tobytes() for image in data.validation.images}
    trained = [image.numpy().tobytes() for image in seen["train"].images]
    assert not held & set(trained)
    full = load_dataset("synthetic")
    assert len(trained) == len(full.train.images) - len(held)
    assert seen["fingerprint"] != full.fingerprint  # its own cached classifier


def test_a_validation_evaluations_ood_shifts_are_made_of_the_validation_images():
    from bench.metrics import ood

    evaluation = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    validation = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    other = torch.zeros(10, 1, 28, 28, dtype=torch.uint8)
    from_train = torch.ones(10, 1, 28, 28, dtype=torch.uint8)
    sets = {"invert": ood.shifted(evaluation, "invert"), "mnist": other}
    shifted = ood.validation_sets(sets, {"mnist": from_train}, validation, 1000)
    assert torch.equal(shifted["invert"], 255 - validation)
    assert shifted["mnist"] is from_train


def test_a_searchs_dataset_ood_set_is_read_from_that_datasets_train_split(tmp_path):
    """The suite's own data is held out for a search; the OOD dataset (here the synthetic set
    again, as a stand-in for MNIST) gives its test split to the final evaluation and its train
    split to the trials."""
    config = EvaluationConfig(ood=[{"name": "synthetic"}], ood_images=64)
    other = load_dataset("synthetic")
    test_images = {image.numpy().tobytes() for image in other.eval.images}
    train_images = {image.numpy().tobytes() for image in other.train.images}

    searched = hold_out_validation(load_dataset("synthetic"), 100, 0)
    sets, validation = evaluator.load_ood_sets(config, searched, None, tmp_path)
    assert {image.numpy().tobytes() for image in sets["synthetic"]} <= test_images
    assert {image.numpy().tobytes() for image in validation["synthetic"]} <= train_images
    assert not {image.numpy().tobytes() for image in validation["synthetic"]} & test_images

    plain, none = evaluator.load_ood_sets(config, load_dataset("synthetic"), None, tmp_path)
    assert none == {} and torch.equal(plain["synthetic"], sets["synthetic"])
