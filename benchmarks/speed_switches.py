"""Images/s of every variant eager and with each speed switch, and each switch's losses against
fp32 eager.

    uv run python benchmarks/speed_switches.py [--device auto] [--steps 100] [--batch-size 64]
        [--switches eager,bf16,channels_last,bf16+channels_last,compile] [--json FILE]

Switches (bench's `compute:` section, plus CUDA graphs): eager (fp32), bf16 (autocast),
channels_last (NHWC weights and batches), their combination, compile (torch.compile of the
networks, default mode) and, on CUDA, graphs (torch.compile mode "reduce-overhead", which
captures CUDA graphs). Every variant trains from the same initial weights on the same batches
(seed 0) through bench.run.train.train, the harness's loop; a timing is --steps steps after
--warmup untimed ones (on CUDA after torch.cuda.synchronize). One step is one train_step call (a
WGAN-GP critic step or the generator step after n_critic of them). The loss check is
tests/test_compute_switches.py's: the worst |loss - fp32 eager loss| / max(1, |fp32 eager loss|)
over the first CHECK_STEPS steps, against the larger of that test's tolerance and twice the
fp32 run's own spread (`spread`: the same fp32 run from initial weights rounded as the switch
rounds; on wide networks Adam's sign-like first steps amplify any rounding). Prints figures and
asserts nothing; --json writes the rows too (benchmarks/gpu_run.py collects them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from figures import machine_line

import models
from bench.run.train import MEMORY_FORMATS, select_device, train
from bench.suite.schema import SuiteError
from bench.tracking.provenance import bf16_native

VARIANTS = {
    "vae": ("vae", {}),
    "dcgan-bce": ("dcgan", {"loss": "bce"}),
    "dcgan-wgan-gp": ("dcgan", {"loss": "wgan-gp"}),
    "vaegan-pixel-bce": ("vaegan", {"recon": "pixel", "adversarial": "bce"}),
    "vaegan-disfeat-bce": ("vaegan", {"recon": "disfeat", "adversarial": "bce"}),
    "vaegan-pixel-wgan-gp": ("vaegan", {"recon": "pixel", "adversarial": "wgan-gp"}),
    "vaegan-disfeat-wgan-gp": ("vaegan", {"recon": "disfeat", "adversarial": "wgan-gp"}),
}
SWITCHES = {  # name -> (precision, channels_last, compile mode or None)
    "eager": ("fp32", False, None),
    "bf16": ("bf16", False, None),
    "channels_last": ("fp32", True, None),
    "bf16+channels_last": ("bf16", True, None),
    "compile": ("fp32", False, "default"),
    "graphs": ("fp32", False, "reduce-overhead"),  # CUDA graphs; CUDA only
}
TOLERANCE = {"fp32": 1e-3, "bf16": 0.15}  # tests/test_compute_switches.py's
CHECK_STEPS = 6


def build(variant: str, args, device: torch.device, switch: str):
    name, options = VARIANTS[variant]
    hparams = models.Hparams(latent_dim=args.latent_dim, width=args.width, n_critic=5)
    torch.manual_seed(args.seed)
    model = models.build(name, options, (1, 28, 28), hparams, device)
    _, channels_last, mode = SWITCHES[switch]
    if channels_last:
        model.to_channels_last()
    if mode is not None:
        model.compile_networks(None if mode == "default" else mode)
    return model


def run(model, images, args, steps: int, switch: str, seed: int, logged=None) -> None:
    precision, channels_last, _ = SWITCHES[switch]

    def log(step, means):
        if logged is not None:
            logged.append(means)

    train(
        model, images, args.batch_size, steps, seed, 1 if logged is not None else 50, log, False,
        precision=precision, memory_format=MEMORY_FORMATS[channels_last],
    )  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def difference(reference: list[dict], logged: list[dict]) -> float:
    return max(
        abs(got[k] - ref[k]) / max(1.0, abs(ref[k]))
        for ref, got in zip(reference, logged, strict=True)
        for k in ref
    )


def spread(variant: str, images, args, device, precision: str, reference) -> float:
    """How far the fp32 eager run itself moves when only its initial weights carry the switch's
    rounding (bf16: rounded to bfloat16; fp32: one ulp of noise): the trajectory's own
    sensitivity. Adam's first steps are nearly sign(gradient), so on wide networks a rounding
    that flips the sign of small gradients moves the losses far more than the rounding itself."""
    model = build(variant, args, device, "eager")
    noise = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            if precision == "bf16":
                p.copy_(p.to(torch.bfloat16).float())
            else:
                p.mul_(1 + 2**-23 * torch.randn(p.shape, generator=noise).to(device))
    logged: list[dict] = []
    run(model, images, args, CHECK_STEPS, "eager", args.seed, logged)
    return difference(reference, logged)


def measure(variant: str, switch: str, images, args, device, reference, spreads) -> dict:
    logged: list[dict] = []
    model = build(variant, args, device, switch)
    run(model, images, args, CHECK_STEPS, switch, args.seed, logged)  # also the first warm-up
    worst = difference(reference, logged) if reference is not None else 0.0
    run(model, images, args, args.warmup, switch, args.seed + 1)
    sync(device)
    started = time.perf_counter()
    run(model, images, args, args.steps, switch, args.seed + 2)
    sync(device)
    seconds = time.perf_counter() - started
    precision = SWITCHES[switch][0]
    if reference is not None and precision not in spreads:
        spreads[precision] = spread(variant, images, args, device, precision, reference)
    allowed = max(TOLERANCE[precision], 2 * spreads.get(precision, 0.0))
    return {
        "variant": variant,
        "switch": switch,
        "images_per_s": args.steps * args.batch_size / seconds,
        "loss_difference": worst,
        "tolerance": TOLERANCE[precision],
        "spread": spreads.get(precision, 0.0),
        "within": worst <= allowed,
        "logged": logged,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--switches", default=None, help="default: all that apply here")
    parser.add_argument(
        "--compile-variants",
        default="vaegan-disfeat-bce",
        help="variants the compile switches run on (compiling is slow)",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    try:
        device = select_device(args.device)
    except SuiteError as err:
        sys.exit(f"error: {err}")
    switches = args.switches.split(",") if args.switches else [
        s for s in SWITCHES if s != "graphs" or device.type == "cuda"
    ]  # fmt: skip
    switches = ["eager"] + [s for s in switches if s != "eager"]  # the reference comes first
    unknown = set(switches) - set(SWITCHES) | set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        sys.exit(f"error: unknown switch or variant {sorted(unknown)}")
    generator = torch.Generator().manual_seed(1)
    count = max(args.batch_size * 8, 512)
    images = (torch.rand(count, 1, 28, 28, generator=generator) * 255).to(torch.uint8).to(device)
    print(machine_line(device))
    if not bf16_native(device):
        print("bf16 is emulated on this device (no native bf16): its rows measure the emulation, "
              "which bench run refuses unless --allow-slow-bf16")  # fmt: skip
    print(f"speed switches on {device}, batch {args.batch_size}, "
          f"width {args.width}, latent {args.latent_dim}, {args.steps} timed steps")  # fmt: skip
    rows = []
    variants = args.variants.split(",")
    state = {v: {"reference": None, "spreads": {}, "rate": float("nan")} for v in variants}
    # every variant's uncompiled switches first, the compiled ones last: compiling takes the
    # longest, and a run cut at its time box then lacks only those rows
    eager_first = [s for s in switches if SWITCHES[s][2] is None]
    compiled = [s for s in switches if SWITCHES[s][2] is not None]
    plan = [(v, s) for v in variants for s in eager_first]
    plan += [(v, s) for s in compiled for v in variants if v in args.compile_variants.split(",")]
    for variant, switch in plan:
        known = state[variant]
        row = measure(variant, switch, images, args, device, known["reference"], known["spreads"])
        if switch == "eager":
            known["reference"], known["rate"] = row["logged"], row["images_per_s"]
        row["speedup"] = row["images_per_s"] / known["rate"]
        rows.append(row)
        print(f"  {variant:24s} {switch:20s} {row['images_per_s']:>10,.0f} img/s  "
              f"{row['speedup']:5.2f}x  loss diff {row['loss_difference']:.2e} (tolerance "
              f"{row['tolerance']:g}, fp32 spread {row['spread']:.2e}: "
              f"{'ok' if row['within'] else 'EXCEEDED'})",
              flush=True)  # fmt: skip
        if args.json:  # after every row: a run stopped at its time box keeps what it measured
            with open(args.json, "w") as handle:
                json.dump([{k: v for k, v in r.items() if k != "logged"} for r in rows], handle)


if __name__ == "__main__":
    main()
