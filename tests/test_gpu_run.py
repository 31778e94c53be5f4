"""benchmarks/gpu_run.sh --rehearse: the GPU machine's one call, rehearsed on the CPU with tiny
budgets and synthetic data, so that the script is proven before a GPU is lent. Every stage must
pass, and what comes back must fit the device tool's limits (8 files of at most 16 MiB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow  # every stage on 2 CPU cores: ~8 minutes
def test_the_gpu_run_rehearsal_passes_every_stage_and_fits_what_comes_back(tmp_path):
    out = tmp_path / "out"
    environment = dict(os.environ, PYTHON=sys.executable)
    environment.pop("OUT", None)
    result = subprocess.run(
        ["bash", "benchmarks/gpu_run.sh", "--rehearse", "--out", str(out)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    summary = (out / "summary.txt").read_text()
    assert result.returncode == 0, summary + result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.rstrip().endswith(summary.rstrip().splitlines()[-1])  # printed last
    for stage in ("tests", "kill-resume", "switches", "pythae-fp32", "pythae-bf16", "profile",
                  "probe-K1", "probe-K2", "report"):  # fmt: skip
        assert any(line.split()[:2] == [stage, "ok"] for line in summary.splitlines()), summary
    assert "ablation-K" in summary and "budget.epochs=" in summary

    files = sorted(p.name for p in out.iterdir())
    assert files == ["logs.tar.gz", "profile.txt", "report.tar.gz", "speed.json",
                     "store.tar.gz", "summary.txt"]  # fmt: skip
    assert all((out / name).stat().st_size <= 16 * 2**20 for name in files)
    assert "within 8 files of 16 MiB" in summary

    with tarfile.open(out / "store.tar.gz") as archive:
        names = archive.getnames()
    assert "store/ablation.db" in names
    assert not [n for n in names if n.endswith(".pt") or "/checkpoint/" in n]  # weights stay
    with tarfile.open(out / "report.tar.gz") as archive:
        assert {"report/report.md", "report/report.html"} <= set(archive.getnames())
    rows = json.loads((out / "speed.json").read_text())
    switches = {row["switch"] for row in rows}
    assert {"eager", "bf16", "channels_last", "bf16+channels_last", "compile"} <= switches
    assert all(row["within"] for row in rows), rows  # every switch within its loss tolerance
    profile = (out / "profile.txt").read_text()
    assert "ms per step" in profile and "Self CPU" in profile
