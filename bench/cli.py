"""`bench`: validate and run suites, list the models.

Errors the user can cause (bad suite, unknown model, missing data, unreachable store) print one
line starting with "error:" and exit with status 2; a suite with failed cells exits with 1.
"""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path

import click

import models

from .data import DatasetNotFound
from .suite import SuiteError, expand, load_suite
from .tracking import TrackingError

USER_ERRORS = (SuiteError, DatasetNotFound, models.ModelConfigError, TrackingError)
EXIT_USAGE = 2
EXIT_FAILED_CELLS = 1


def user_errors(command):
    """Turn the errors a user can fix into one line on stderr and exit status 2."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Benchmark VAEs, GANs and VAE-GANs on the same data, budget and metrics."""


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@user_errors
def validate(suite_file):
    """Check a suite file without running it."""
    suite = load_suite(suite_file)
    cells = expand(suite)
    labels = sorted({cell.variant.label for cell in cells})
    click.echo(
        f"{suite_file}: ok, suite {suite.name!r}: {len(labels)} variants x "
        f"{len(suite.seeds)} seeds = {len(cells)} cells on {suite.dataset.name}"
    )


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="List the cells that would run, run nothing.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow store (default: MLFLOW_TRACKING_URI "
    "or sqlite:///mlflow.db in the current folder).",
)
@click.option(
    "--data-root",
    default=None,
    type=click.Path(file_okay=False),
    help="Dataset folder, used when the suite gives no dataset.root "
    "(else BENCH_DATA_ROOT, else /usr/share/datasets/<name>).",
)
@click.option("--rerun", is_flag=True, help="Run cells again even if a finished run exists.")
@click.option("--progress/--no-progress", default=True, help="Progress bar per cell.")
@user_errors
def run(suite_file, dry_run, device, tracking_uri, data_root, rerun, progress):
    """Train and evaluate every variant x seed of SUITE_FILE, tracked in MLflow."""
    suite = load_suite(suite_file)
    if dry_run:
        cells = expand(suite)
        click.echo(f"suite {suite.name}: {len(cells)} cells")
        for cell in cells:
            options = ", ".join(f"{k}={v}" for k, v in cell.variant.options.items())
            click.echo(f"  {cell.id}  {cell.name:<32} {cell.variant.model}({options})")
        return
    from .runner import run_suite  # torch and mlflow load only when there is work to do

    summary = run_suite(
        suite,
        tracking_uri=tracking_uri,
        device=device,
        data_root=data_root,
        rerun=rerun,
        progress=progress,
        echo=click.echo,
        suite_text=Path(suite_file).read_text(),
    )
    if not summary.ok:
        sys.exit(EXIT_FAILED_CELLS)


@main.command(name="models")
def list_models():
    """List the registered models with their options and defaults."""
    for name in sorted(models.REGISTRY):
        cls = models.model_class(name)
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        click.echo(f"{name}: {doc[0] if doc else ''}")
        for option, kind, default in models.option_table(name):
            click.echo(f"    {option:<12} {kind:<28} default {default!r}")
