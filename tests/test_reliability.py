"""Interruptions, resuming and failures: a killed or stopped suite resumes from its checkpoints and
ends exactly as an uninterrupted one; a cell that diverges or raises fails alone, cleanly.

The subprocess tests run `bench run` for real (signals from outside); the others run the CLI in
this process and stop or break a variant deterministically from inside its train_step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import models
from bench import keys, tracking
from bench.cli import main
from bench.run import checkpoint
from bench.run.train import Diverged, LossAccumulator, ShuffledBatches, check_finite
from bench.suite.expand import expand
from bench.suite.load import load_suite
from tests.tiny_suites import DCGANS, VAE, tiny_suite

VAEGAN = "  - label: vaegan\n    model: vaegan\n"
TIMINGS = {keys.TRAIN_SECONDS, keys.TRAIN_IMAGES_PER_S, keys.CELL_SECONDS, keys.EVAL_SECONDS}
BENCH = [sys.executable, "-c", "from bench.cli import main; main()"]


def suite_text(variants=VAE, steps=12, log_every=2, checkpoint_every=4) -> str:
    return tiny_suite(
        "resume",
        variants,
        length=f"steps: {steps}",
        budget=f"  n_critic: 2\n  checkpoint_every: {checkpoint_every}\n",
        log_every=log_every,
    )


def bench_run(path: Path, uri: str, checkpoints: Path, *extra: str):
    args = ["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(checkpoints)]
    return CliRunner().invoke(main, [*args, "--no-progress", *extra])


def runs_by_cell(uri: str, suite: str = "resume") -> dict[str, list]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite)
    by_cell: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id]):
        by_cell.setdefault(run.data.tags[keys.TAG_CELL_ID], []).append(run)
    return by_cell


def outcome(uri: str, run, folder: Path) -> dict:
    """What must not depend on interruptions: final metrics, every metric history, the weights."""
    client = MlflowClient(uri)
    metrics = {k: v for k, v in run.data.metrics.items() if k not in TIMINGS}
    histories = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in metrics
    }
    local = client.download_artifacts(run.info.run_id, keys.ARTIFACT_CHECKPOINT_DIR, str(folder))
    weights = torch.load(Path(local) / keys.CHECKPOINT_FILE, weights_only=True)["model"]
    return {"metrics": metrics, "histories": histories, "weights": weights}


def assert_same_outcome(uri: str, reference_uri: str, tmp_path: Path) -> None:
    """Exactly one run per cell, FINISHED, with the reference's metrics, histories and weights."""
    runs, reference = runs_by_cell(uri), runs_by_cell(reference_uri)
    assert runs.keys() == reference.keys()
    for cell_id, cell_runs in runs.items():
        assert [run.info.status for run in cell_runs] == ["FINISHED"], cell_id
        got = outcome(uri, cell_runs[0], tmp_path / "got" / cell_id)
        want = outcome(reference_uri, reference[cell_id][0], tmp_path / "want" / cell_id)
        assert got["metrics"] == want["metrics"], cell_id
        assert got["histories"] == want["histories"], cell_id  # every step once, same values
        assert got["weights"].keys() == want["weights"].keys()
        for name, tensor in want["weights"].items():
            if isinstance(tensor, torch.Tensor):
                assert torch.equal(got["weights"][name], tensor), (cell_id, name)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"bench run ended before {path} appeared: {process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.005)


# ~21 s (a real process, 200 steps). The default run keeps a SIGKILL mid-cell resumed from its
# checkpoint into the same run, compared exactly: tests/test_executors.py, lost --parallel worker.
@pytest.mark.slow
def test_sigkill_mid_cell_then_rerun_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE + VAEGAN, steps=200, log_every=10, checkpoint_every=20))
    first, second = expand(load_suite(path))
    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    command = [*BENCH, "run", str(path), "--tracking-uri", uri, "--no-progress"]

    # the default checkpoint folder, .bench/checkpoints/, is relative to the working directory
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    folder = tmp_path / ".bench" / "checkpoints" / "resume" / second.id
    wait_for(folder / checkpoint.FILE, process)
    process.send_signal(signal.SIGKILL)  # mid-training of the second cell, at or after step 20
    process.communicate()
    killed = runs_by_cell(uri)
    assert [run.info.status for run in killed[first.id]] == ["FINISHED"]
    assert [run.info.status for run in killed[second.id]] == ["RUNNING"]
    assert not (tmp_path / ".bench" / "checkpoints" / "resume" / first.id).exists()

    monkeypatch.chdir(tmp_path)  # the same command, run in this process (no second start-up)
    rerun = CliRunner().invoke(main, command[len(BENCH) :])
    assert rerun.exit_code == 0, rerun.output
    assert f"{first.name}: skipped" in rerun.output
    resumed_run = killed[second.id][0].info.run_id
    assert f"{second.name}: resuming run {resumed_run} from step" in rerun.output
    assert not folder.exists()  # removed once the run finished

    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    result = bench_run(path, reference, tmp_path / "reference-checkpoints")
    assert result.exit_code == 0, result.output
    assert_same_outcome(uri, reference, tmp_path)


