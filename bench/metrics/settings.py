"""The suite's `evaluation:` section: how many samples, which feature spaces, the interpolation
and batch-norm settings; the same for every cell of a suite.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
