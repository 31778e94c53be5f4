"""The suite's `dataset:` section: which dataset, where its files are, its preprocessing, splits
and seeded subsets (bench/data/datasets.py `load_dataset` takes these as arguments).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.data.preprocess import Preprocessing

DATASETS = (
    "mnist", "fashion-mnist", "cifar10", "synthetic", "synthetic-rgb", "folder", "npz", "celeba",
)  # fmt: skip
# CelebA at 64x64: a 148x148 centre crop of the 178x218 aligned faces, then a resize (README)
CELEBA_DEFAULTS = {"crop": 148, "image_size": 64}


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal[DATASETS]
    root: str | None = Field(
        None, description="folder holding the dataset files (npz: the .npz file)"
    )
    crop: int | None = Field(None, gt=0, description="centre crop to N x N pixels first")
    image_size: int | None = Field(None, gt=0, description="then resize to N x N pixels")
    channels: Literal[1, 3] | None = Field(
        None, description="then convert to 1 (greyscale) or 3 channels; image files: 3 by default"
    )
    eval_fraction: float = Field(
        0.1, gt=0, lt=1, description="folder without train/ and test/: share held out for eval"
    )
    split_seed: int = Field(0, ge=0, description="seed of that held-out share")
    train_split: Literal["train", "test"] = "train"
    eval_split: Literal["train", "test"] = "test"
    train_limit: int | None = Field(
        None, gt=0, description="use a seeded class-stratified random subset of N training images"
    )
    eval_limit: int | None = Field(
        None, gt=0, description="use a seeded class-stratified random subset of N evaluation images"
    )
    subset_seed: int = Field(0, ge=0, description="seed of the train_limit / eval_limit subsets")

    @model_validator(mode="before")
    @classmethod
    def celeba_preprocessing(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") == "celeba":
            return CELEBA_DEFAULTS | data
        return data

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.crop, self.image_size, self.channels)

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of bench.data.load_dataset this configuration fixes, beyond the
        name, root, splits and subsets."""
        return {
            "preprocessing": self.preprocessing,
            "eval_fraction": self.eval_fraction,
            "split_seed": self.split_seed,
        }

    @model_validator(mode="after")
    def held_out_evaluation(self) -> DatasetConfig:
        # FID against the training images rewards memorising them: evaluate on held-out data
        if self.eval_split == self.train_split:
            raise ValueError(
                f"eval_split is the training split ({self.train_split!r}); evaluate on held-out "
                "images: use train_split: train with eval_split: test"
            )
        return self
