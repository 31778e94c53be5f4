"""Dataset subsets: `train_limit` / `eval_limit` draw seeded, class-stratified random subsets."""

from __future__ import annotations

import pytest
import torch

from bench.data import Split, stratified_subset
from bench.data.datasets import _limit


def blocked_labels() -> torch.Tensor:
    """A file sorted by class with unequal classes: 500 of class 0, 300 of 1, 200 of 2."""
    return torch.cat([torch.full((500,), 0), torch.full((300,), 1), torch.full((200,), 2)])


def test_subset_keeps_every_class_in_proportion():
    labels = blocked_labels()
    index = stratified_subset(labels, 100, seed=0)
    assert len(index) == len(set(index.tolist())) == 100
    assert torch.bincount(labels[index]).tolist() == [50, 30, 20]
    # the first 100 items of the file would all be class 0
    assert torch.bincount(labels[:100], minlength=3).tolist() == [100, 0, 0]


def test_subset_rounds_by_largest_remainder_to_exactly_n():
    labels = blocked_labels()
    counts = torch.bincount(labels[stratified_subset(labels, 7, seed=0)], minlength=3)
    # exact shares 3.5, 2.1, 1.4: floors 3, 2, 1 and the one left goes to class 0 (.5)
    assert counts.tolist() == [4, 2, 1]


def test_subset_is_seeded_and_random():
    labels = blocked_labels()
    first = stratified_subset(labels, 100, seed=0)
    assert torch.equal(first, stratified_subset(labels, 100, seed=0))
    other = stratified_subset(labels, 100, seed=1)
    assert not torch.equal(first, other)
    assert torch.bincount(labels[other]).tolist() == [50, 30, 20]
    assert not torch.equal(first[:50], torch.arange(50))  # not the first items of the class


def test_limit_applies_the_subset_to_images_and_labels_together():
    labels = blocked_labels()
    images = labels.view(-1, 1, 1, 1).to(torch.uint8).expand(-1, 1, 2, 2).clone()
    split = _limit(Split(images, labels), 60, seed=3)
    assert torch.equal(split.images[:, 0, 0, 0].long(), split.labels)
    assert _limit(Split(images, labels), None, seed=3).labels is labels


@pytest.mark.parametrize("seed", [0, 5])
def test_dataset_limits_through_load_dataset(tmp_path, seed):
    """The IDX path: a blocked file, limits give stratified subsets, recorded by subset_seed."""
    import gzip

    import numpy as np

    from bench.data import load_dataset

    def write(name: str, array: np.ndarray, magic: int) -> None:
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(tmp_path / f"{name}.gz", "wb") as f:
            f.write(header + array.tobytes())

    labels = blocked_labels().numpy().astype(np.uint8)
    images = np.repeat(labels, 28 * 28).reshape(-1, 28, 28).astype(np.uint8)
    for stem in ("train", "t10k"):
        write(f"{stem}-images-idx3-ubyte", images, 0x803)
        write(f"{stem}-labels-idx1-ubyte", labels, 0x801)
    data = load_dataset("mnist", root=tmp_path, train_limit=100, eval_limit=10, subset_seed=seed)
    assert torch.bincount(data.train.labels).tolist() == [50, 30, 20]
    assert torch.bincount(data.eval.labels).tolist() == [5, 3, 2]
