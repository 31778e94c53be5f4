"""What every `bench` command shares: the errors a user can fix (one line, exit status 2), the
exit statuses, and the options several commands take."""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path

import click

import models
from bench.data.image_files import ImageFileError
from bench.data.images import DatasetNotFound
from bench.metrics.settings import InceptionWeightsError, ScoreArgumentError
from bench.run.checkpoint import CheckpointError
from bench.suite import plugins
from bench.suite.schema import SuiteError
from bench.tracking.store import TrackingError

USER_ERRORS = (
    SuiteError,
    ScoreArgumentError,
    InceptionWeightsError,
    DatasetNotFound,
    ImageFileError,
    models.ModelConfigError,
    TrackingError,
    CheckpointError,
)
EXIT_USAGE = 2
EXIT_FAILED_CELLS = 1
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}  # 128 + signal number, as shells report it


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


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override a suite field (dotted, YAML value), e.g. --set budget.steps=5000 "
    "--set 'seeds=[0,1,2]'; repeatable, validated like the file, part of every cell's id.",
)

plugin_option = click.option(
    "--plugin",
    "plugin_files",
    multiple=True,
    metavar="PATH",
    help="A Python file (or module name) that registers your own models, imported before the "
    "suite is read, like a suite's plugins: (README: Your own model); repeatable.",
)


def load_plugins(plugin_files: tuple[str, ...]) -> None:
    """Import the --plugin files (paths relative to the working folder) into the registry."""
    plugins.load_all(plugin_files, Path(), "--plugin")


tracking_uri_option = click.option(
    "--tracking-uri",
    default=None,
    help="MLflow store (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db in this folder).",
)
