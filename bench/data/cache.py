"""The harness's disk cache: where it lives and how files enter it.

Folder: $BENCH_CACHE_DIR, else $XDG_CACHE_HOME/bench, else ~/.cache/bench. It holds the domain
networks (bench/metrics/domain.py), the real images' features (bench/metrics/fidelity.py) and
decoded image folders (bench/data/image_files.py). Every file is written atomically, so a reader
(another suite running in parallel, or an interrupted run) never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

ENV_CACHE_DIR = "BENCH_CACHE_DIR"


def default_cache_dir() -> Path:
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench"


def atomic_save(payload, path: Path) -> None:
    """torch.save to a temp file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(payload, f)
        os.chmod(temp_name, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
