"""Training throughput: this project's VAE-GAN vs Pythae's, every variant alone, harness overhead.

    uv run --group benchmarks python benchmarks/vaegan_vs_pythae.py [--device auto] [--steps 200]
        [--epoch-limit N] [--dataset fashion-mnist] [--skip-suite] [--suite suites/smoke.yaml]
        [--precision fp32|bf16]

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
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import re
import resource
import sys
import tempfile
import textwrap
import time
from importlib import metadata
from pathlib import Path
from typing import Literal, get_args, get_origin

import torch

import models
from bench import keys
from bench.data import DatasetNotFound, ImageData, load_dataset, to_model_range
from bench.run.train import autocast, select_device, steps_per_epoch, train
from bench.suite.load import load_suite
from bench.suite.schema import SuiteError
from models.networks import Decoder, Discriminator, Encoder, init_weights

try:
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAEGAN, VAEGANConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder
    from pythae.trainers import (
        CoupledOptimizerAdversarialTrainer,
        CoupledOptimizerAdversarialTrainerConfig,
    )
    from pythae.trainers.training_callbacks import ProgressBarCallback
except ImportError as err:  # the benchmarks dependency group is not installed
    sys.exit(f"{err}: run with `uv run --group benchmarks python {Path(__file__).name}`")

DIS_LAYER = 3  # Dis_l of the comparison: our VaeGan's default dis_layer
NO_MARGIN = 1e9  # Pythae's equilibrium margin that never skips an update
TARGET_RATIO = {"cpu": 1.5, "cuda": 3.0}
TARGET_OVERHEAD = 0.05
PEER_OPTIONS = {"recon": "disfeat", "adversarial": "bce"}
# our two update schedules; "simultaneous" (Larsen et al.'s Algorithm 1) is Pythae's schedule too
SCHEDULES = ("simultaneous", "alternating")
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


# --- Pythae wrappers around this project's networks -------------------------------------------


class PythaeEncoder(BaseEncoder):
    """Our Encoder as Pythae expects it: ModelOutput(embedding=mu, log_covariance=logvar)."""

    def __init__(self, net: Encoder):
        BaseEncoder.__init__(self)
        self.net = net

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mu, logvar = self.net(x)
        return ModelOutput(embedding=mu, log_covariance=logvar)


class PythaeDecoder(BaseDecoder):
    """Our Decoder as Pythae expects it: ModelOutput(reconstruction=x), x in [-1, 1] (tanh)."""

    def __init__(self, net: Decoder):
        BaseDecoder.__init__(self)
        self.net = net

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.net(z))


class PythaeDiscriminator(BaseDiscriminator):
    """Our Discriminator as Pythae expects it. Levels 1..3 are its conv blocks (level l is our
    `features(x, l)`), level 4 the linear head. `embedding` is D(x) as a probability (Pythae applies
    binary_cross_entropy to it), computed when no level is asked for or the head is reached, like
    Pythae's own convolutional discriminators; `embedding_layer_<l>` holds each asked level."""

    def __init__(self, net: Discriminator):
        BaseDiscriminator.__init__(self)
        self.net = net
        self.depth = net.num_layers + 1

    def forward(self, x: torch.Tensor, output_layer_levels: list[int] | None = None):
        levels = output_layer_levels or []
        deepest = self.depth if not levels or -1 in levels else max(levels)
        output = ModelOutput()
        h = x
        for level, block in enumerate(self.net.blocks[:deepest], 1):
            h = block(h)
            if level in levels:
                output[f"embedding_layer_{level}"] = h
        if deepest == self.depth:
            output["embedding"] = torch.sigmoid(self.net.head(h.flatten(1)))
            if self.depth in levels:
                output[f"embedding_layer_{self.depth}"] = output["embedding"]
        return output


# --- helpers ----------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds of wall time of fn(), the device synchronised before both clock readings."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def no_log(step: int, means: dict[str, float]) -> None:
    """The harness's log callback, doing nothing (no tracking store in parts 1 and 2)."""


