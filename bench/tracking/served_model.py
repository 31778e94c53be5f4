"""A trained cell as an MLflow model: MLflow runs this file to load it ("models from code").

Every finished cell logs its model at `runs:/<run id>/model` (bench/run/artifacts.py,
`log_served_model`):

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    model.predict({"n": 16})             # 16 prior samples: float32 (16, C, H, W) in [0, 1]
    model.predict({"n": 16, "seed": 0})  # the same 16 samples every time
    model.predict({"images": x})         # decode(encode(x)) for x float (N, C, H, W) in [0, 1],
                                         # same shape and range; variants with an encoder only

The logged model holds a copy of this file, `generator.json` (registry name, options, image shape,
hyperparameters: what `models.build` needs to rebuild the networks) and `weights.pt` (the model's
state dict and the decoder's batch-norm statistics: tensors and plain numbers). Loading runs this
file and the harness's own `models` package, reads the JSON with `json` and the weights with
`torch.load(..., weights_only=True)`: no pickled object is ever loaded. A model of a plugin
(bench/suite/plugins.py) carries the plugin's source too, with its hash in `generator.json`:
loading runs that source (checked against the hash), so the store alone suffices, without the
file the suite named.

Batch norm: the evaluation decodes prior samples and reconstructions with decoder statistics
re-estimated on the latents at hand (evaluation.batch_norm, bench/metrics/evaluate.py). The
statistics of those two evaluation blocks are saved with the weights, so that the model samples and
reconstructs as the evaluation that scored it did.
"""

from __future__ import annotations

import dataclasses
import json
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema, TensorSpec
from mlflow.types.schema import Array
from torch.nn.modules.batchnorm import _BatchNorm

import models
from bench.data.images import to_unit_range
from bench.suite import plugins

CONFIG_FILE = "generator.json"
WEIGHTS_FILE = "weights.pt"
PLUGIN_FILE = "plugin.py"  # the source of the plugin that registered the model, if any
MAX_BATCH = 500  # images decoded at once: bounds memory for a large request


def batch_norm_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The running statistics of every batch-norm layer of `network`, copied to the CPU."""
    return {
        f"{name}.{buffer}": getattr(module, buffer).detach().cpu().clone()
        for name, module in network.named_modules()
        if isinstance(module, _BatchNorm)
        for buffer in ("running_mean", "running_var", "num_batches_tracked")
    }


def save(model, decoder_statistics: dict[str, dict[str, torch.Tensor]], folder: Path) -> dict:
    """Write the config and the weights of a trained model into `folder`; returns the artifacts
    mapping of the MLflow model (name -> file). decoder_statistics: "prior" (and "encoded" for a
    model with an encoder) -> the decoder's `batch_norm_state` in that evaluation block."""
    config = {
        "model": model.registry_name,
        "options": model.options.model_dump(mode="json"),
        "image_shape": list(model.image_shape),
        "hparams": dataclasses.asdict(model.hparams),
        "has_encoder": model.has_encoder,
    }
    artifacts = {"config": str(folder / CONFIG_FILE), "weights": str(folder / WEIGHTS_FILE)}
    plugin = plugins.plugin_of(model.registry_name)
    if plugin is not None:
        config["plugin"] = plugin.identity()
        (folder / PLUGIN_FILE).write_text(plugin.source)
        artifacts["plugin"] = str(folder / PLUGIN_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    weights = {
        "model": {
            k: v.detach().cpu() if isinstance(v, torch.Tensor) else v  # and its extra state
            for k, v in model.state_dict().items()
        },
        "decoder_statistics": decoder_statistics,
    }
    torch.save(weights, folder / WEIGHTS_FILE)
    return artifacts


def signature(image_shape: tuple[int, int, int]) -> ModelSignature:
    """Input: a dict with "n" (and optionally "seed"), or with "images" (float, (N, C, H, W) in
    [0, 1]); output: float32 images (N, C, H, W) in [0, 1]."""
    images = Array(Array(Array(Array(DataType.float))))
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(DataType.long, "n", required=False),
                ColSpec(DataType.long, "seed", required=False),
                ColSpec(images, "images", required=False),
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *image_shape))]),
    )


