"""What a suite's compute settings mean on the device it runs on.

bf16 autocast is a speed switch, so it only makes sense where the hardware computes in bf16
(bench/tracking/provenance.py bf16_native: a CPU with AMX or AVX-512 BF16, a GPU of compute
capability 8.0 or later). On a CPU without them bf16 is emulated through fp32: measured steps ran
7-14 times *slower* than fp32 (AMD EPYC, 2 cores; README "Speed and scale-out"). `bench run`
refuses such a run before anything is written, unless told to insist (check_bf16).

channels_last (NHWC) in fp32 computes the same losses as the default layout within the project's
tolerance (1e-3, tests/test_compute_switches.py) and was faster on both CPU kinds measured: AMD
EPYC without AVX-512 1.29-1.58x, Intel Xeon with AMX 1.03-1.23x (README). `auto`, the default,
turns it on for CPUs. On CUDA it stays off until it is measured there.
"""

from __future__ import annotations

import torch

from bench.suite.schema import SuiteError
from bench.tracking.provenance import bf16_native, cpu_model, device_name

BF16_FLAG = "--allow-slow-bf16"  # bench run's flag that trains in bf16 without native support
__all__ = ["BF16_FLAG", "bf16_native", "channels_last_for", "check_bf16", "device_name"]


def check_bf16(precision: str, device: torch.device, allow: bool = False) -> None:
    """Refuse bf16 training where the device has no native bf16 (a SuiteError: one line, exit 2),
    unless `allow` (bench run --allow-slow-bf16) insists."""
    if precision != "bf16" or allow or bf16_native(device):
        return
    what = cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(device)
    raise SuiteError(
        f"compute.precision: bf16 on {what}, which has no native bf16 (no AMX or AVX-512 BF16 "
        "on a CPU, compute capability < 8.0 on a GPU): it would train several times slower than "
        f"fp32; rerun with --precision fp32 (or {BF16_FLAG} to insist)"
    )


def channels_last_for(setting: bool | str, device: torch.device) -> bool:
    """What `compute.channels_last` means on `device`: true or false as given; auto: on for CPUs."""
    if setting == "auto":
        return device.type == "cpu"
    return bool(setting)
