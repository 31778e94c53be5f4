"""`bench ui` serves the runs of a real tiny run: started as a process on a free loopback port,
asked over MLflow's REST API for the experiment, its runs and an artifact, then stopped."""

from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest
from click.testing import CliRunner

from bench import keys
from bench.cli import main
from tests.local_web import call, start_bench_ui, wait_until_serving
from tests.tiny_suites import INTERPOLATION, VAE, tiny_suite

SUITE = tiny_suite(
    "tiny-ui", VAE, train_limit=32, length="steps: 2", log_every=1, evaluation=INTERPOLATION
)


@pytest.mark.slow  # starts an MLflow server process: ~18 s on 2 cores
def test_bench_ui_serves_the_suite_runs_and_artifacts(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(
        main, ["run", str(suite), "--tracking-uri", uri, "--device", "cpu", "--no-progress"]
    )
    assert result.exit_code == 0, result.output

    log = tmp_path / "ui.log"
    server, base = start_bench_ui(uri, tmp_path, log)
    try:
        experiments = wait_until_serving(base, server, log)["experiments"]
        (experiment,) = [e for e in experiments if e["name"] == "tiny-ui"]
        body = {"experiment_ids": [experiment["experiment_id"]], "max_results": 100}
        runs = json.loads(call(f"{base}/api/2.0/mlflow/runs/search", body))["runs"]
        assert len(runs) == 1
        tags = {tag["key"]: tag["value"] for tag in runs[0]["data"]["tags"]}
        assert tags[keys.TAG_LABEL] == "vae" and tags[keys.TAG_STATUS] == keys.STATUS_FINISHED
        run_id = runs[0]["info"]["run_id"]

        listed = json.loads(call(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}"))
        assert keys.ARTIFACT_SAMPLES in {f["path"] for f in listed["files"]}
        image = call(f"{base}/get-artifact?path={keys.ARTIFACT_SAMPLES}&run_uuid={run_id}")
        assert image.startswith(b"\x89PNG")
        assert f"at {base}" in log.read_text()  # the URL is printed

        server.send_signal(signal.SIGTERM)  # bench ui stops its server group itself
        assert server.wait(timeout=30) == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(server.pid, 0)
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=30)


def test_bench_ui_refuses_a_missing_store(tmp_path):
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(main, ["ui", "--tracking-uri", f"sqlite:///{missing}"])
    assert result.exit_code == 2
    assert result.output.startswith("error: no tracking store")
    assert not missing.exists()
