"""What every cell of a suite run shares in one process: the data on the device, the evaluator,
the store (a SuiteContext, built from picklable RunSettings), and the stop signals (the first
SIGINT / SIGTERM stops training at the next step boundary; a second Ctrl-C stops at once).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import tracking
from bench.data.cache import default_cache_dir
from bench.data.datasets import ENV_ROOT, hold_out_validation, load_dataset, validation_size
from bench.data.image_files import ImageFileError
from bench.data.images import DatasetNotFound, DeviceMemoryError, ImageData, on_device
from bench.metrics import domain, evaluate
from bench.metrics.fidelity import MIN_SAMPLES
from bench.run.train import (
    select_device,
)
from bench.suite.load import check_image_shape
from bench.suite.schema import Suite, SuiteError
from bench.tracking import claims, provenance
from models.networks import SUPPORTED_SIZES


def load_suite_data(
    suite: Suite, cli_root: str | None = None, cache_dir: str | Path | None = None
) -> ImageData:
    d = suite.dataset
    try:
        data = load_dataset(
            d.name,
            d.root,
            cli_root,
            d.train_split,
            d.eval_split,
            d.train_limit,
            d.eval_limit,
            subset_seed=d.subset_seed,
            cache_dir=cache_dir,
            **d.load_options(),
        )
    except DatasetNotFound:
        raise
    except ImageFileError as err:  # one line naming the file and the fix already
        raise DatasetNotFound(str(err)) from None
    except (OSError, EOFError, ValueError) as err:  # files named right but corrupt (bad gzip)
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        where = d.root or cli_root or os.environ.get(ENV_ROOT) or "its default folders"
        raise DatasetNotFound(
            f"dataset {d.name!r} in {where}: its files cannot be read ({problem}); "
            f"check dataset.root, --data-root or {ENV_ROOT}"
        ) from None
    for split, limit, images in (
        ("train", d.train_limit, data.train.images),
        ("eval", d.eval_limit, data.eval.images),
    ):
        if limit is not None and limit > len(images):
            raise SuiteError(
                f"dataset.{split}_limit {limit} is larger than the {split} split "
                f"({len(images)} images); lower it or leave it out"
            )
    if suite.search is not None:
        data = _hold_out_validation(suite, data)
    size = data.image_shape[1:]
    if size[0] != size[1] or size[0] not in SUPPORTED_SIZES:
        raise SuiteError(
            f"dataset {d.name!r}: images are {size[1]}x{size[0]}; the networks take square images "
            f"of {', '.join(map(str, SUPPORTED_SIZES))} pixels: set dataset.image_size "
            "(and dataset.crop for non-square images)"
        )
    check_image_shape(suite, data.image_shape)
    if suite.budget.batch_size > len(data.train.images):
        raise SuiteError(
            f"budget.batch_size {suite.budget.batch_size} is larger than the training set "
            f"({len(data.train.images)} images); lower it or raise dataset.train_limit"
        )
    return data


def _hold_out_validation(suite: Suite, data: ImageData) -> ImageData:
    """A search's data: its validation images held out of the training split (Cell.validation
    names the rule and the seed), the rest to train on."""
    requested = suite.search.validation
    size = validation_size(len(data.train.images), requested)
    spare = len(data.train.images) - size
    if size < MIN_SAMPLES or spare < max(suite.budget.batch_size, MIN_SAMPLES):
        field = "search.validation" if requested is not None else "dataset.train_limit"
        raise SuiteError(
            f"{field}: holding out {size} of {len(data.train.images)} training images for the "
            f"search's validation leaves {spare} to train on; the validation set needs "
            f"{MIN_SAMPLES} images at least and the rest a batch of {suite.budget.batch_size}"
        )
    return hold_out_validation(data, size, suite.dataset.subset_seed)


class StopSignal:
    """The first SIGINT or SIGTERM is remembered (training asks at every step boundary and stops
    with a checkpoint); a second SIGINT raises KeyboardInterrupt at once."""

    def __init__(self, echo):
        self.received: str | None = None
        self.echo = echo

    def __call__(self) -> str | None:
        return self.received

    def handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        self.echo(f"{self.received}: stopping at the next step boundary (Ctrl-C again: at once)")


@contextmanager
def stop_on_signals(echo) -> Iterator[StopSignal]:
    stop = StopSignal(echo)
    if threading.current_thread() is not threading.main_thread():  # signals reach it only
        yield stop
        return
    # A process started with SIGINT ignored (nohup, a background job of a non-interactive shell)
    # was shielded from the terminal's Ctrl-C on purpose: it keeps ignoring it, as Python does.
    # SIGTERM stops it at a step boundary all the same. Whatever handlers it had come back after.
    catch = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        catch.insert(0, signal.SIGINT)
    previous = {sig: signal.signal(sig, stop.handle) for sig in catch}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class SuiteContext:
    """What every cell of one suite run shares, in one process."""

    client: object
    experiment: str
    evaluator: evaluate.Evaluator  # scores on the evaluation split
    train_images: torch.Tensor  # uint8, on the device (batches are converted one at a time)
    tags: dict[str, str]  # provenance, on every run
    suite_text: str
    progress: bool
    checkpoint_root: Path
    rerun: bool
    echo: object
    stop: StopSignal | None = None
    lease: claims.Lease = claims.Lease()
    started_ms: int = 0  # when this process began the suite (ms): failures since are outcomes
    # a search's trials are scored here: the validation images held out of the training split
    validator: evaluate.Evaluator | None = None

    def evaluator_for(self, cell) -> evaluate.Evaluator:
        """Where `cell` is scored: the validation images for a search trial (the choice is made
        there), the evaluation split for every other cell."""
        if cell.scored_on_validation:
            if self.validator is None:
                raise ValueError(f"{cell.name} is scored on validation images, none held out")
            return self.validator
        return self.evaluator


@dataclass(frozen=True)
class RunSettings:
    """Everything a process needs to rebuild a suite run's SuiteContext: the main process, a
    `--parallel` worker or a Ray worker (picklable; paths absolute)."""

    suite: Suite
    suite_text: str
    tracking_uri: str
    device: str
    data_root: str | None
    checkpoint_root: str
    rerun: bool
    cache_dir: str | None = None  # None: the worker's own default (BENCH_CACHE_DIR, ~/.cache)
    # (file name, bytes) of the main process's domain classifier: installed into a worker's cache
    # when missing there, so every machine measures with the very same network
    classifier: tuple[str, bytes] | None = None
    lease_seconds: float = claims.LEASE_SECONDS  # a claim without a heartbeat this long is dead


def build_context(
    settings: RunSettings, echo, progress: bool, client=None, data: ImageData | None = None
) -> SuiteContext:
    suite = settings.suite
    target = select_device(settings.device)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    data = data if data is not None else load_suite_data(suite, settings.data_root, cache_dir)
    client = client if client is not None else tracking.connect(settings.tracking_uri)
    if settings.classifier is not None:
        domain.install_classifier(cache_dir / settings.classifier[0], settings.classifier[1])
    try:
        train_images = on_device(data.train.images, target, "training set")
        evaluator = evaluate.prepare(
            data, suite.dataset, suite.evaluation, target, settings.data_root, cache_dir, log=echo
        )
        validator = None
        if data.validation is not None:
            validator = evaluate.scoring_on(evaluator, data.validation)
    except DeviceMemoryError as err:
        raise SuiteError(str(err)) from None
    return SuiteContext(
        client=client,
        experiment=tracking.experiment_id(client, suite.name),
        evaluator=evaluator,
        train_images=train_images,
        tags=provenance.tags(target)
        | provenance.data_tags(data, evaluator.classifier.task)
        | evaluator.inception_tags(),
        suite_text=settings.suite_text,
        progress=progress,
        checkpoint_root=Path(settings.checkpoint_root),
        rerun=settings.rerun,
        echo=echo,
        lease=claims.lease_for(settings.tracking_uri, settings.lease_seconds),
        started_ms=int(time.time() * 1000),
        validator=validator,
    )
