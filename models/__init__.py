"""Model registry and variants.

Every variant is a `GenerativeModel` (an nn.Module owning its networks and optimizers) with
`train_step(x) -> {loss name: detached tensor}`, `sample(n, generator)`, `decode(z)`, `latent_dim`,
`has_encoder` and, where it has one, `encode(x) -> posterior mean`.

Image range: [-1, 1] at every boundary of models/ (inputs to train_step/encode, outputs of
sample/decode). Conversion to [0, 1] for metrics and image files happens in bench only.

Adding a variant: one file with a class decorated `@register("name")` plus its import line below.
"""

from . import dcgan, vae, vaegan  # noqa: F401  (registers the variants)
from .base import GenerativeModel, descend
from .registry import (
    REGISTRY,
    Hparams,
    ModelConfigError,
    ModelOptions,
    build,
    describe_models,
    model_class,
    option_table,
    register,
    validate_options,
)

__all__ = [
    "REGISTRY",
    "GenerativeModel",
    "Hparams",
    "ModelConfigError",
    "ModelOptions",
    "build",
    "descend",
    "describe_models",
    "model_class",
    "option_table",
    "register",
    "validate_options",
]
