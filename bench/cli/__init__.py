"""`bench`: validate and run suites, render reports, serve the MLflow UI, list the models.

Exit status: 0 when every cell finished (or was skipped as finished); 1 when a cell failed (the
others still ran); 2 for an error the user can fix (bad suite, unknown model, missing data,
unreachable store), printed as one line starting with "error:"; 130 after Ctrl-C and 143 after
SIGTERM (the interrupted cell resumes from its checkpoint on the next `bench run`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

import models
from bench.cli.common import (
    EXIT_FAILED_CELLS,
    EXIT_INTERRUPTED,
    load_plugins,
    plugin_option,
    set_option,
    tracking_uri_option,
    user_errors,
)
from bench.cli.tools import images, score
from bench.run.checkpoint import DEFAULT_ROOT
from bench.suite import describe
from bench.suite.load import load_suite
from bench.suite.schema import SuiteError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Benchmark VAEs, GANs and VAE-GANs on the same data, budget and metrics."""


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@set_option
@plugin_option
@user_errors
def validate(suite_file, overrides, plugin_files):
    """Check a suite file without running it."""
    load_plugins(plugin_files)
    click.echo(describe.validated(suite_file, load_suite(suite_file, overrides)))


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="List the cells that would run, run nothing.")
@set_option
@plugin_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@tracking_uri_option
@click.option(
    "--data-root",
    default=None,
    type=click.Path(file_okay=False),
    help="Dataset folder, used when the suite gives no dataset.root "
    "(else BENCH_DATA_ROOT, else /usr/share/datasets/<name>).",
)
@click.option(
    "--rerun",
    is_flag=True,
    help="Run every cell again from step 0, even if a finished run or a checkpoint exists.",
)
@click.option("--progress/--no-progress", default=True, help="Progress bar per cell.")
@click.option(
    "--checkpoint-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Where interrupted cells resume from: <dir>/<suite>/<cell id>/ "
    f"(default: {DEFAULT_ROOT}).",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default=None,
    help="Override the suite's compute.precision (bf16: train steps under bfloat16 autocast).",
)
@click.option(
    "--allow-slow-bf16",
    is_flag=True,
    help="Train in bf16 even where the device has no native bf16 (emulated: several times slower "
    "than fp32; by default such a run is refused before it starts).",
)
@click.option(
    "--compile/--no-compile",
    "compile_networks",
    default=None,
    help="Override the suite's compute.compile (torch.compile the networks for training).",
)
@click.option(
    "--parallel",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Cells run at once on this machine, each in its own process (local executor).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: every cell a Ray task (needs the 'ray' extra; see README).",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to use with --executor ray (default: start a local Ray instance).",
)
@click.option(
    "--lease",
    "lease_seconds",
    default=180.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a worker's claim on a cell may go without a heartbeat before another worker "
    "sharing the store takes the cell over (see README: many workers).",
)
@click.option(
    "--gpus-per-cell",
    default=None,
    type=click.FloatRange(0, None),
    help="GPUs each Ray task asks for (default 0.25 when the cluster has GPUs, else 0).",
)
@user_errors
def run(
    suite_file,
    dry_run,
    overrides,
    plugin_files,
    device,
    tracking_uri,
    data_root,
    rerun,
    progress,
    checkpoint_dir,
    precision,
    allow_slow_bf16,
    compile_networks,
    parallel,
    executor,
    address,
    lease_seconds,
    gpus_per_cell,
):
    """Train and evaluate every variant x seed of SUITE_FILE, tracked in MLflow.

    Finished cells are skipped; an interrupted cell resumes from its last checkpoint. Exit status:
    0 all cells finished, 1 a cell failed (the others still ran), 2 a user error, 130 / 143
    stopped by Ctrl-C / SIGTERM (rerun the same command to resume)."""
    load_plugins(plugin_files)
    suite = load_suite(suite_file, overrides)
    compute = {"precision": precision, "compile": compile_networks}
    compute = {key: value for key, value in compute.items() if value is not None}
    if compute:
        suite = suite.model_copy(update={"compute": suite.compute.model_copy(update=compute)})
    if executor != "ray" and (address or gpus_per_cell is not None):
        raise SuiteError("--address and --gpus-per-cell apply to --executor ray only")
    if executor == "ray" and parallel > 1:
        raise SuiteError("--parallel is for the local executor; Ray schedules by --gpus-per-cell")
    if dry_run:
        from bench.run import estimate
        from bench.run.train import select_device

        click.echo("\n".join(describe.dry_run(suite)))
        found = estimate.estimate(suite, select_device(device))
        click.echo("\n".join(estimate.describe(found)))
        return
    from bench.run.runner import run_suite  # torch and mlflow load only when there is work to do
    from bench.run.summary import resume_command

    again = resume_command(
        suite_file,
        overrides,
        {
            "--device": None if device == "auto" else device,
            "--tracking-uri": tracking_uri,
            "--data-root": data_root,
            "--checkpoint-dir": checkpoint_dir,
            "--precision": precision,
            "--parallel": str(parallel) if parallel > 1 else None,
            "--executor": executor if executor != "local" else None,
            "--address": address,
            "--gpus-per-cell": None if gpus_per_cell is None else str(gpus_per_cell),
            "--lease": None if lease_seconds == 180.0 else f"{lease_seconds:g}",
        },
        compile_networks,
        plugin_files,
    )
    if allow_slow_bf16:
        again += " --allow-slow-bf16"
    try:
        summary = run_suite(
            suite,
            tracking_uri=tracking_uri,
            device=device,
            data_root=data_root,
            rerun=rerun,
            progress=progress,
            echo=click.echo,
            suite_text=describe.suite_text(suite_file, overrides, plugin_files),
            checkpoint_dir=checkpoint_dir,
            parallel=parallel,
            executor=executor,
            ray_address=address,
            gpus_per_cell=gpus_per_cell,
            lease_seconds=lease_seconds,
            allow_slow_bf16=allow_slow_bf16,
        )
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the first cell started
        click.echo(f'interrupted: rerun "{again}" to resume from the last checkpoints', err=True)
        sys.exit(EXIT_INTERRUPTED["SIGINT"])
    if summary.interrupted:
        steps = sorted(set(summary.interrupted_at.values()))
        where = (
            f"resume from step {', '.join(map(str, steps))}" if steps else "run the remaining cells"
        )
        click.echo(f'interrupted: rerun "{again}" to {where}', err=True)
        sys.exit(EXIT_INTERRUPTED.get(summary.interrupted, EXIT_FAILED_CELLS))
    if not summary.ok:
        sys.exit(EXIT_FAILED_CELLS)


