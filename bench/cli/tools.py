"""`bench images` and `bench score`: the data tools beside the suites (write a dataset as image
files; score any two image sets with the harness's metrics). Registered on `bench` in
bench/cli/__init__.py."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.common import user_errors
from bench.data.config import DATASETS


@click.command(name="images")
@click.argument("dataset", type=click.Choice(DATASETS))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--flat", is_flag=True, help="No class subfolders: an unlabelled folder.")
@click.option("--train-limit", type=click.IntRange(min=1), default=None, help="Seeded subset.")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None, help="Seeded subset.")
@click.option("--crop", type=click.IntRange(min=1), default=None, help="Centre crop to N x N.")
@click.option("--image-size", type=click.IntRange(min=1), default=None, help="Resize to N x N.")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Channels.")
@click.option("--data-root", default=None, help="Where the dataset's files are.")
@user_errors
def images(dataset, out, flat, train_limit, eval_limit, crop, image_size, channels, data_root):
    """Write a dataset's train and test splits as PNG files under OUT/train and OUT/test (one
    subfolder per class, or flat): a folder `dataset: {name: folder}` reads back, e.g. a 64x64
    RGB folder for suites/folder64_smoke.yaml."""
    from bench.data.datasets import write_dataset_folder

    channels = int(channels) if channels else None
    for line in write_dataset_folder(
        dataset, Path(out), flat, train_limit, eval_limit, crop, image_size, channels, data_root
    ):
        click.echo(line)


@click.command()
@click.argument("real", type=click.Path())
@click.argument("fake", type=click.Path())
@click.option(
    "--dataset",
    default=None,
    help="Score in the domain space of this dataset (the network its suites use, from the same "
    "cache; trained once when missing), e.g. fashion-mnist.",
)
@click.option(
    "--train-domain",
    is_flag=True,
    help="Score in a domain network trained on REAL: a classifier when REAL has classes, the "
    "rotation network otherwise.",
)
@click.option("--data-root", default=None, help="Where --dataset's files are.")
@click.option("--crop", type=click.IntRange(min=1), default=None, help="Centre crop to N x N.")
@click.option("--image-size", type=click.IntRange(min=1), default=None, help="Resize to N x N.")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Channels.")
@click.option(
    "--inception-weights",
    default=None,
    type=click.Path(dir_okay=False),
    help="Inception-v3 weights file (torch-fidelity's format); default: torch hub's cache, "
    "torch-fidelity's download, or the `inception` extra's network, converted once.",
)
@click.option(
    "--inception/--no-inception",
    default=True,
    show_default=True,
    help="The *_inception metrics (about 8 images/s on 2 CPU cores).",
)
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
@user_errors
def score(
    real, fake, dataset, train_domain, data_root, crop, image_size, channels, inception_weights,
    inception, batch_size, device, output_format,
):  # fmt: skip
    """The harness's sample metrics of FAKE against REAL (each an image folder or an .npz), in the
    feature spaces of a run; JSON keys are the runs' metric names, plus inception_source (where
    the Inception weights came from) or inception_skipped (why there are no Inception metrics)."""
    import json

    from bench.data.cache import default_cache_dir
    from bench.data.preprocess import Preprocessing
    from bench.metrics import score as scoring
    from bench.run.train import select_device

    preprocessing = Preprocessing(crop, image_size, int(channels) if channels else None)
    log = (lambda line: click.echo(line, err=True)) if output_format == "json" else click.echo
    metrics, header, tags = scoring.score_paths(
        real, fake, dataset, train_domain, data_root, preprocessing, channels is None,
        select_device(device), batch_size, inception_weights, default_cache_dir(), log,
        inception,
    )  # fmt: skip
    if output_format == "json":
        click.echo(json.dumps(metrics | tags, sort_keys=True))
        return
    click.echo(header)
    for name, value in metrics.items():  # the metric table's order
        click.echo(f"  {name:24s} {value:.6g}")
    for name, value in tags.items():
        click.echo(f"  {name}: {value}")