# ~40 s (a real process, then 380 steps resumed). The default run keeps SIGTERM's handling (sent
# in-process: test_a_run_started_with_sigint_ignored_keeps_ignoring_it_and_stops_on_sigterm) and a
# stop at a step boundary resumed exactly (test_ctrl_c_stops_at_the_step_boundary_and_resumes_...).
@pytest.mark.slow
def test_sigterm_checkpoints_marks_killed_and_says_how_to_resume(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE, steps=400, log_every=10, checkpoint_every=20))
    (cell,) = expand(load_suite(path))
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    checkpoints = tmp_path / "checkpoints"
    command = [
        *BENCH,
        "run",
        str(path),
        "--tracking-uri",
        uri,
        "--checkpoint-dir",
        str(checkpoints),
    ]
    process = subprocess.Popen(
        [*command, "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = checkpoint.cell_folder(checkpoints, "resume", cell.id)
    wait_for(folder / checkpoint.FILE, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, out + err
    assert "Traceback" not in out + err
    step = checkpoint.load(folder)["step"]
    assert 20 <= step < 400
    hint = f'interrupted: rerun "bench run {path} --tracking-uri {uri} --checkpoint-dir '
    assert hint in err and f"to resume from step {step}" in err
    (run,) = runs_by_cell(uri)[cell.id]
    assert run.info.status == "KILLED"
    assert run.data.tags[keys.TAG_FAILURE] == f"interrupted by SIGTERM at step {step}"

    result = bench_run(path, uri, checkpoints)
    assert result.exit_code == 0, result.output
    assert f"resuming run {run.info.run_id} from step {step}" in result.output
    (finished,) = runs_by_cell(uri)[cell.id]
    assert finished.info.run_id == run.info.run_id and finished.info.status == "FINISHED"
    assert keys.TAG_FAILURE not in finished.data.tags
    assert finished.data.tags[keys.TAG_STATUS] == keys.STATUS_FINISHED


def signal_at(monkeypatch, step: int, times: int = 1) -> None:
    """Make the VAE's train_step send itself SIGINT (Ctrl-C) `times` times at `step`."""
    cls = models.model_class("vae")
    original = cls.train_step

    def train_step(self, x):
        losses = original(self, x)
        if self.num_steps == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return losses

    monkeypatch.setattr(cls, "train_step", train_step)


def own_sigint_handler(signum, frame):
    raise KeyboardInterrupt


@pytest.fixture
def sigint_handler():
    """A SIGINT handler of the test's own, whatever pytest was started with (a terminal, nohup:
    ignored), so that Ctrl-C is deterministic; the process's own comes back afterwards."""
    previous = signal.signal(signal.SIGINT, own_sigint_handler)
    yield own_sigint_handler
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_at_the_step_boundary_and_resumes_exactly(
    tmp_path, monkeypatch, sigint_handler
):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE))
    (cell,) = expand(load_suite(path))
    uri, checkpoints = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "checkpoints"
    with monkeypatch.context() as patch:
        signal_at(patch, 5)  # between logging (every 2) and checkpoint (every 4) boundaries
        result = bench_run(path, uri, checkpoints)
    assert result.exit_code == 130, result.output
    assert "to resume from step 5" in result.stderr
    assert checkpoint.load(checkpoint.cell_folder(checkpoints, "resume", cell.id))["step"] == 5
    (run,) = runs_by_cell(uri)[cell.id]
    assert run.info.status == "KILLED"
    assert run.data.tags[keys.TAG_FAILURE] == "interrupted by SIGINT at step 5"
    assert signal.getsignal(signal.SIGINT) is sigint_handler  # the handler it had, restored

    result = bench_run(path, uri, checkpoints)
    assert result.exit_code == 0, result.output
    assert "from step 5" in result.output
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    assert bench_run(path, reference, tmp_path / "reference-checkpoints").exit_code == 0
    assert_same_outcome(uri, reference, tmp_path)


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it_and_stops_on_sigterm(
    tmp_path, monkeypatch
):
    """nohup and background jobs start with SIGINT ignored, so that the terminal's Ctrl-C does
    not reach them: `bench run` keeps it so (as Python does) and still stops on SIGTERM."""
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE))
    uri, checkpoints = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "checkpoints"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with monkeypatch.context() as patch:
            signal_at(patch, 5)
            result = bench_run(path, uri, checkpoints)
        assert result.exit_code == 0, result.output  # the SIGINT at step 5 changed nothing
        assert "SIGINT" not in result.output
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        cls = models.model_class("vae")
        original = cls.train_step

        def terminated_at_step_5(self, x):
            losses = original(self, x)
            if self.num_steps == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            return losses

        monkeypatch.setattr(cls, "train_step", terminated_at_step_5)
        result = bench_run(path, uri, checkpoints, "--rerun")
        assert result.exit_code == 143, result.output
        assert "interrupted by SIGTERM at step 5" in result.output
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_second_ctrl_c_stops_at_once_and_resumes_from_the_last_checkpoint(
    tmp_path, monkeypatch, sigint_handler
):
    """Stopped at once at step 5, after the losses and the evaluation over training of step 4 were
    logged and the checkpoint of step 3 written: the resumed run trains and evaluates step 4 again
    (evaluation moves the global random generator) without logging it twice."""
    path = tmp_path / "suite.yaml"
    text = suite_text(VAE, checkpoint_every=3)  # 64 images / batch 16: an epoch is 4 steps
    path.write_text(text.replace("grid_size: 16", "grid_size: 16\n  every_epochs: 1"))
    (cell,) = expand(load_suite(path))
    uri, checkpoints = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "checkpoints"
    with monkeypatch.context() as patch:
        signal_at(patch, 5, times=2)
        result = bench_run(path, uri, checkpoints)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert "to resume from the last checkpoints" in result.stderr
    (run,) = runs_by_cell(uri)[cell.id]
    assert run.info.status == "KILLED"
    assert checkpoint.load(checkpoint.cell_folder(checkpoints, "resume", cell.id))["step"] == 3
    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "fid_domain")] == [4]

    result = bench_run(path, uri, checkpoints)
    assert result.exit_code == 0, result.output
    assert f"resuming run {run.info.run_id} from step 3" in result.output
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    assert bench_run(path, reference, tmp_path / "reference-checkpoints").exit_code == 0
    assert_same_outcome(uri, reference, tmp_path)