@main.command(name="models")
@plugin_option
@user_errors
def list_models(plugin_files):
    """List the registered models with their options and defaults (those of --plugin files
    too), and the discriminator layers (Dis_l, vaegan's dis_layer) at each supported image size."""
    load_plugins(plugin_files)
    click.echo("\n".join(models.describe_models()))


@main.command()
@click.argument("suite")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["md", "html", "csv", "json", "all"]),
    default="all",
    show_default=True,
    help="Markdown (images in a sibling folder), one self-contained HTML file, every cell run "
    "as one table (runs.csv, or runs.json as records), or all of them.",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Output folder (default: reports/<suite name>/).",
)
@set_option
@plugin_option
@tracking_uri_option
@user_errors
def report(suite, output_format, out, overrides, plugin_files, tracking_uri):
    """Render a comparison report of SUITE (a suite file or its experiment name) from MLflow, and
    export every cell run of its experiment as one table."""
    from bench.report.write import ALL, write_formats

    load_plugins(plugin_files)  # a suite file's cells are matched by id: their models resolve

    formats = ALL if output_format == "all" else (output_format,)
    for line in write_formats(suite, tracking_uri, overrides, formats, out):
        click.echo(line)


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@set_option
@plugin_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@tracking_uri_option
@click.option("--data-root", default=None, help="Dataset folder (as for bench run).")
@user_errors
def evaluate(suite_file, overrides, plugin_files, device, tracking_uri, data_root):
    """Re-score the finished cells of SUITE_FILE with the current evaluation code, from the
    weights each run logged, without retraining (bench/run/rescore.py); resumable."""
    from bench.run.rescore import rescore_suite
    from bench.tracking.store import absolute_uri, resolve_uri

    load_plugins(plugin_files)
    suite = load_suite(suite_file, overrides)
    uri = absolute_uri(resolve_uri(tracking_uri))
    result = rescore_suite(suite, Path(suite_file).read_text(), uri, device, data_root, click.echo)
    click.echo(
        f"suite {suite.name}: {len(result.done)} re-scored, {len(result.skipped)} already at "
        "the current evaluation version"
    )
    if result.stopped:
        click.echo(f"interrupted: rerun bench evaluate {suite_file} to continue", err=True)
        sys.exit(EXIT_INTERRUPTED[result.stopped])


@main.command()
@click.option("--port", default=5000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind; 0.0.0.0 exposes the UI to the network.",
)
@tracking_uri_option
@user_errors
def ui(port, host, tracking_uri):
    """Start the MLflow UI on the tracking store the runs used, and print its URL."""
    from bench.tracking.ui import serve

    sys.exit(serve(tracking_uri, host, port, echo=click.echo))


main.add_command(images)
main.add_command(score)

if __name__ == "__main__":
    main()
