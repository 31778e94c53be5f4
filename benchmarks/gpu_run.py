"""Everything a lent GPU is for, in one call: the CUDA tests, a kill-and-resume on the device, the
speed figures (Pythae ratio, each switch), a profile, the Fashion-MNIST ablation at the largest
budget that fits, and its report, packed into at most 8 files under $OUT.

    bash benchmarks/gpu_run.sh                 # on the GPU machine, .device/ carried (see below)
    bash benchmarks/gpu_run.sh --rehearse      # here, on the CPU: the same stages, tiny budgets

Stdlib only (it runs before the carried wheels are installed). Each stage is a subprocess with its
own time box, logged to logs/NN-stage.log; a stage that fails or times out is recorded and the
next one still runs. The last thing printed is the summary table (the device tool returns only
the tail of the output). Files in $OUT: summary.txt, logs.tar.gz, speed.json, profile.txt,
store.tar.gz (the ablation's SQLite store and artifacts, checkpoints and served models left out:
`bench report fashion_ablation --tracking-uri sqlite:///<unpacked>/ablation.db` renders it here)
and report.tar.gz (the report rendered there).

--rehearse: device cpu, synthetic data of Fashion-MNIST's shape, a few steps per stage, and a
scratch OUT (or --out); it checks the same limits on what comes back (tests/test_gpu_run.py runs
it). On the GPU machine the wheels come from .device/whl and the dataset from .device/data
(benchmarks/device_bundle.sh packs both and checks the 60 MiB limit).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = "suites/fashion_ablation.yaml"
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2**20  # what the device tool brings back
FULL_EPOCHS = 30  # the suite's own budget
CELLS = 21
LEFT_OUT = ("checkpoint", "model")  # artifact folders too large to bring back (weights)


class Stages:
    """Runs stage commands one after the other against one deadline, and keeps their outcomes."""

    def __init__(self, work: Path, deadline: float, environment: dict[str, str]):
        self.work, self.deadline, self.environment = work, deadline, environment
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, command: list[str], budget: float, stop=signal.SIGKILL) -> dict:
        """Run `command` for at most `budget` seconds (and never past the deadline); on time out
        it gets `stop` (SIGTERM lets `bench run` checkpoint and end cleanly), then SIGKILL."""
        log = self.logs / f"{len(self.rows) + 1:02d}-{name}.log"
        limit = min(budget, self.left())
        row = {"stage": name, "status": "skipped", "seconds": 0.0, "log": log.name}
        if limit < 5:
            log.write_text(f"skipped: {self.left():.0f} s left before the deadline\n")
            self.rows.append(row)
            return row
        started = time.monotonic()
        with log.open("w") as output:
            output.write(f"$ {' '.join(command)}\n")
            output.flush()
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.environment, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                code = process.wait(timeout=limit)
                row["status"] = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, stop)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                row["status"] = f"timed out after {limit:.0f} s"
        row["seconds"] = time.monotonic() - started
        self.rows.append(row)
        print(f"[{name}] {row['status']} in {row['seconds']:.0f} s", flush=True)
        return row

    def text(self, row: dict) -> str:
        return (self.logs / row["log"]).read_text(errors="replace")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rehearse", action="store_true", help="the CPU rehearsal (tiny budgets)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="where the 8 files go")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --rehearse")
    parser.add_argument("--deadline", type=float, default=None, help="seconds for all stages")
    parser.add_argument("--ks", default=None, help="--parallel values to try for the ablation")
    parser.add_argument("--data-root", default=str(ROOT / ".device" / "data"))
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.rehearse else "cuda")
    args.deadline = args.deadline or (900.0 if args.rehearse else 520.0)
    args.ks = [int(k) for k in (args.ks or ("1,2" if args.rehearse else "7,21")).split(",")]
    if args.out is None:
        if not args.rehearse:
            parser.error("--out (or $OUT) is needed outside --rehearse")
        args.out = tempfile.mkdtemp(prefix="gpu-run-rehearsal-")
    return args


def ablation_overrides(args, store: Path) -> list[str]:
    """The suite's own data on the GPU machine; synthetic data of its shape in the rehearsal."""
    common = ["--tracking-uri", f"sqlite:///{store}", "--device", args.device, "--no-progress"]
    if not args.rehearse:
        return [*common, "--data-root", args.data_root]
    tiny = ["dataset.name=synthetic", "dataset.train_limit=256", "dataset.eval_limit=128",
            "budget.width=8", "budget.latent_dim=8", "budget.batch_size=32", "budget.log_every=5",
            "evaluation.num_samples=128", "evaluation.batch_size=64", "evaluation.grid_size=16",
            "evaluation.interp_pairs=2", "evaluation.calibration_samples=128",
            "evaluation.ood_images=64", "seeds=[0]"]  # fmt: skip
    return [*common, *(x for s in tiny for x in ("--set", s))]


