"""Part 2 of vaegan_vs_pythae.py: images/s and peak memory of every registered variant (each
Literal option expanded), trained by bench.run.train.train, the harness's loop, in the memory
format the harness resolves for this device."""

from __future__ import annotations

import itertools
import resource
from typing import Literal, get_args, get_origin

import torch
from figures import mib, say, section, table, timed

import models
from bench.data import ImageData, to_model_range
from bench.run.train import MEMORY_FORMATS, train


def no_log(step: int, means: dict[str, float]) -> None:
    """The harness's log callback, doing nothing (no tracking store here)."""


def registered_variants() -> list[tuple[str, str, dict]]:
    """(label, model, options) for every registered model, its Literal options expanded."""
    variants = []
    for name, cls in models.REGISTRY.items():
        choices = {
            field: get_args(info.annotation)
            for field, info in cls.Options.model_fields.items()
            if get_origin(info.annotation) is Literal
        }
        for combo in itertools.product(*choices.values()):
            options = dict(zip(choices, combo, strict=True))
            variants.append(("-".join([name, *map(str, combo)]), name, options))
    return variants


def peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def variant_throughput(name, options, images, data, args, hparams, device) -> tuple[float, float]:
    """(images/s over --steps timed steps after --warmup, peak memory in bytes)."""
    torch.manual_seed(args.seed)
    model = models.build(name, options, data.image_shape, hparams, device)
    if args.nhwc:
        model.to_channels_last()
    layout = MEMORY_FORMATS[args.nhwc]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train(
        model, images, args.batch_size, args.warmup, args.seed, args.log_every, no_log, False,
        precision=args.precision, memory_format=layout,
    )  # fmt: skip
    seconds = timed(
        lambda: train(
            model, images, args.batch_size, args.steps, args.seed + 1, args.log_every, no_log,
            False, precision=args.precision, memory_format=layout,
        ),
        device,
    )  # fmt: skip
    return args.steps * args.batch_size / seconds, peak_memory(device)


def variants_alone(data: ImageData, args, hparams: models.Hparams, device) -> None:
    section(f"2. this project alone: every registered variant, {args.steps} steps each")
    images = to_model_range(data.train.images, device)
    memory = (
        f"peak MiB = torch.cuda.max_memory_allocated since the model was built (includes the "
        f"{mib(images.nelement() * images.element_size())} MiB training split on the device)"
        if device.type == "cuda"
        else "peak MiB = peak RSS of the whole process so far (resource.getrusage): process-wide "
        "and never decreasing, an upper bound for each variant"
    )
    say(
        f"{data.name} {len(images)} train images, batch {args.batch_size}, latent "
        f"{hparams.latent_dim}, width {hparams.width}, n_critic {hparams.n_critic}, warm-up "
        f"{args.warmup} steps; {args.precision}, "
        f"{'channels_last' if args.nhwc else 'contiguous'}; {memory}"
    )
    rows = []
    for label, name, options in registered_variants():
        rate, peak = variant_throughput(name, options, images, data, args, hparams, device)
        rows.append([label, f"{rate:,.1f}", f"{1000 * args.batch_size / rate:.1f}", mib(peak)])
    print(table(["variant", "images/s", "ms/step", "peak MiB"], rows))
