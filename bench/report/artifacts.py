"""Downloading a run's artifacts (sample and reconstruction grids, suite files) to a local
folder, without MLflow's progress bars.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.tracking import MlflowClient

PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def download(client: MlflowClient, run_id: str, name: str, folder: Path | str) -> Path:
    """One artifact of a run to a local folder, without MLflow's progress bar."""
    previous = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    try:
        return Path(client.download_artifacts(run_id, name, str(folder)))
    finally:
        if previous is None:
            del os.environ[PROGRESS_BAR]
        else:
            os.environ[PROGRESS_BAR] = previous
