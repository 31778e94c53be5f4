"""`bench evaluate`: finished runs re-scored from their logged weights, the same numbers for the
same code, new metrics added once, a rerun adding nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench import keys
from bench.cli import main
from bench.metrics import evaluate

SUITE = """
name: rescore
dataset: {name: synthetic, train_limit: 128, eval_limit: 64}
budget: {steps: 4, batch_size: 16, latent_dim: 8, width: 8, log_every: 2}
seeds: [0]
evaluation: {num_samples: 64, batch_size: 32, calibration_samples: 64, grid_size: 16,
             interp_pairs: 2, feature_extractors: [domain]}
models:
  - {label: vae, model: vae}
  - {label: dcgan, model: dcgan}
"""


def run_at_an_older_evaluation_version(path, uri: str, tmp_path, monkeypatch) -> None:
    """`bench run` of the suite with EVALUATION_VERSION "0" (left patched: the caller sets it)."""
    monkeypatch.setattr(evaluate, "EVALUATION_VERSION", "0")
    ran = CliRunner().invoke(
        main, ["run", str(path), "--tracking-uri", uri, "--no-progress",
               "--checkpoint-dir", str(tmp_path / "c")],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output


def test_bench_evaluate_rescores_old_runs_once_with_the_same_numbers(tmp_path, monkeypatch):
    path = tmp_path / "rescore.yaml"
    path.write_text(SUITE)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    run_at_an_older_evaluation_version(path, uri, tmp_path, monkeypatch)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rescore").experiment_id
    before = {r.info.run_id: r for r in client.search_runs([experiment])}
    assert {r.data.tags[keys.TAG_EVALUATION_VERSION] for r in before.values()} == {"0"}

    monkeypatch.setattr(evaluate, "EVALUATION_VERSION", "1")
    rescored = CliRunner().invoke(main, ["evaluate", str(path), "--tracking-uri", uri])
    assert rescored.exit_code == 0, rescored.output
    assert "2 re-scored, 0 already at the current evaluation version" in rescored.output
    again = CliRunner().invoke(main, ["evaluate", str(path), "--tracking-uri", uri])
    assert "0 re-scored, 2 already at the current evaluation version" in again.output

    fid = keys.fid_key("domain")
    for run_id, old in before.items():
        new = client.get_run(run_id)
        assert new.data.tags[keys.TAG_EVALUATION_VERSION] == "1"
        # the rebuilt model is the trained one: the same numbers from the same code
        assert new.data.metrics[fid] == old.data.metrics[fid]
        history = client.get_metric_history(run_id, keys.SHARPNESS_SAMPLES)
        # one value from the run, one from the re-score, none from the rerun; same final step
        assert len(history) == 2 and history[0].step == history[1].step
        assert history[0].value == history[1].value
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert keys.ARTIFACT_NEAREST in artifacts


@pytest.mark.slow  # a real `bench evaluate` process, killed, then run again: ~60 s on 2 cores
def test_a_killed_bench_evaluate_leaves_no_run_half_rescored_and_its_rerun_finishes(
    tmp_path, monkeypatch
):
    path = tmp_path / "rescore.yaml"
    path.write_text(SUITE.replace("seeds: [0]", "seeds: [0, 1, 2]"))
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    run_at_an_older_evaluation_version(path, uri, tmp_path, monkeypatch)
    monkeypatch.undo()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rescore").experiment_id
    sharpness = keys.SHARPNESS_SAMPLES

    def state() -> dict[str, tuple[str, int, bool]]:
        """Per run: its evaluation version, how many sharpness values, whether it has a gallery."""
        found = {}
        for run in client.search_runs([experiment]):
            run_id = run.info.run_id
            found[run_id] = (
                run.data.tags[keys.TAG_EVALUATION_VERSION],
                len(client.get_metric_history(run_id, sharpness)),
                keys.ARTIFACT_NEAREST in {a.path for a in client.list_artifacts(run_id)},
            )
        return found

    command = [sys.executable, "-c", "from bench.cli import main; main()", "evaluate", str(path),
               "--tracking-uri", uri]  # fmt: skip
    log = tmp_path / "evaluate.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 300
    current = f"tags.{keys.TAG_EVALUATION_VERSION} = '{evaluate.EVALUATION_VERSION}'"
    while not client.search_runs([experiment], filter_string=current):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "bench evaluate re-scored no run"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # mid-way: one run re-scored, the others not all
    process.wait()
    killed = state()
    assert len(killed) == 6
    for version, values, gallery in killed.values():  # each run either done whole or untouched
        assert (version, values) in {("0", 1), (evaluate.EVALUATION_VERSION, 2)}
        assert gallery  # the run logged it; a re-score overwrote it, never removed it
    done = sum(v == evaluate.EVALUATION_VERSION for v, _, _ in killed.values())
    assert 1 <= done < 6, killed

    rerun = CliRunner().invoke(main, ["evaluate", str(path), "--tracking-uri", uri])
    assert rerun.exit_code == 0, rerun.output
    assert f"{6 - done} re-scored, {done} already at the current evaluation version" in rerun.output
    assert set(state().values()) == {(evaluate.EVALUATION_VERSION, 2, True)}
