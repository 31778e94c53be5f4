"""What the speed scripts share: wall-time readings around device work, plain-text tables, and the
line naming the machine, printed beside every figure so that figures from different machines are
never compared blindly (the CPU model, its threads, whether bf16 is native there)."""

from __future__ import annotations

import re
import textwrap
import time

import torch

from bench.tracking.provenance import device_name

NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def machine_line(device: torch.device) -> str:
    """`machine: cpu (Intel(R) Xeon(R) ..., 2 threads; bf16 native: yes: AMX, ...)`."""
    return f"machine: {device_name(device)}, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds of wall time of fn(), the device synchronised before both clock readings."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def table(headers: list[str], rows: list[list]) -> str:
    """Plain text table: text columns left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _is_number(value) -> bool:
    return NUMBER.fullmatch(str(value)) is not None


def say(text: str, indent: str = "") -> None:
    """Print a paragraph wrapped to 100 columns."""
    print(textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=" " * len(indent)))


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 96 - len(title)))


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f}"