def test_a_running_run_without_checkpoint_is_ended_as_killed_and_replaced(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE))
    (cell,) = expand(load_suite(path))
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = tracking.connect(uri)  # as a process killed before its first checkpoint left it
    stale = tracking.start_cell_run(client, tracking.experiment_id(client, "resume"), cell)

    result = bench_run(path, uri, tmp_path / "checkpoints")
    assert result.exit_code == 0, result.output
    runs = {run.info.run_id: run for run in runs_by_cell(uri)[cell.id]}
    assert runs[stale].info.status == "KILLED"
    assert "interrupted before the first checkpoint" in runs[stale].data.tags[keys.TAG_FAILURE]
    assert sorted(run.info.status for run in runs.values()) == ["FINISHED", "KILLED"]


def test_diverging_and_crashing_cells_fail_alone(tmp_path, monkeypatch):
    """Deterministic failures patched into train_step (a huge learning rate may or may not
    diverge within a few steps): the VAE's loss turns NaN after step 6, the BCE DCGAN's weights
    turn NaN at step 8 (after its losses of that step, which stay finite), the WGAN-GP DCGAN
    runs out of memory at step 3; the VAE-GAN must finish regardless."""
    vae, dcgan = models.model_class("vae"), models.model_class("dcgan")
    vae_step, dcgan_step = vae.train_step, dcgan.train_step

    def nan_loss(self, x):
        losses = vae_step(self, x)
        if self.num_steps > 6:
            losses["loss"] = torch.tensor(float("nan"))
        return losses

    def nan_weights_or_oom(self, x):
        if self.options.loss == "wgan-gp" and self.num_steps == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        losses = dcgan_step(self, x)
        if self.num_steps == 8:
            with torch.no_grad():
                self.decoder.project[0].weight.view(-1)[0] = float("nan")
        return losses

    monkeypatch.setattr(vae, "train_step", nan_loss)
    monkeypatch.setattr(dcgan, "train_step", nan_weights_or_oom)
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE + DCGANS + VAEGAN))
    cells = {cell.name: cell for cell in expand(load_suite(path))}
    uri, checkpoints = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "checkpoints"
    result = bench_run(path, uri, checkpoints)

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    out = result.output
    assert "vae/seed0: FAILED: diverged at step 8: loss = nan" in out
    assert (
        "dcgan-bce/seed0: FAILED: diverged at step 8: weight decoder.project.0.weight = nan" in out
    )
    assert "dcgan-wgan-gp/seed0: FAILED: OutOfMemoryError: CUDA out of memory" in out
    assert "vaegan/seed0: finished" in out
    summary = out[out.index("suite resume: 1 finished") :]
    assert "finished: vaegan/seed0" in summary
    for name in ("vae", "dcgan-bce", "dcgan-wgan-gp"):
        assert f"failed {name}/seed0: " in summary

    client = MlflowClient(uri)
    runs = {cell_id: runs[0] for cell_id, runs in runs_by_cell(uri).items()}
    vae_run = runs[cells["vae/seed0"].id]
    assert vae_run.info.status == "FAILED"
    reason = vae_run.data.tags[keys.TAG_FAILURE]
    assert reason.startswith("diverged at step 8: loss = nan; last good checkpoint: step 4")
    history = client.get_metric_history(vae_run.info.run_id, keys.train_key("loss"))
    assert [m.step for m in history] == [2, 4, 6]  # the losses up to the divergence
    for name in ("vae/seed0", "dcgan-bce/seed0"):
        kept = checkpoint.load(checkpoint.cell_folder(checkpoints, "resume", cells[name].id))
        assert kept["step"] == 4  # the last good one: step 8's was never written
        assert all(torch.isfinite(t).all() for t in kept["model"].values() if torch.is_tensor(t))
    oom = runs[cells["dcgan-wgan-gp/seed0"].id]
    assert oom.info.status == "FAILED"
    assert "OutOfMemoryError" in oom.data.tags[keys.TAG_FAILURE]
    assert runs[cells["vaegan/seed0"].id].info.status == "FINISHED"