def table(headers: list[str], rows: list[list]) -> str:
    """Plain text table: text columns left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _is_number(value) -> bool:
    return NUMBER.fullmatch(str(value)) is not None


def say(text: str, indent: str = "") -> None:
    """Print a paragraph wrapped to 100 columns."""
    print(textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=" " * len(indent)))


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 96 - len(title)))


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f}"


def quiet_pythae() -> None:
    """Pythae's modules log INFO lines to the console (sanity check, folders): keep warnings."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)


# --- setup ------------------------------------------------------------------------------------


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
        "--pythae-equilibrium",
        action="store_true",
        help="keep Pythae's equilibrium/margin update skipping (default: off, every step "
        "updates all three networks as ours does)",
    )
    parser.add_argument("--suite", default="suites/smoke.yaml", help="suite for part 3")
    parser.add_argument("--skip-suite", action="store_true", help="skip part 3")
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


def machine_facts(device: torch.device) -> list[str]:
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        name = f"cpu ({platform.processor() or platform.machine()})"
    return [
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"pythae {metadata.version('pythae')}",
        f"device {name}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"torch threads {torch.get_num_threads()}",
        f"targets: ours >= {TARGET_RATIO['cpu']}x Pythae's images/s on the CPU, "
        f">= {TARGET_RATIO['cuda']}x on CUDA; harness overhead < {TARGET_OVERHEAD:.0%}",
    ]


# --- part 1: peer comparison ------------------------------------------------------------------


def build_ours(image_shape, hparams: models.Hparams, device: torch.device, seed: int, update):
    torch.manual_seed(seed)
    options = PEER_OPTIONS | {"update": update}
    return models.build("vaegan", options, image_shape, hparams, device)


def build_pythae(image_shape, hparams: models.Hparams, gamma: float, equilibrium: bool, seed: int):
    """Pythae's VAEGAN on our networks. adversarial_loss_scale s = 1 / (1 + gamma) makes the
    decoder's L_llike : GAN weight ratio (1 - s) / s equal to our gamma."""
    torch.manual_seed(seed)
    encoder = Encoder(image_shape, hparams.latent_dim, hparams.width)
    decoder = Decoder(image_shape, hparams.latent_dim, hparams.width)
    discriminator = Discriminator(image_shape, hparams.width, batch_norm=True)
    for net in (encoder, decoder, discriminator):
        init_weights(net)
    config = VAEGANConfig(
        input_dim=tuple(image_shape),
        latent_dim=hparams.latent_dim,
        reconstruction_layer=DIS_LAYER,
        adversarial_loss_scale=1.0 / (1.0 + gamma),
        **({} if equilibrium else {"margin": NO_MARGIN}),
    )
    return VAEGAN(
        config,
        encoder=PythaeEncoder(encoder),
        decoder=PythaeDecoder(decoder),
        discriminator=PythaeDiscriminator(discriminator),
    )


def pythae_trainer(model, dataset, args, hparams: models.Hparams, device, output_dir: str):
    """Pythae's trainer as a user builds it, with our Adam settings; its progress bar is removed
    (ours runs with progress=False)."""
    adam = {"betas": tuple(hparams.betas)}
    config = CoupledOptimizerAdversarialTrainerConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        num_epochs=1,
        encoder_learning_rate=hparams.lr_g,
        decoder_learning_rate=hparams.lr_g,
        discriminator_learning_rate=hparams.lr_d,
        encoder_optimizer_params=adam,
        decoder_optimizer_params=adam,
        discriminator_optimizer_params=adam,
        no_cuda=device.type != "cuda",
        seed=args.seed,
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)  # Pythae places everything on "cuda", the current device
    trainer = CoupledOptimizerAdversarialTrainer(model, dataset, training_config=config)
    trainer.prepare_training()
    handler = trainer.callback_handler
    handler.callbacks = [c for c in handler.callbacks if not isinstance(c, ProgressBarCallback)]
    return trainer


