"""The training and evaluation splits as MLflow dataset inputs: named after the dataset, with the
digest of their uint8 images and where they came from (the runs table's Dataset column).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from bench import keys
from bench.suite.expand import Cell

if TYPE_CHECKING:
    from bench.data.images import ImageData


INPUT_ATTEMPTS = 3
AMBIGUOUS_SOURCE = "The specified dataset source can be interpreted in multiple ways"


def log_inputs(client: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
    """client.log_inputs, tried again when it loses a race. MLflow's SQL store looks a dataset up,
    then inserts it when missing, without a lock: two cells starting at once (--parallel, Ray)
    both miss the suite's dataset and the second insert breaks the unique key. On the next try
    the dataset is there and only the run's link to it is written."""
    for attempt in range(1, INPUT_ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as err:
            lost_race = any(
                sign in str(err) for sign in ("UNIQUE constraint", "IntegrityError", "locked")
            )
            if not lost_race or attempt == INPUT_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)


class ImageSplit(MetaDataset):
    """One split of the suite's data as MLflow sees it: name, digest, source, schema and size
    (the images themselves stay where they are)."""

    def __init__(self, source, name: str, digest: str, schema: Schema, num_images: int):
        self._num_images = num_images
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict:
        return {"num_images": self._num_images}

    def to_dict(self) -> dict[str, str]:
        return super().to_dict() | {"profile": json.dumps(self.profile)}


def dataset_source(source: str):
    """Where the data came from: a folder (a file URI, resolved by MLflow's own source registry)
    or the harness's generator of synthetic data."""
    if source == "generated":
        return CodeDatasetSource(tags={"generator": "bench.data.synthetic_split"})
    uri = Path(source).expanduser().resolve().as_uri()
    with warnings.catch_warnings():
        # MLflow registers its local artifact source under two schemes ("" and "file"), so every
        # file URI matches both and warns that it "can be interpreted in multiple ways"; both are
        # the same class of source, and the warning says nothing about the data.
        warnings.filterwarnings("ignore", message=AMBIGUOUS_SOURCE, category=UserWarning)
        return resolve_dataset_source(uri, candidate_sources=[FileSystemDatasetSource])


def scored_split_name(cell: Cell) -> str:
    """The name of the images a cell is scored on: its eval_split, or for a search trial the
    validation images held out of its train_split."""
    if cell.scored_on_validation:
        return f"validation (held out of {cell.dataset.train_split})"
    return cell.dataset.eval_split


def dataset_inputs(data: ImageData, cell: Cell) -> list[DatasetInput]:
    """The training and the scored split as MLflow dataset inputs (data: the evaluator's, whose
    eval is the validation set for a search trial): the dataset's name, the
    split's digest and size, the source, the context ("training" / "evaluation", MLflow's
    mlflow.data.context input tag) and the suite's split name (input tag "split")."""
    source = dataset_source(data.source)
    inputs = []
    for context, split_name, split in (
        (keys.DATASET_TRAINING, cell.dataset.train_split, data.train),
        (keys.DATASET_EVALUATION, scored_split_name(cell), data.eval),
    ):
        specs = [TensorSpec(np.dtype(np.uint8), (-1, *split.images.shape[1:]), "images")]
        if split.labels is not None:
            specs.append(TensorSpec(np.dtype(np.int64), (-1,), "labels"))
        dataset = ImageSplit(source, data.name, split.digest, Schema(specs), len(split.images))
        split_tags = [
            InputTag(MLFLOW_DATASET_CONTEXT, context),
            InputTag(keys.INPUT_TAG_SPLIT, split_name),
        ]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=split_tags))
    return inputs
