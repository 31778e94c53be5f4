"""What a finished cell leaves in its run besides metrics: the suite and the cell's config, the
evaluation's image grids, the final weights (artifacts), and the trained model as an MLflow model
(bench/tracking/served_model.py)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from torchvision.utils import save_image

from bench import keys, tracking
from bench.data.images import to_unit_range
from bench.metrics import evaluate
from bench.suite.expand import Cell
from bench.tracking import served_model


def log_artifacts(client, run_id: str, cell: Cell, model, images: dict, suite_text: str) -> None:
    """The suite, the cell's config, the evaluation's image grids (decoded by evaluate.evaluate
    under the same batch-norm statistics as the metrics) and the final weights."""
    columns = evaluate.grid_columns(cell.evaluation.grid_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / keys.ARTIFACT_SUITE).write_text(suite_text)
        (folder / keys.ARTIFACT_CONFIG).write_text(
            json.dumps({"cell_id": cell.id, "suite": cell.suite, **cell.config()}, indent=2)
        )
        save_image(images["samples"], folder / keys.ARTIFACT_SAMPLES, nrow=columns)
        if images.get("reconstructions") is not None:
            save_image(
                images["reconstructions"], folder / keys.ARTIFACT_RECONSTRUCTIONS, nrow=columns
            )
        if images.get("nearest") is not None:  # samples over their nearest training images
            save_image(
                images["nearest"], folder / keys.ARTIFACT_NEAREST, nrow=evaluate.NEAREST_SHOWN
            )
        strips = images.get("interpolation")
        if strips is not None and len(strips):
            save_image(
                to_unit_range(strips.flatten(0, 1)).cpu(),
                folder / keys.ARTIFACT_INTERPOLATION,
                nrow=strips.shape[1],
            )
        checkpoint_dir = folder / keys.ARTIFACT_CHECKPOINT_DIR
        checkpoint_dir.mkdir()
        torch.save(
            {
                "model": model.state_dict(),
                "optimizers": model.optimizer_state(),
                "config": cell.config(),
            },
            checkpoint_dir / keys.CHECKPOINT_FILE,
        )
        client.log_artifacts(run_id, str(folder))


def log_served_model(client, run_id: str, cell: Cell, model, evaluator, step: int) -> None:
    """The trained model as an MLflow model (bench/tracking/served_model.py), loadable as
    runs:/<run id>/model, with the decoder's batch-norm statistics of the evaluation blocks it
    was scored in (prior samples; reconstructions for a model with an encoder)."""
    statistics = {}
    for latents in ("prior", "encoded") if model.has_encoder else ("prior",):
        with evaluate.decoder_statistics(model, evaluator, cell.seed, latents):
            statistics[latents] = served_model.batch_norm_state(model.decoder)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = served_model.save(model, statistics, Path(tmp))
        tracking.log_model(
            client,
            run_id,
            served_model.__file__,
            artifacts,
            served_model.signature(model.image_shape),
            served_model.requirements(),
            step,
        )
