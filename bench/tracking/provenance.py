"""Where a result came from: code version, library versions, device (logged as run tags)."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import torch

from bench import keys
from bench.data.images import ImageData

PACKAGES = ("torch", "torchvision", "torch-fidelity", "mlflow", "vaegan-bench")


@cache
def git_commit() -> str | None:
    """HEAD of the harness's checkout, with -dirty for uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


@cache
def cpu_model() -> str:
    """The CPU's model name as lscpu shows it ("AMD EPYC 7B13", "Intel(R) Xeon(R) ...")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_units() -> list[str]:
    """The CPU's native bf16 units, as torch detects them for its kernels: AMX, AVX-512 BF16."""
    units = []
    if torch.cpu._is_amx_tile_supported():
        units.append("AMX")
    if torch.cpu._is_avx512_bf16_supported():
        units.append("AVX-512 BF16")
    return units


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 itself: a CPU with AMX or AVX-512 BF16, a GPU of
    compute capability 8.0 or later. Elsewhere bf16 is emulated through fp32 (slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and bool(cpu_bf16_units())


def device_name(device: torch.device) -> str:
    """The device, what it is and whether bf16 is native there: the line that goes beside every
    speed figure, so that figures from different machines are never compared blindly."""
    native = "yes" if bf16_native(device) else "no"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return (
            f"cuda:{index} ({torch.cuda.get_device_name(index)}, compute capability "
            f"{major}.{minor}; bf16 native: {native})"
        )
    units = cpu_bf16_units() if device.type == "cpu" else []
    why = f": {', '.join(units)}" if units else ""
    return (
        f"{device.type} ({cpu_model()}, {torch.get_num_threads()} threads; "
        f"bf16 native: {native}{why})"
    )


def data_tags(data: ImageData, domain_task: str) -> dict[str, str]:
    """Where the data came from, how it was preprocessed and split, and its content hash."""
    return {
        keys.TAG_DATA_SOURCE: data.source,
        keys.TAG_DATA_PREPROCESSING: data.preprocessing.describe(),
        keys.TAG_DATA_SPLIT_RULE: data.split_rule,
        keys.TAG_DATA_FINGERPRINT: data.fingerprint,
        keys.TAG_DOMAIN_TASK: domain_task,
    }


def tags(device: torch.device) -> dict[str, str]:
    result = {keys.TAG_DEVICE: device_name(device)}
    commit = git_commit()
    if commit:
        result[keys.TAG_GIT_COMMIT] = commit
    result[keys.TAG_VERSION_PREFIX + "python"] = platform.python_version()
    for package in PACKAGES:
        # mlflow may be installed as mlflow-skinny (the GPU machine's bundle): the same package
        for distribution in (package, f"{package}-skinny") if package == "mlflow" else (package,):
            try:
                result[keys.TAG_VERSION_PREFIX + package] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return result
