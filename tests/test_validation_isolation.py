"""A search's validation images stay out of what scores its trials (issue #35): the domain
classifier never trains on them, and a validation evaluation's OOD shifts are made of them."""

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
    sets = {"invert": ood.shifted(evaluation, "invert"), "mnist": other}
    shifted = ood.validation_sets(sets, validation, 1000)
    assert torch.equal(shifted["invert"], 255 - validation)
    assert shifted["mnist"] is other
