"""The model registry: a name -> class map, filled by `@register("name")` on each variant.

A variant declares its options as a pydantic model `Options` nested in its class; `build` validates
the user's options against it and fails with one line naming the bad field and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

REGISTRY: dict[str, type] = {}


class ModelOptions(BaseModel):
    """Base of every variant's options: unknown fields are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Hparams:
    """What the suite's training budget fixes for every variant alike (the fair-comparison part)."""

    latent_dim: int = 64
    width: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 5


class ModelConfigError(ValueError):
    """A model name or option the user got wrong; the message is one line naming the fix."""


class NameTaken(ValueError):
    """A second class registered under a name already taken (a plugin's name must be its own)."""

    def __init__(self, name: str, taken_by: type):
        super().__init__(
            f"model name {name!r} is registered twice (first by "
            f"{taken_by.__module__}.{taken_by.__qualname__})"
        )
        self.name = name
        self.taken_by = taken_by


def register(name: str):
    def decorator(cls: type) -> type:
        if name in REGISTRY:
            raise NameTaken(name, REGISTRY[name])
        cls.registry_name = name
        REGISTRY[name] = cls
        return cls

    return decorator


def model_class(name: str) -> type:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelConfigError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(REGISTRY))}"
        ) from None


def validate_options(name: str, options: dict[str, Any] | None) -> ModelOptions:
    cls = model_class(name)
    try:
        return cls.Options.model_validate(options or {})
    except ValidationError as err:
        raise ModelConfigError(f"model {name!r}: {describe_validation_error(err)}") from None


def describe_validation_error(err: ValidationError) -> str:
    """First pydantic error as 'field: problem' in one line."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(root)"
    if first["type"] == "extra_forbidden":
        return f"unknown option {where!r}"
    return f"option {where!r}: {first['msg']}"


def option_table(name: str) -> list[tuple[str, str, Any]]:
    """(option, allowed type/values, default) rows, read from the variant's Options class."""
    rows = []
    for field_name, field in model_class(name).Options.model_fields.items():
        allowed = get_args(field.annotation)
        if get_origin(field.annotation) is Literal:
            kind = " | ".join(map(str, allowed))
        else:
            kind = getattr(field.annotation, "__name__", str(field.annotation))
        bounds = [
            f"{symbol} {getattr(m, attr)}"
            for m in field.metadata
            for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
            if hasattr(m, attr)
        ]
        rows.append((field_name, " ".join([kind, *bounds]), field.default))
    return rows


def build(
    name: str,
    options: dict[str, Any] | ModelOptions | None,
    image_shape: tuple[int, int, int],
    hparams: Hparams,
    device: torch.device | str = "cpu",
):
    """Validate the options and construct the variant on `device`."""
    cls = model_class(name)
    if not isinstance(options, ModelOptions):
        options = validate_options(name, options)
    return cls(options, tuple(image_shape), hparams, torch.device(device))


def describe_models() -> list[str]:
    """What `bench models` prints: every registered model with its options and defaults, and the
    discriminator layers (Dis_l, vaegan's dis_layer) that exist at each supported image size."""
    import sys

    from .networks import SUPPORTED_SIZES, discriminator_layers

    lines = []
    for name in sorted(REGISTRY):
        cls = model_class(name)
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        lines.append(f"{name}: {doc[0] if doc else ''}")
        for option, kind, default in option_table(name):
            lines.append(f"    {option:<12} {kind:<28} default {default!r}")
    width = Hparams().width
    lines.append(
        f"Dis_l layers per image size (vaegan dis_layer l = discriminator conv block l), "
        f"features C x H x W at width {width}:"
    )
    for size in SUPPORTED_SIZES:
        layers = discriminator_layers((1, size, size), width)
        shapes = "  ".join(
            f"{layer}: {'x'.join(map(str, shape))}" for layer, shape in enumerate(layers, 1)
        )
        lines.append(f"    {f'{size}x{size}':<8} dis_layer 1..{len(layers)}   {shapes}")
    return lines
