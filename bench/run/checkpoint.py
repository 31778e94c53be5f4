"""Local training checkpoints: what an interrupted cell resumes from, one file per cell.

    <root>/<suite name>/<cell id>/checkpoint.pt        root: --checkpoint-dir, .bench/checkpoints

The path is built from the suite name (restricted by bench.suite) and the cell id (hex) only, never
from a label, so nothing a suite says can point outside the root. A write goes to a temporary file
in the same folder and is renamed over the previous checkpoint (os.replace is atomic), so a kill
in the middle of a write leaves the previous checkpoint whole. Checkpoints are read with
torch.load(..., weights_only=True): tensors and plain containers only, never pickled code.

The content is bench.train's training state plus the runner's bookkeeping (run id, cell id,
device type). A cell's folder is removed once its run is finished: the final weights are then in
the run's artifacts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from bench.suite.schema import SAFE_NAME

DEFAULT_ROOT = Path(".bench") / "checkpoints"
FILE = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """The checkpoint folder cannot be written, or a checkpoint cannot be read; str() says which."""


def cell_folder(root: str | Path, suite: str, cell_id: str) -> Path:
    for part in (suite, cell_id):
        if not SAFE_NAME.fullmatch(part):  # bench.suite already guarantees this; a bug otherwise
            raise ValueError(f"unsafe checkpoint path component {part!r}")
    return Path(root) / suite / cell_id


def check_writable(root: str | Path) -> None:
    """Fail with one line now, before anything is trained or tracked, if `root` cannot hold
    checkpoints."""
    root = Path(root)
    probe = root / ".write-test"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"checkpoint folder {root} cannot be written ({err.strerror or err}); "
            "choose another with --checkpoint-dir"
        ) from None


def save(folder: Path, state: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    partial = folder / (FILE + ".partial")  # one writer per cell: a fixed name never piles up
    with open(partial, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    return path


def load(folder: Path) -> dict | None:
    """The cell's checkpoint on the CPU, or None when there is none."""
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated by a full disk, or not ours: unpickling refused it
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}".splitlines()[0]) from None


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # the suite's folder, once its last cell is done
    except OSError:
        pass  # other cells' checkpoints are still in it
