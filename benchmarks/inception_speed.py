"""Images/s of the Inception feature extraction on this machine: torch-fidelity's extractor (the
weights from bench/metrics/inception_weights.py) on 28x28 grayscale images, the way evaluation
runs it (uint8 in, resized to 299 inside), in plain fp32, fp32 with channels_last weights (what
bench/metrics/fidelity.py uses on a CPU), and under bf16 autocast for reference (never used: it
moves the features, and FID, by percent). Also the largest feature difference to plain fp32.

    uv run python benchmarks/inception_speed.py --threads 2 --batches 3 --batch-size 25
"""

from __future__ import annotations

import argparse
import time

import torch
from figures import machine_line

from bench.metrics import inception_weights

MODES = ("fp32", "fp32+channels_last", "bf16 autocast")


def measure(
    network, images: torch.Tensor, batch_size: int, mode: str
) -> tuple[float, torch.Tensor]:
    """(images/s, features) over `images` in batches, after one warm-up batch."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16 autocast")
    with torch.no_grad(), autocast:
        network(images[:batch_size])
        started = time.perf_counter()
        features = [
            network(images[i : i + batch_size])[0].float()
            for i in range(0, len(images), batch_size)
        ]
        seconds = time.perf_counter() - started
    return len(images) / seconds, torch.cat(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = inception_weights.resolve(None)
    if weights is None:
        raise SystemExit(inception_weights.skip_reason())
    generator = torch.Generator().manual_seed(0)
    count = args.batches * args.batch_size
    gray = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=generator)
    images = gray.expand(-1, 3, -1, -1).contiguous()
    print(machine_line(torch.device("cpu")))
    print(f"{count} images in batches of {args.batch_size}; weights: {weights.source}")
    plain = inception_weights.extractor(weights.path)
    reference = None
    for mode in MODES:
        network = plain
        if mode == "fp32+channels_last":
            network = inception_weights.extractor(weights.path).to(
                memory_format=torch.channels_last
            )
        rate, features = measure(network, images, args.batch_size, mode)
        reference = features if reference is None else reference
        difference = (features - reference).abs().max().item()
        print(
            f"  {mode:20s} {rate:6.2f} images/s   max feature difference to fp32 {difference:.2g}"
        )


if __name__ == "__main__":
    main()
