"""The device of the device-aware tests (marked `device`): cpu unless `pytest --device cuda`
(benchmarks/gpu_run.py runs `pytest -m device --device cuda` on a lent GPU). Elsewhere every test
runs on the CPU, as CI does."""

from __future__ import annotations

import os

import torch

ENV = "BENCH_TEST_DEVICE"  # set by tests/conftest.py from --device, read here and by subprocesses


def chosen_device() -> torch.device:
    return torch.device(os.environ.get(ENV, "cpu"))