def bench(*arguments: str) -> list[str]:
    return [sys.executable, "-c", "from bench.cli import main; main()", *arguments]


def rate_of(stages: Stages, row: dict, cells: int, epochs: float) -> float | None:
    """Epochs per second of wall time the probe achieved over all its cells (start-up, training
    and evaluation included), or None if it did not finish."""
    if row["status"] != "ok" or row["seconds"] <= 0:
        return None
    return cells * epochs / row["seconds"]


def run_ablation(stages: Stages, args, work: Path) -> dict:
    """Probe each --parallel K on a short budget, then run the whole suite at the best K with the
    largest budget (in epochs) that the time left allows, stopped by SIGTERM at the deadline."""
    probe_epochs = 0.02 if args.rehearse else 0.1
    cells_per_probe = {}
    rates = {}
    for k in args.ks:
        store = work / f"probe-{k}" / "probe.db"
        store.parent.mkdir(parents=True, exist_ok=True)
        seeds = "[0]" if k <= 7 or args.rehearse else "[0, 1, 2]"
        cells_per_probe[k] = 7 if seeds == "[0]" else CELLS
        probe = stages.run(
            f"probe-K{k}",
            bench("run", SUITE, "--parallel", str(k), "--checkpoint-dir", str(store.parent / "ck"),
                  *ablation_overrides(args, store), "--set", f"budget.epochs={probe_epochs}",
                  "--set", f"seeds={seeds}", "--set", "evaluation.feature_extractors=[domain]"),
            # rehearsal: 7 cells one after another take 60-120 s on 2 busy CPU cores; the
            # rehearsal checks that every stage works, not how fast (the ablation gets what's left)
            budget=240 if args.rehearse else 40,
        )  # fmt: skip
        rates[k] = rate_of(stages, probe, cells_per_probe[k], probe_epochs)
    measured = {k: r for k, r in rates.items() if r}
    best = max(measured, key=measured.get) if measured else args.ks[0]
    reserve = 60.0 if args.rehearse else 45.0  # the report and the packing after the run
    available = max(0.0, stages.left() - reserve)
    cells = 7 if args.rehearse else CELLS
    if measured:
        epochs = min(FULL_EPOCHS, 0.8 * available * measured[best] / cells)
    else:
        epochs = probe_epochs
    epochs = max(probe_epochs, float(f"{epochs:.2g}"))
    store = work / "store" / "ablation.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    row = stages.run(
        f"ablation-K{best}",
        bench("run", SUITE, "--parallel", str(best), "--checkpoint-dir", str(work / "ck"),
              *ablation_overrides(args, store), "--set", f"budget.epochs={epochs}"),
        budget=available,
        stop=signal.SIGTERM,
    )  # fmt: skip
    finished = len(re.findall(r": finished\n", stages.text(row)))
    return {"ks": rates, "best_k": best, "epochs": epochs, "store": store, "finished": finished}


def pack(out: Path, work: Path, stages: Stages, ablation: dict | None) -> list[str]:
    """The files that come back; returns what was left out and why."""
    left_out = []
    with tarfile.open(out / "logs.tar.gz", "w:gz") as archive:
        archive.add(stages.logs, arcname="logs")
    for name in ("speed.json", "profile.txt"):
        if (work / name).is_file():
            shutil.copy(work / name, out / name)
    if ablation is not None and ablation["store"].is_file():
        folder = ablation["store"].parent

        def weights_out(info: tarfile.TarInfo):
            parts = Path(info.name).parts
            if any(part in LEFT_OUT for part in parts[:-1]) or info.name.endswith(".pt"):
                left_out.append(info.name)
                return None
            return info

        with tarfile.open(out / "store.tar.gz", "w:gz") as archive:
            archive.add(folder, arcname="store", filter=weights_out)
    if (work / "report").is_dir():
        with tarfile.open(out / "report.tar.gz", "w:gz") as archive:
            archive.add(work / "report", arcname="report")
    return left_out