def test_checkpoint_every_is_not_part_of_the_cell_id(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(suite_text(checkpoint_every=4))
    b.write_text(suite_text(checkpoint_every=7))
    assert expand(load_suite(a))[0].id == expand(load_suite(b))[0].id


def test_batches_resume_mid_epoch_and_at_epoch_ends():
    images = torch.arange(10.0).view(10, 1)
    reference = ShuffledBatches(images, 3, torch.Generator().manual_seed(0))  # 3 per epoch
    expected = [next(reference) for _ in range(12)]
    for taken in range(12):
        batches = ShuffledBatches(images, 3, torch.Generator().manual_seed(0))
        for _ in range(taken):
            next(batches)
        state = batches.state()
        resumed = ShuffledBatches(images, 3, torch.Generator().manual_seed(123))
        resumed.load_state(state)
        assert all(torch.equal(next(resumed), want) for want in expected[taken:]), taken


def test_loss_sums_and_non_finite_weights():
    accumulator = LossAccumulator()
    accumulator.add({"loss": torch.tensor(1.0)})
    restored = LossAccumulator()
    restored.load_state(accumulator.state(), torch.device("cpu"))
    restored.add({"loss": torch.tensor(2.0)})
    assert restored.means() == {"loss": 1.5}
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    check_finite(3, {"loss": 1.0}, model)
    model[1].running_var[1] = float("inf")
    with pytest.raises(Diverged, match=r"diverged at step 3: weight 1.running_var = inf"):
        check_finite(3, {"loss": 1.0}, model)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    folder = tmp_path / "cell"
    checkpoint.save(folder, {"step": 1, "w": torch.ones(3)})

    def dies_mid_write(state, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(OSError):
        checkpoint.save(folder, {"step": 2, "w": torch.zeros(3)})
    assert checkpoint.load(folder)["step"] == 1  # the previous one is whole


def test_checkpoints_load_only_weights_never_code(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    torch.save({"step": 1, "payload": Path("not a tensor")}, folder / checkpoint.FILE)
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        checkpoint.load(folder)


def test_every_torch_load_of_ours_is_weights_only():
    root = Path(__file__).parent.parent
    for source in [*root.glob("bench/**/*.py"), *root.glob("models/*.py")]:
        text = source.read_text()
        start = 0
        while (start := text.find("torch.load(", start)) != -1:
            call = text[start : text.find(")", start)]
            assert "weights_only=True" in call, f"{source.name}: {call}"
            start += 1