def requirements() -> list[str]:
    """What the model needs beside the harness itself (which is not on PyPI: load it in the
    harness's environment), pinned to the installed versions. Given explicitly, so that MLflow
    does not infer them by loading the model at every log (seconds per cell)."""
    packages = ("torch", "numpy", "pandas", "pydantic")
    # mlflow's own version, whichever distribution installed it (mlflow, or mlflow-skinny as on
    # the GPU machine's bundle)
    return [f"mlflow=={mlflow.__version__}"] + [f"{name}=={version(name)}" for name in packages]


def load(
    config_path: str | Path,
    weights_path: str | Path,
    device: str = "cpu",
    plugin_path: str | Path | None = None,
):
    """(model, decoder statistics) rebuilt from a saved config and weights: a built-in model
    through the registry, a plugin's from the plugin source saved beside them."""
    config = json.loads(Path(config_path).read_text())
    hparams = dict(config["hparams"])
    hparams["betas"] = tuple(hparams["betas"])
    if "plugin" in config:
        source = Path(plugin_path).read_text()
        cls = plugins.served_class(config["plugin"], source, config["model"])
    else:
        cls = models.model_class(config["model"])
    model = cls(
        cls.Options.model_validate(config["options"]), tuple(config["image_shape"]),
        models.Hparams(**hparams), torch.device(device),
    )  # fmt: skip
    weights = torch.load(weights_path, map_location=device, weights_only=True)
    model.load_state_dict(weights["model"])
    model.eval()
    return model, weights["decoder_statistics"]


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """The MLflow face of a trained variant: samples from the prior, or reconstructions."""

    def load_context(self, context) -> None:
        self.model, self.statistics = load(
            context.artifacts["config"],
            context.artifacts["weights"],
            plugin_path=context.artifacts.get("plugin"),
        )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        request = _request(model_input)
        images, n = request.get("images"), request.get("n")
        if (images is None) == (n is None):
            raise ValueError(
                'give either "n" (samples from the prior) or "images" (to reconstruct)'
            )
        with torch.no_grad():
            if images is not None:
                return self.reconstruct(images)
            seed = request.get("seed")
            return self.sample(int(n), None if seed is None else int(seed))

    def sample(self, n: int, seed: int | None) -> np.ndarray:
        if n < 1:
            raise ValueError(f'"n" must be a positive number of samples, not {n}')
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        latents = torch.randn(n, self.model.latent_dim, generator=generator)
        self._use_statistics("prior")
        return self._decode(latents)

    def reconstruct(self, images) -> np.ndarray:
        if not self.model.has_encoder:
            raise ValueError(
                f"model {self.model.registry_name!r} has no encoder: it cannot reconstruct "
                'images; ask for samples with {"n": ...}'
            )
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        expected = tuple(self.model.image_shape)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f'"images" must be (N, {", ".join(map(str, expected))}), not {tuple(x.shape)}'
            )
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError('"images" must be in [0, 1] (float)')
        self._use_statistics("encoded")
        latents = torch.cat(
            [self.model.encode(x[i : i + MAX_BATCH] * 2 - 1) for i in range(0, len(x), MAX_BATCH)]
        )  # * 2 - 1: the inverse of bench.data.to_unit_range, into the model range
        return self._decode(latents)

    def _use_statistics(self, block: str) -> None:
        buffers = dict(self.model.decoder.named_buffers())
        for name, value in self.statistics[block].items():
            buffers[name].copy_(value)

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        batches = [
            to_unit_range(self.model.decode(latents[i : i + MAX_BATCH]))
            for i in range(0, len(latents), MAX_BATCH)
        ]
        return torch.cat(batches).cpu().numpy().astype(np.float32)


def _request(model_input) -> dict:
    """The request as a dict: MLflow hands a one-row DataFrame (the signature's columns), a direct
    call may pass the dict itself. Missing and NaN values are None."""
    if isinstance(model_input, pd.DataFrame):
        if len(model_input) != 1:
            raise ValueError('one request at a time: {"n": ...} or {"images": ...}')
        model_input = model_input.iloc[0].to_dict()
    if not isinstance(model_input, dict):
        raise ValueError('the input is a dict: {"n": 16} or {"images": x}')
    return {k: v for k, v in model_input.items() if not _missing(v)}


def _missing(value) -> bool:
    return value is None or (np.isscalar(value) and isinstance(value, float) and np.isnan(value))


mlflow.models.set_model(GeneratorModel())