def summary_lines(args, stages: Stages, ablation: dict | None, out: Path, left_out) -> list[str]:
    lines = [f"gpu_run {'rehearsal ' if args.rehearse else ''}on {args.device}: "
             f"{len(stages.rows)} stages"]  # fmt: skip
    lines += [f"  {r['stage']:16s} {r['status']:28s} {r['seconds']:6.0f} s  {r['log']}"
              for r in stages.rows]  # fmt: skip
    if ablation is not None:
        rates = ", ".join(
            f"K={k}: {r:.3g} cell-epochs/s" if r else f"K={k}: no figure"
            for k, r in ablation["ks"].items()
        )
        lines.append(f"  ablation: {rates}; ran K={ablation['best_k']} at budget.epochs="
                     f"{ablation['epochs']:g} (suite: {FULL_EPOCHS}); {ablation['finished']} "
                     "cells finished in that stage")  # fmt: skip
    files = sorted(p for p in out.iterdir() if p.is_file())
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.2f} MiB" for p in files)
    too_big = [p.name for p in files if p.stat().st_size > MAX_FILE_BYTES]
    verdict = "within" if len(files) <= MAX_FILES and not too_big else "OVER"
    lines.append(f"  files ({verdict} {MAX_FILES} files of 16 MiB): {sizes}")
    if left_out:
        lines.append(f"  left out of store.tar.gz (weights): {len(left_out)} files")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-run-"))
    environment = dict(os.environ, PYTHONUNBUFFERED="1", BENCH_CACHE_DIR=str(work / "cache"))
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (environment.get("PYTHONPATH"), str(ROOT)) if p
    )
    stages = Stages(work, time.monotonic() + args.deadline, environment)
    device = ["--device", args.device]
    quick = args.rehearse
    stages.run(
        "tests",
        [sys.executable, "-m", "pytest", "-q", "--maxfail=10", "-p", "no:cacheprovider", "-m",
         "device and not slow", *device, "tests/test_on_device.py", "tests/test_models.py",
         "tests/test_compute_switches.py",
         # compiling on CUDA takes a minute: the switches stage measures compile and its losses
         "-k", "not compiled"],
        budget=600 if quick else 75,
    )  # fmt: skip
    stages.run(
        "kill-resume",
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-m",
         "device and slow", *device, "tests/test_on_device.py"],
        budget=300 if quick else 60,
    )  # fmt: skip
    speed = ["--steps", "10" if quick else "100", "--warmup", "2" if quick else "10"]
    stages.run(
        "switches",
        [sys.executable, "benchmarks/speed_switches.py", *device, *speed,
         "--json", str(work / "speed.json"),
         *(["--width", "8", "--latent-dim", "8", "--variants", "vae,vaegan-disfeat-bce"]
           if quick else [])],
        budget=300 if quick else 50,
    )  # fmt: skip
    for precision in ("fp32", "bf16"):
        stages.run(
            f"pythae-{precision}",
            [sys.executable, "benchmarks/vaegan_vs_pythae.py", *device, *speed, "--skip-suite",
             "--precision", precision, "--dataset", "synthetic" if quick else "fashion-mnist",
             "--data-root", args.data_root, "--epoch-limit", "256" if quick else "20000",
             *(["--width", "8", "--latent-dim", "8"] if quick else [])],
            budget=300 if quick else 35,
        )  # fmt: skip
    stages.run(
        "profile",
        [sys.executable, "benchmarks/profile_step.py", *device, "--out", str(work / "profile.txt"),
         *(["--steps", "3", "--width", "8", "--latent-dim", "8"] if quick else [])],
        budget=120 if quick else 20,
    )  # fmt: skip
    ablation = run_ablation(stages, args, work)
    stages.run(
        "report",
        bench("report", "fashion_ablation", "--tracking-uri", f"sqlite:///{ablation['store']}",
              "--out", str(work / "report")),
        budget=120 if quick else 60,
    )  # fmt: skip
    left_out = pack(out, work, stages, ablation)
    lines = summary_lines(args, stages, ablation, out, left_out)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    lines = summary_lines(args, stages, ablation, out, left_out)  # summary.txt counted too
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["status"] == "ok" for r in stages.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
