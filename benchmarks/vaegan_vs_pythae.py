"""Training throughput: this project's VAE-GAN vs Pythae's, every variant alone, harness overhead.

    uv run --group benchmarks python benchmarks/vaegan_vs_pythae.py [--device auto] [--steps 200]
        [--epoch-limit N] [--dataset fashion-mnist] [--skip-suite] [--suite suites/smoke.yaml]
        [--precision fp32|bf16] [--channels-last auto|true|false]

Prints figures measured in this run on this machine and asserts nothing. Every figure is a wall
time read around real training code (on CUDA after torch.cuda.synchronize), after a few warm-up
steps of the same model.

1. Peer comparison. This project's VAE-GAN (recon disfeat, adversarial bce, trained by
   bench.train.train, the harness's own loop) against Pythae's VAEGAN (Larsen et al.) trained by
   Pythae's CoupledOptimizerAdversarialTrainer.train_step, its per-epoch loop over its DataLoader.
   Both get the same data, batch size, networks (this project's Encoder, Decoder and
   Discriminator plugged into Pythae through thin BaseEncoder / BaseDecoder / BaseDiscriminator
   wrappers), DCGAN initialisation, latent size, reconstruction layer (Dis_3) and Adam settings.
   Each trains ONE full epoch (the training split, capped by --epoch-limit); the table gives its
   wall time and images/s, and the ratio ours / Pythae of the images/s. The differences that remain
   (data path, work per step, losses, gradient routing, Pythae's equilibrium trick) are printed
   below the table; read the ratio as "the same model family trained by each code base as
   shipped", not as an identical computation.
2. This project alone. Images/s of every registered variant (each Literal option expanded: vae;
   dcgan bce / wgan-gp; vaegan pixel | disfeat x bce | wgan-gp), each trained for --steps steps by
   bench.train.train, and its peak memory: on CUDA torch.cuda.max_memory_allocated since the model
   was built (the device-resident training split included), on the CPU the peak RSS of the whole
   process so far (process-wide and never decreasing, so it bounds the variant from above). One
   step is one batch; WGAN-GP variants update the generator every n_critic steps.
3. Harness overhead. The suite file (--suite) is run in-process by bench.runner.run_suite into a
   throw-away MLflow store; overhead = (wall - sum train_seconds - sum eval_seconds) / wall, with
   the seconds read back from the store, split into the time outside the cells (store, data,
   domain classifier, summary) and inside them (model build, checkpoints, artifacts, tracking).

Targets: ours >= 1.5x Pythae's images/s on the CPU, >= 3x on CUDA; harness overhead < 5 %.
The first line printed names the machine (CPU model, threads, whether bf16 is native there).

One job per file: part 1 in pythae_peer.py, part 2 in variant_speed.py, part 3 in
harness_overhead.py, the shared timing and printing in figures.py; this file parses the options
and runs the parts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata

from figures import machine_line
from harness_overhead import TARGET_OVERHEAD, harness_overhead
from pythae_peer import TARGET_RATIO, peer_comparison, quiet_pythae
from variant_speed import variants_alone

import models
from bench.data import DatasetNotFound, ImageData, load_dataset
from bench.run.hardware import channels_last_for
from bench.run.train import select_device
from bench.suite.schema import SuiteError

CHANNELS_LAST = {"auto": "auto", "true": True, "false": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = models.Hparams()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant (part 2)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each timing")
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--latent-dim", type=int, default=defaults.latent_dim)
    parser.add_argument("--dataset", default="fashion-mnist", help="mnist, fashion-mnist, ...")
    parser.add_argument(
        "--data-root", default=None, help="dataset folder (see bench/data/datasets.py)"
    )
    parser.add_argument(
        "--epoch-limit", type=int, default=None, help="use the first N training images only"
    )
    parser.add_argument("--log-every", type=int, default=50, help="harness loss fetch interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: ours and Pythae's steps alike under bfloat16 autocast",
    )
    parser.add_argument(
        "--channels-last",
        choices=list(CHANNELS_LAST),
        default="auto",
        help="our networks' memory format, as the suite field compute.channels_last (auto: NHWC "
        "on CPUs, the harness's default)",
    )
    parser.add_argument(
        "--pythae-equilibrium",
        action="store_true",
        help="keep Pythae's equilibrium/margin update skipping (default: off, every step "
        "updates all three networks as ours does)",
    )
    parser.add_argument("--suite", default="suites/smoke.yaml", help="suite for part 3")
    parser.add_argument("--skip-suite", action="store_true", help="skip part 3")
    parser.add_argument("--skip-variants", action="store_true", help="skip part 2")
    args = parser.parse_args(argv)
    if args.epoch_limit is not None and args.epoch_limit < args.batch_size:
        parser.error("--epoch-limit must be at least --batch-size")
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    return args


def load_images(args: argparse.Namespace) -> ImageData:
    try:
        return load_dataset(args.dataset, cli_root=args.data_root, train_limit=args.epoch_limit)
    except DatasetNotFound as err:
        print(f"{err}\nfalling back to the synthetic dataset")
        return load_dataset("synthetic", train_limit=args.epoch_limit or 60000, eval_limit=64)


def machine_facts(device) -> list[str]:
    return [
        machine_line(device),
        f"python {platform.python_version()}, pythae {metadata.version('pythae')}, "
        f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable)",
        f"targets: ours >= {TARGET_RATIO['cpu']}x Pythae's images/s on the CPU, "
        f">= {TARGET_RATIO['cuda']}x on CUDA; harness overhead < {TARGET_OVERHEAD:.0%}",
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_pythae()
    try:
        device = select_device(args.device)
    except SuiteError as err:
        sys.exit(f"error: {err}")
    args.nhwc = channels_last_for(CHANNELS_LAST[args.channels_last], device)
    hparams = models.Hparams(latent_dim=args.latent_dim, width=args.width)
    print("VAE-GAN throughput: this project vs Pythae " + "=" * 56)
    for line in machine_facts(device):
        print(line)
    data = load_images(args)
    print(f"data: {data.name} from {data.source}, {len(data.train.images)} training images")
    peer_comparison(data, args, hparams, device)
    if args.skip_variants:
        print("\n(part 2 skipped: --skip-variants)")
    else:
        variants_alone(data, args, hparams, device)
    if args.skip_suite:
        print("\n(part 3 skipped: --skip-suite)")
    else:
        harness_overhead(args.suite, args.device)


if __name__ == "__main__":
    main()