def time_pythae_epoch(trainer, dataset, args, device) -> float:
    """Warm up on `--warmup` batches through the trainer's own DataLoader factory, then time one
    full train_step (one epoch over the whole dataset)."""
    full_loader = trainer.train_loader
    n_warm = min(len(dataset), args.warmup * args.batch_size)
    warm = BaseDataset(dataset.data[:n_warm], dataset.labels[:n_warm])
    trainer.train_loader = trainer.get_train_dataloader(warm)
    with autocast(device, args.precision):  # the same autocast as ours
        trainer.train_step(0)
        trainer.train_loader = full_loader
        return timed(lambda: trainer.train_step(1), device)


def time_our_epoch(model, images: torch.Tensor, args, device) -> tuple[float, int]:
    """Warm up `--warmup` steps, then time one epoch (every full batch of the split) through
    bench.train.train; returns (seconds, images trained on)."""
    precision = args.precision
    train(
        model, images, args.batch_size, args.warmup, args.seed, args.log_every, no_log, False,
        precision=precision,
    )  # fmt: skip
    steps = steps_per_epoch(len(images), args.batch_size)
    seconds = timed(
        lambda: train(
            model, images, args.batch_size, steps, args.seed + 1, args.log_every, no_log, False,
            precision=precision,
        ),
        device,
    )  # fmt: skip
    return seconds, steps * args.batch_size


