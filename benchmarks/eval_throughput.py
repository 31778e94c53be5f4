"""Evaluation throughput on this machine: prints figures, asserts nothing.

    uv run python benchmarks/eval_throughput.py [--dataset fashion-mnist] [--samples 10000]

Prints: images/s of generated images through the domain feature extractor; the wall time of one
cell's full evaluation with `--samples` samples, cold (no cached real statistics) and warm (real
statistics cached by torch-fidelity). The domain classifier is trained or loaded first and its
time is printed separately (it is cached across suites).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from figures import machine_line

import models
from bench.data import DatasetNotFound, load_dataset
from bench.data.config import DatasetConfig
from bench.metrics import evaluate
from bench.metrics.settings import EvaluationConfig
from bench.run.train import select_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", default=None, help="classifier cache (default: usual)")
    args = parser.parse_args()

    device = select_device(args.device)
    try:
        data = load_dataset(args.dataset)
    except DatasetNotFound as err:
        print(f"{err}\nfalling back to the synthetic dataset")
        data = load_dataset("synthetic", train_limit=20000, eval_limit=10000)
    print(machine_line(device))
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, dataset {data.name} "
        f"({len(data.train.images)} train / {len(data.eval.images)} eval)"
    )

    config = EvaluationConfig(
        num_samples=args.samples, batch_size=args.batch_size, feature_extractors=["domain"]
    )
    with tempfile.TemporaryDirectory() as stats_dir:
        started = time.perf_counter()
        evaluator = evaluate.prepare(
            data, DatasetConfig(name=data.name), config, device, log=lambda line: print(line)
        )
        print(
            f"domain classifier ready in {time.perf_counter() - started:.1f} s "
            f"(test accuracy {evaluator.classifier_accuracy:.4f})"
        )
        evaluator.cache_dir = Path(stats_dir)  # torch-fidelity's real statistics start cold

        torch.manual_seed(0)
        model = models.build("vaegan", {}, data.image_shape, models.Hparams(), device)
        fake = evaluate.generate(model, args.samples, args.batch_size, seed=0)
        evaluator.embed(fake[: args.batch_size])  # warm-up
        started = time.perf_counter()
        evaluator.embed(fake)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        print(f"domain features: {args.samples / seconds:,.0f} generated images/s")

        for label in ("cold (real statistics computed)", "warm (real statistics cached)"):
            started = time.perf_counter()
            metrics, _ = evaluate.evaluate(model, evaluator, seed=0)
            print(
                f"full evaluation of one cell, {args.samples} samples, {label}: "
                f"{time.perf_counter() - started:.1f} s"
            )
        print(
            "metrics of the (untrained) model:",
            {k: round(v, 4) for k, v in sorted(metrics.items())},
        )


if __name__ == "__main__":
    main()
