"""Part 1 of vaegan_vs_pythae.py: this project's VAE-GAN against Pythae's VAEGAN (Larsen et
al.) on the same networks, data, batch, latent size, Dis_l and Adam settings, one training epoch
each (README "Speed and scale-out").

Both sides run with the best settings each offers its users on this device: ours with its
`compute.channels_last` as the harness resolves it (`auto`: NHWC on CPUs), Pythae as shipped
(its trainer has no memory-format option). Where ours runs NHWC, a third row gives Pythae the
same layout by converting its networks by hand (not something Pythae offers), so that the ratio
can also be read layout for layout.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import torch
from figures import say, section, table, timed

import models
from bench.data import ImageData, to_model_range
from bench.run.train import MEMORY_FORMATS, autocast, steps_per_epoch, train
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
    sys.exit(f"{err}: run with `uv run --group benchmarks python {Path(sys.argv[0]).name}`")

DIS_LAYER = 3  # Dis_l of the comparison: our VaeGan's default dis_layer
NO_MARGIN = 1e9  # Pythae's equilibrium margin that never skips an update
TARGET_RATIO = {"cpu": 1.5, "cuda": 3.0}
PEER_OPTIONS = {"recon": "disfeat", "adversarial": "bce"}
# our two update schedules; "simultaneous" (Larsen et al.'s Algorithm 1) is Pythae's schedule too
SCHEDULES = ("simultaneous", "alternating")


def quiet_pythae() -> None:
    """Pythae's modules log INFO lines to the console (sanity check, folders): keep warnings."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)


def no_log(step: int, means: dict[str, float]) -> None:
    """The harness's log callback, doing nothing (no tracking store here)."""


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


def build_ours(image_shape, hparams: models.Hparams, device, seed: int, update, channels_last):
    torch.manual_seed(seed)
    options = PEER_OPTIONS | {"update": update}
    model = models.build("vaegan", options, image_shape, hparams, device)
    if channels_last:  # as bench/run/cell.py does for the cell's resolved compute.channels_last
        model.to_channels_last()
    return model


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
    precision, layout = args.precision, MEMORY_FORMATS[args.nhwc]
    train(
        model, images, args.batch_size, args.warmup, args.seed, args.log_every, no_log, False,
        precision=precision, memory_format=layout,
    )  # fmt: skip
    steps = steps_per_epoch(len(images), args.batch_size)
    seconds = timed(
        lambda: train(
            model, images, args.batch_size, steps, args.seed + 1, args.log_every, no_log, False,
            precision=precision, memory_format=layout,
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
        f"under the same autocast); ours in {'channels_last' if args.nhwc else 'contiguous'} "
        f"(compute.channels_last {args.channels_last})"
    )
    our_images = to_model_range(images_u8, device)
    layout = "channels_last" if args.nhwc else "contiguous"
    ours = {}  # schedule -> (seconds, images)
    for update in SCHEDULES:
        model = build_ours(data.image_shape, hparams, device, args.seed, update, args.nhwc)
        ours[update] = time_our_epoch(model, our_images, args, device)
        del model
    del our_images

    dataset = BaseDataset(to_model_range(images_u8, "cpu"), labels)
    pythae = {}  # Pythae's row name -> (seconds, images)
    for nhwc in (False, True) if args.nhwc else (False,):
        model = build_pythae(data.image_shape, hparams, gamma, args.pythae_equilibrium, args.seed)
        if nhwc:  # by hand: conv outputs follow NHWC weights, so activations stay NHWC
            model.to(memory_format=torch.channels_last)
        with tempfile.TemporaryDirectory() as output_dir:
            trainer = pythae_trainer(model, dataset, args, hparams, device, output_dir)
            name = "networks made channels_last by hand" if nhwc else "as shipped"
            pythae[name] = (time_pythae_epoch(trainer, dataset, args, device), len(dataset))
        del trainer, model

    rows = [
        [f"ours, update={update}, {layout}", count, f"{seconds:.2f}", f"{count / seconds:,.1f}"]
        for update, (seconds, count) in ours.items()
    ]
    rows += [
        [f"Pythae, {name}", count, f"{seconds:.2f}", f"{count / seconds:,.1f}"]
        for name, (seconds, count) in pythae.items()
    ]
    print(table(["training loop", "images", "epoch wall s", "images/s"], rows))
    target = TARGET_RATIO[device.type]
    for name, (p_seconds, p_count) in pythae.items():
        for update, (seconds, count) in ours.items():
            ratio = count / seconds / (p_count / p_seconds)
            verdict = "met" if ratio >= target else "NOT met"
            same = " (Pythae's schedule)" if update == "simultaneous" else ""
            print(
                f"ratio ours update={update}{same} / Pythae {name}: {ratio:.2f}x "
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