def usable_split(data: ImageData, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images and labels; one image is dropped when the last batch would hold a single
    image (Pythae keeps the last partial batch, and batch norm cannot train on one image)."""
    images, labels = data.train.images, data.train.labels
    if len(images) % batch_size == 1:
        images, labels = images[:-1], labels[:-1]
    return images, labels


def peer_comparison(data: ImageData, args, hparams: models.Hparams, device) -> None:
    section("1. peer comparison: one training epoch, this project vs Pythae (same networks)")
    images_u8, labels = usable_split(data, args.batch_size)
    gamma = models.validate_options("vaegan", PEER_OPTIONS).gamma
    say(
        f"VAE-GAN recon=disfeat (Dis_{DIS_LAYER}), BCE; {data.name} {len(images_u8)} train "
        f"images {tuple(data.image_shape)}; batch {args.batch_size}; latent {hparams.latent_dim}; "
        f"width {hparams.width}; Adam lr enc/dec {hparams.lr_g}, dis {hparams.lr_d}, betas "
        f"{tuple(hparams.betas)}; gamma {gamma} (Pythae adversarial_loss_scale "
        f"{1 / (1 + gamma):.4f}); warm-up {args.warmup} steps each; {args.precision} (both "
        "under the same autocast)"
    )
    our_images = to_model_range(images_u8, device)
    ours = {}  # schedule -> (seconds, images)
    for update in SCHEDULES:
        model = build_ours(data.image_shape, hparams, device, args.seed, update)
        ours[update] = time_our_epoch(model, our_images, args, device)
        del model
    del our_images

    dataset = BaseDataset(to_model_range(images_u8, "cpu"), labels)
    model = build_pythae(data.image_shape, hparams, gamma, args.pythae_equilibrium, args.seed)
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = pythae_trainer(model, dataset, args, hparams, device, output_dir)
        pythae_seconds = time_pythae_epoch(trainer, dataset, args, device)
    pythae_count = len(dataset)
    del trainer, model

    pythae_rate = pythae_count / pythae_seconds
    rows = [
        [
            f"ours, update={update}: bench.train.train",
            count,
            f"{seconds:.2f}",
            f"{count / seconds:,.1f}",
        ]
        for update, (seconds, count) in ours.items()
    ]
    rows.append(
        [
            "Pythae: CoupledOptimizerAdversarialTrainer.train_step",
            pythae_count,
            f"{pythae_seconds:.2f}",
            f"{pythae_rate:,.1f}",
        ]
    )
    print(table(["training loop", "images", "epoch wall s", "images/s"], rows))
    target = TARGET_RATIO[device.type]
    for update, (seconds, count) in ours.items():
        ratio = count / seconds / pythae_rate
        verdict = "met" if ratio >= target else "NOT met"
        same = " (the same schedule as Pythae's)" if update == "simultaneous" else ""
        print(
            f"ratio ours update={update}{same} / Pythae: {ratio:.2f}x "
            f"(target >= {target}x on {device.type}: {verdict})"
        )
    print_differences(args.pythae_equilibrium)


def print_differences(equilibrium: bool) -> None:
    skipping = (
        "kept (--pythae-equilibrium): Pythae skips the discriminator / decoder update while a BCE "
        "term is outside 0.68 +- 0.4"
        if equilibrium
        else f"disabled (margin {NO_MARGIN:g}): every step updates all three networks, as ours"
    )
    lines = [
        "data path: Pythae iterates a DataLoader (shuffled, num_workers 0, per-image __getitem__ "
        "+ collate, host-to-device copy per batch on CUDA, last partial batch kept); ours indexes "
        "the split held on the device (one randperm per epoch, last partial batch dropped)",
        "host syncs: Pythae reads 4 losses with .item() every batch; ours fetches the loss means "
        "once per --log-every steps",
        "work per step: ours with update=simultaneous (Larsen et al.'s Algorithm 1) builds one "
        "graph (3 full discriminator passes: reals, reconstructions, prior samples; + 1 pass to "
        "Dis_3 over reconstructions and reals together, so that batch norm treats both alike) "
        "and steps all three networks on 3 gradients restricted to each network's parameters "
        "(torch.autograd.grad); ours with update=alternating (the default) updates the "
        "discriminator first (3 full passes), then encoder/decoder against the updated one (2 full "
        "passes + the same joint pass to Dis_3); Pythae builds one graph (2 full passes + 2 to "
        "Dis_3, reals and reconstructions in separate batches) and steps all three networks "
        "after 3 full backward() calls",
        "losses: Pythae's discriminator sees reals vs prior samples only (not reconstructions) "
        "and its decoder takes (1-s)*L_llike - s*L_dis (minimax), BCE on sigmoid probabilities; "
        "ours: reals vs reconstructions and prior samples, decoder gamma*L_llike + non-saturating "
        "-log D(x~) - log D(x_p) on logits. L_llike = 1/2 ||Dis_3(x~) - Dis_3(x)||^2 in both",
        "gradient routing: Pythae calls backward() per loss and zeroes only that network's grads "
        "first, so the decoder steps on grad(decoder_loss + discriminator_loss) and the encoder "
        "on grad(encoder_loss + decoder_loss); ours gives each network its own loss's gradient",
        f"Pythae's equilibrium trick: {skipping}",
        "optimizer: Adam with the same learning rates and betas in both; ours is fused on CUDA, "
        "Pythae's uses torch's default implementation",
        "initialisation: same networks, same DCGAN init and seed; Pythae's trainer reseeds with "
        "the same --seed before its optimizers are built",
    ]
    print("differences that remain:")
    for text in lines:
        say(text, indent="  - ")


# --- part 2: every variant of the registry ----------------------------------------------------


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
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train(
        model, images, args.batch_size, args.warmup, args.seed, args.log_every, no_log, False,
        precision=args.precision,
    )  # fmt: skip
    seconds = timed(
        lambda: train(
            model, images, args.batch_size, args.steps, args.seed + 1, args.log_every, no_log,
            False, precision=args.precision,
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
        f"{args.warmup} steps; {memory}"
    )
    rows = []
    for label, name, options in registered_variants():
        rate, peak = variant_throughput(name, options, images, data, args, hparams, device)
        rows.append([label, f"{rate:,.1f}", f"{1000 * args.batch_size / rate:.1f}", mib(peak)])
    print(table(["variant", "images/s", "ms/step", "peak MiB"], rows))


# --- part 3: harness overhead on a suite ------------------------------------------------------


def read_cell_timings(uri: str, experiment_name: str) -> list[list]:
    """[label, status, train s, eval s, cell s] per run of the experiment. eval_seconds is summed
    over its history (evaluations during training log it too, and are excluded from
    train_seconds)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    rows = []
    for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"]):
        metrics = run.data.metrics
        evals = client.get_metric_history(run.info.run_id, keys.EVAL_SECONDS)
        rows.append(
            [
                run.data.tags.get(keys.TAG_LABEL, run.info.run_name),
                run.data.tags.get(keys.TAG_STATUS, run.info.status.lower()),
                metrics.get(keys.TRAIN_SECONDS, 0.0),
                sum(m.value for m in evals),
                metrics.get(keys.CELL_SECONDS, 0.0),
            ]
        )
    return rows


def harness_overhead(path: str, device: str) -> None:
    section(f"3. harness overhead: {path} run in-process by bench.runner.run_suite")
    # imported here: bench.runner needs MLflow, parts 1 and 2 do not (a GPU machine may have only
    # torch, pydantic and pythae)
    from bench.run.runner import run_suite

    try:
        suite = load_suite(path)
    except SuiteError as err:
        print(f"suite skipped: {err}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        started = time.perf_counter()
        try:
            summary = run_suite(
                suite,
                tracking_uri=uri,
                device=device,
                progress=False,
                echo=lambda line: print(f"  | {line}"),
                suite_text=Path(path).read_text(),
                checkpoint_dir=Path(tmp) / "checkpoints",
            )
        except (DatasetNotFound, SuiteError) as err:
            print(f"suite skipped: {err}")
            return
        wall = time.perf_counter() - started
        rows = read_cell_timings(uri, suite.name)
    print_overhead(rows, wall, summary.ok)


def print_overhead(rows: list[list], wall: float, ok: bool) -> None:
    train_s, eval_s, cell_s = (sum(row[i] for row in rows) for i in (2, 3, 4))
    shown = [[label, status, f"{t:.2f}", f"{e:.2f}", f"{c:.2f}"] for label, status, t, e, c in rows]
    shown.append(["total", "", f"{train_s:.2f}", f"{eval_s:.2f}", f"{cell_s:.2f}"])
    print(table(["cell", "status", "train_seconds", "eval_seconds", "cell_seconds"], shown))
    overhead = wall - train_s - eval_s
    share = overhead / wall
    verdict = "met" if share < TARGET_OVERHEAD else "NOT met"
    print(f"suite wall time {wall:.2f} s" + ("" if ok else " (not every cell finished)"))
    print(
        f"overhead = wall - sum train - sum eval = {overhead:.2f} s = {share:.1%} of the wall "
        f"time (target < {TARGET_OVERHEAD:.0%}: {verdict})"
    )
    say(
        f"outside the cells (store, data, domain classifier, summary): {wall - cell_s:.2f} s "
        f"({(wall - cell_s) / wall:.1%}); inside the cells (model build, checkpoints, artifacts, "
        f"tracking): {cell_s - train_s - eval_s:.2f} s ({(cell_s - train_s - eval_s) / wall:.1%})",
        indent="  ",
    )


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_pythae()
    try:
        device = select_device(args.device)
    except SuiteError as err:
        sys.exit(f"error: {err}")
    hparams = models.Hparams(latent_dim=args.latent_dim, width=args.width)
    print("VAE-GAN throughput: this project vs Pythae " + "=" * 56)
    for line in machine_facts(device):
        print(line)
    data = load_images(args)
    print(f"data: {data.name} from {data.source}, {len(data.train.images)} training images")
    peer_comparison(data, args, hparams, device)
    variants_alone(data, args, hparams, device)
    if args.skip_suite:
        print("\n(part 3 skipped: --skip-suite)")
    else:
        harness_overhead(args.suite, args.device)


if __name__ == "__main__":
    main()
