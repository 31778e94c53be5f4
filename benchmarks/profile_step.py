"""Where one VAE-GAN training step's time goes: a torch.profiler table of the top operators.

    uv run python benchmarks/profile_step.py [--device auto] [--steps 20] [--batch-size 64]
        [--precision fp32|bf16] [--channels-last] [--rows 25] [--out profile.txt]

The model is the headline VAE-GAN (recon disfeat, adversarial bce) at the Fashion ablation's sizes
(width 64, latent 64), trained by bench.run.train.train on random uint8 images held on the device,
after --warmup untimed steps. The table is sorted by self CUDA time on CUDA, by self CPU time on
the CPU; the line above it gives the step's wall time. Prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from figures import machine_line
from torch.profiler import ProfilerActivity, profile

import models
from bench.run.train import MEMORY_FORMATS, select_device, train
from bench.suite.schema import SuiteError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        device = select_device(args.device)
    except SuiteError as err:
        sys.exit(f"error: {err}")
    hparams = models.Hparams(latent_dim=args.latent_dim, width=args.width)
    torch.manual_seed(0)
    options = {"recon": "disfeat", "adversarial": "bce"}
    model = models.build("vaegan", options, (1, 28, 28), hparams, device)
    if args.channels_last:
        model.to_channels_last()
    generator = torch.Generator().manual_seed(1)
    images = (torch.rand(args.batch_size * 16, 1, 28, 28, generator=generator) * 255).to(
        torch.uint8
    )
    images = images.to(device)

    def steps(count: int, seed: int) -> None:
        train(
            model, images, args.batch_size, count, seed, 10, lambda step, means: None, False,
            precision=args.precision, memory_format=MEMORY_FORMATS[args.channels_last],
        )  # fmt: skip

    steps(args.warmup, 0)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        steps(args.steps, 1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    header = (
        f"VAE-GAN (disfeat, bce) step on {device}, batch {args.batch_size}, width {args.width}, "
        f"{args.precision}{', channels_last' if args.channels_last else ''}: "
        f"{1000 * seconds / args.steps:.2f} ms per step under the profiler ({args.steps} steps)"
    )
    table = profiler.key_averages().table(sort_by=sort, row_limit=args.rows)
    print(machine_line(device))
    print(header)
    print(table)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(header + "\n" + table + "\n")


if __name__ == "__main__":
    main()
