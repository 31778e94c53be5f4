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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    cpu = platform.processor() or platform.machine()
    return f"{device.type} ({cpu}, {torch.get_num_threads()} threads)"


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
