"""The equal-budget search (Lucic et al. 2018): drawn trials, nested runs, the choice of the best,
follow-up seeds, failures and resuming; `--set` overrides; the executors' module layout.

The suites are tiny (synthetic data, a handful of steps): the numbers mean nothing, the protocol
is what is tested. The SIGKILL test runs `bench run` for real in a subprocess (marked slow).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import models
from bench import keys
from bench.cli import main
from bench.run import checkpoint
from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.suite.schema import SuiteError
from bench.suite.search import (
    TrialResult,
    best_trial,
    follow_up_cells,
    search_draws,
    searched_values,
    trial_cells,
)
from tests.faulty_models import raise_in_seeded_cell

SEARCH_SUITE = """
name: search
dataset: {{name: synthetic, train_limit: 64, eval_limit: 32}}
budget: {{steps: {steps}, batch_size: 16, latent_dim: 8, width: 8, log_every: 2,
          checkpoint_every: {checkpoint_every}}}
seeds: [0, 1]
evaluation: {{num_samples: 32, batch_size: 16, calibration_samples: 64, grid_size: 16,
             feature_extractors: [domain]}}
search:
  trials: {trials}
  budget: {{steps: {trial_steps}}}
  seed: 7
  space:
    lr_g: {{loguniform: [1.0e-4, 1.0e-2]}}
    lr_d: {{loguniform: [1.0e-4, 1.0e-2]}}
    betas: {{choice: [[0.5, 0.999], [0.0, 0.9]]}}
    n_critic: {{choice: [1, 2]}}
    gamma: {{loguniform: [1.0e-3, 1.0]}}
models:
{models}
"""
VAE = "  - label: vae\n    model: vae\n"
WGAN = "  - label: dcgan-wgan-gp\n    model: dcgan\n    options: {loss: wgan-gp}\n"
BENCH = [sys.executable, "-c", "from bench.cli import main; main()"]


def write(tmp_path: Path, variants: str = VAE + WGAN, name: str = "search.yaml", **sizes) -> Path:
    values = {"steps": 4, "trial_steps": 2, "trials": 3, "checkpoint_every": 500} | sizes
    text = SEARCH_SUITE.format(models=variants, **values)
    if "vaegan" not in variants:  # a searched name no variant has is an error
        text = "".join(line for line in text.splitlines(True) if "gamma" not in line)
    path = tmp_path / name
    path.write_text(text)
    return path


def bench(*args: str):
    return CliRunner().invoke(main, [*args, "--no-progress"] if args[0] == "run" else list(args))


def runs(uri: str, suite: str = "search") -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite).experiment_id
    return client.search_runs([experiment], order_by=["attributes.start_time ASC"])


def by_stage(all_runs: list, stage: str) -> list:
    return [run for run in all_runs if run.data.tags.get(keys.TAG_STAGE) == stage]


# ---- the draws and the choice (no training)


def test_trials_are_drawn_once_for_all_variants_and_each_reads_only_its_names(tmp_path):
    suite = load_suite(write(tmp_path, VAE + WGAN + "  - label: vaegan\n    model: vaegan\n"))
    cells = trial_cells(suite)
    assert [c.name for c in cells[:3]] == ["vae/trial0", "vae/trial1", "vae/trial2"]
    assert [c.seed for c in cells[:3]] == [1000, 1001, 1002]  # trial_seed + n, never 0 or 1
    draws = search_draws(suite.search)
    assert draws == search_draws(suite.search)  # the same seed, the same trials
    by_name = {c.name: c for c in cells}
    for n, draw in enumerate(draws):
        vae, wgan, vaegan = (
            by_name[f"{label}/trial{n}"] for label in ("vae", "dcgan-wgan-gp", "vaegan")
        )
        # the same draw for every variant that reads a name
        assert vae.variant.optimizer["lr_g"] == wgan.variant.optimizer["lr_g"] == draw["lr_g"]
        assert wgan.variant.optimizer["n_critic"] == draw["n_critic"]
        assert vaegan.variant.options["gamma"] == draw["gamma"]
        # a name a variant does not read never reaches it (nor its cell id)
        assert "lr_d" not in vae.variant.optimizer and vae.variant.optimizer["n_critic"] == 1
        assert vaegan.variant.optimizer["n_critic"] == 1  # BCE: no critic steps
        assert set(searched_values(vae, suite)) == {"lr_g", "betas"}
        assert set(searched_values(wgan, suite)) == {"lr_g", "lr_d", "betas", "n_critic"}
    assert all(c.budget.steps == 2 for c in cells)  # search.budget
    # the follow-ups: the chosen trial's setting, the suite's budget, fresh seeds
    follow = follow_up_cells(suite, cells[1])
    assert [(c.seed, c.budget.steps, c.trial) for c in follow] == [(0, 4, None), (1, 4, None)]
    assert all(c.variant == cells[1].variant for c in follow)


def result(trial: int, value: float | None) -> TrialResult:
    suite_cell = type("C", (), {"trial": trial})()
    return TrialResult(suite_cell, value, None if value is not None else "raised")


def test_best_trial_failed_is_worst_ties_to_the_lower_trial_and_direction_counts():
    results = [result(0, 5.0), result(1, None), result(2, 3.0), result(3, 3.0)]
    assert best_trial(results, lower_is_better=True).cell.trial == 2  # tie 2 vs 3: lower number
    assert best_trial(results, lower_is_better=False).cell.trial == 0
    assert best_trial([result(0, None), result(1, None)], lower_is_better=True) is None
    assert best_trial([result(0, None), result(1, 1e9)], lower_is_better=True).cell.trial == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("  select: fid_domian\n", "search.select: 'fid_domian' is not a metric"),
        ("  select: recon_mse\n", "recon_mse needs an encoder, which dcgan-wgan-gp has not"),
        ("  select: fid_inception\n", "needs evaluation.feature_extractors to include 'inception'"),
        ("  trial_seed: 0\n", "include follow-up seed 0"),
        ("  space: {lr_gg: {loguniform: [1.0e-4, 1.0e-2]}}\n", "did you mean 'lr_g'"),
        ("  space: {lr_g: {loguniform: [0, 1.0e-2]}}\n", "positive low bound"),
        ("  space: {lr_g: {uniform: [1, 1], choice: [1]}}\n", "exactly one of"),
        ("  space: {loss: {choice: [bce]}}\n", "fixes it (options or grid)"),
        ("  space: {gamma: {uniform: [-1.0, -0.5]}}\n", "searched"),
        ("  budget: {lr_g: 0.1}\n", "search.budget.lr_g: optimizer settings are searched"),
    ],
)
def test_bad_search_blocks_are_one_line_errors(tmp_path, change, message):
    text = write(tmp_path, VAE + WGAN + "  - label: vaegan\n    model: vaegan\n").read_text()
    raw = yaml.safe_load(text)
    raw["search"] |= yaml.safe_load(change)  # the changed field replaces the suite's
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert message in str(err.value) and "\n" not in str(err.value)


# ---- running a search


def test_a_search_is_reproducible_nested_and_its_best_gets_fresh_seeds(tmp_path):
    path = write(tmp_path)
    stores = [f"sqlite:///{tmp_path / name}.db" for name in ("first", "second")]
    for uri in stores:
        outcome = bench("run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path))
        assert outcome.exit_code == 0, outcome.output
    first, second = (runs(uri) for uri in stores)
    for all_runs in (first, second):
        parents = {r.data.tags[keys.TAG_LABEL]: r for r in by_stage(all_runs, keys.STAGE_SEARCH)}
        assert set(parents) == {"vae", "dcgan-wgan-gp"}
        trials = by_stage(all_runs, keys.STAGE_TRIAL)
        assert len(trials) == 6 and all(r.info.status == "FINISHED" for r in trials)
        for trial in trials:  # nested: MLflow's own parent tag, read back through the client
            parent = parents[trial.data.tags[keys.TAG_LABEL]]
            assert trial.data.tags[keys.TAG_PARENT_RUN] == parent.info.run_id
            assert trial.data.tags[keys.TAG_SEARCH_ID] == parent.data.tags[keys.TAG_SEARCH_ID]
        for label, parent in parents.items():
            values = {
                int(r.data.tags[keys.TAG_TRIAL]): r.data.metrics["fid_domain"]
                for r in trials
                if r.data.tags[keys.TAG_LABEL] == label
            }
            best = min(values, key=lambda n: (values[n], n))
            assert parent.info.status == "FINISHED"
            assert parent.data.tags[keys.TAG_BEST_TRIAL] == str(best)
            assert parent.data.tags[keys.TAG_TRIALS_FAILED] == "0"
            assert parent.data.metrics["best_fid_domain"] == values[best]
            winner = next(
                r
                for r in trials
                if r.data.tags[keys.TAG_LABEL] == label and r.data.tags[keys.TAG_TRIAL] == str(best)
            )
            assert parent.data.params["best.lr_g"] == winner.data.params["optimizer.lr_g"]
            finals = [
                r
                for r in by_stage(all_runs, keys.STAGE_FINAL)
                if r.data.tags[keys.TAG_LABEL] == label
            ]
            assert sorted(r.data.tags[keys.TAG_SEED] for r in finals) == ["0", "1"]
            for final in finals:  # the winner's setting at the suite's budget
                assert final.data.params["optimizer.lr_g"] == winner.data.params["optimizer.lr_g"]
                assert final.data.params["budget.steps"] == "4"
                assert final.data.tags[keys.TAG_VARIANT_ID] != winner.data.tags[keys.TAG_VARIANT_ID]

    # reproducible: the same trials (ids), the same values, the same winners
    def summary(all_runs):
        return sorted(
            (
                r.data.tags.get(keys.TAG_CELL_ID, ""),
                r.data.tags.get(keys.TAG_BEST_TRIAL, ""),
                r.data.metrics.get("fid_domain"),
            )
            for r in all_runs
        )

    assert summary(first) == summary(second)
    again = bench("run", str(path), "--tracking-uri", stores[0], "--checkpoint-dir", str(tmp_path))
    assert again.exit_code == 0 and "0 finished, 10 skipped" in again.output
    assert len(runs(stores[0])) == len(first)  # nothing ran twice, no second parent


def test_a_trial_that_raises_counts_as_failed_is_never_chosen_and_is_not_retried(
    tmp_path, monkeypatch
):
    # trial 1 trains with seed trial_seed + 1 = 1001
    raise_in_seeded_cell(monkeypatch, models.model_class("vae"), 1001, "trial one breaks")
    path = write(tmp_path, VAE)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    outcome = bench("run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path))
    # a failed trial is the search's worst value, not a failed suite
    assert outcome.exit_code == 0, outcome.output
    assert (
        "1 search trials failed" in outcome.output and "vae/trial1: RuntimeError" in outcome.output
    )
    all_runs = runs(uri)
    (parent,) = by_stage(all_runs, keys.STAGE_SEARCH)
    assert parent.data.tags[keys.TAG_TRIALS_FAILED] == "1"
    assert parent.data.tags[keys.TAG_BEST_TRIAL] in {"0", "2"}
    failed = [r for r in by_stage(all_runs, keys.STAGE_TRIAL) if r.info.status == "FAILED"]
    assert [r.data.tags[keys.TAG_TRIAL] for r in failed] == ["1"]
    assert len(by_stage(all_runs, keys.STAGE_FINAL)) == 2
    again = bench("run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path))
    assert "vae/trial1: skipped, this trial failed before" in again.output
    assert len(runs(uri)) == len(all_runs)


def test_when_every_trial_fails_nothing_is_chosen_and_the_suite_fails(tmp_path, monkeypatch):
    cls = models.model_class("vae")

    def train_step(self, x):
        raise RuntimeError("always")

    monkeypatch.setattr(cls, "train_step", train_step)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    outcome = bench(
        "run", str(write(tmp_path, VAE)), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path)
    )
    assert outcome.exit_code == 1
    assert "vae: all 3 trials failed: nothing to choose" in outcome.output
    (parent,) = by_stage(runs(uri), keys.STAGE_SEARCH)
    assert parent.info.status == "FAILED" and keys.TAG_BEST_TRIAL not in parent.data.tags
    assert not by_stage(runs(uri), keys.STAGE_FINAL)


def test_dry_run_and_validate_list_the_trials_and_the_follow_ups(tmp_path):
    path = write(tmp_path)
    checked = bench("validate", str(path))
    assert checked.exit_code == 0
    assert "2 variants x 3 trials, then 2 seeds of each best = 10 cells" in checked.output
    listed = bench("run", str(path), "--dry-run")
    assert listed.exit_code == 0, listed.output
    for cell in trial_cells(load_suite(path)):
        assert f"{cell.id}  {cell.name}" in listed.output
    assert "trained with seeds [0, 1]" in listed.output and "vae/seed{0,1}" in listed.output


# a real process killed twice: ~30 s
@pytest.mark.slow
def test_sigkill_during_trials_and_during_follow_ups_resumes_to_one_run_per_cell(tmp_path):
    path = write(tmp_path, VAE, trials=2, trial_steps=150, steps=150, checkpoint_every=5)
    suite = load_suite(path)
    trials = trial_cells(suite)
    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    command = [*BENCH, "run", str(path), "--tracking-uri", uri, "--no-progress"]
    root = tmp_path / ".bench" / "checkpoints" / "search"

    def run_until(targets: list[Path]) -> None:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = 180
        start = time.monotonic()
        while not any(t.exists() for t in targets):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() - start < deadline
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.communicate()

    run_until([root / trials[1].id / checkpoint.FILE])  # killed during trial 1
    killed = by_stage(runs(uri), keys.STAGE_TRIAL)
    assert sorted(r.info.status for r in killed) == ["FINISHED", "RUNNING"]
    finals = [c for t in trials for c in follow_up_cells(suite, t) if c.seed == 1]
    run_until([root / c.id / checkpoint.FILE for c in finals])  # killed during follow-up seed 1
    outcome = CliRunner().invoke(
        main, command[len(BENCH) :] + ["--checkpoint-dir", str(root.parent)]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "resuming run" in outcome.output
    all_runs = runs(uri)
    cells = [r for r in all_runs if keys.TAG_CELL_ID in r.data.tags]
    ids = [r.data.tags[keys.TAG_CELL_ID] for r in cells]
    assert len(ids) == len(set(ids)) == 4  # exactly one run per trial and per follow-up cell
    assert all(r.info.status == "FINISHED" for r in cells)
    assert len(by_stage(all_runs, keys.STAGE_SEARCH)) == 1
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    clean = bench(
        "run", str(path), "--tracking-uri", reference, "--checkpoint-dir", str(tmp_path / "ref")
    )
    assert clean.exit_code == 0, clean.output
    want = {
        r.data.tags[keys.TAG_CELL_ID]: r.data.metrics["fid_domain"]
        for r in runs(reference)
        if keys.TAG_CELL_ID in r.data.tags
    }
    got = {r.data.tags[keys.TAG_CELL_ID]: r.data.metrics["fid_domain"] for r in cells}
    assert got == want  # the same winner, and the resumed cells end as uninterrupted ones


# ---- --set


def test_set_overrides_enter_the_cells_and_bad_ones_are_one_line_exit_2(tmp_path, write_suite):
    path = write_suite()
    base = {c.name: c.id for c in expand(load_suite(path))}
    changed = load_suite(path, ["budget.steps=5", "seeds=[0, 3]", "models.1.grid.loss=[bce]"])
    cells = expand(changed)
    assert {c.seed for c in cells} == {0, 3} and all(c.budget.steps == 5 for c in cells)
    assert not any(c.name.startswith("dcgan-wgan") for c in cells)
    assert all(c.id != base.get(c.name) for c in cells)  # honest ids: a changed budget
    listed = bench(
        "run",
        str(path),
        "--dry-run",
        "--set",
        "budget.steps=5",
        "--set",
        "seeds=[0, 3]",
        "--set",
        "models.1.grid.loss=[bce]",
    )
    assert listed.exit_code == 0, listed.output
    listed_ids = {  # the cell lines (the training-time estimate follows them)
        line.split()[0]
        for line in listed.output.splitlines()
        if re.match(r"  [0-9a-f]{16}  ", line)
    }
    assert {c.id for c in cells} == listed_ids
    for bad, message in [
        ("budget.stepz=5", "unknown field 'budget.stepz' (did you mean 'steps'?)"),
        ("budget.steps", "expected FIELD=VALUE"),
        ("seeds=[0, 1", "the value is not YAML"),
        ("models.9.label=x", "models.9: a list of 3 items takes an index 0..2"),
        ("budget.steps=-1", "field 'budget.steps'"),
    ]:
        outcome = bench("run", str(path), "--dry-run", "--set", bad)
        assert outcome.exit_code == 2, (bad, outcome.output)
        lines = outcome.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


# ~40 s per executor (worker processes, a local Ray instance started and stopped per stage)
@pytest.mark.slow
@pytest.mark.parametrize("flags", [("--parallel", "2"), ("--executor", "ray")])
def test_other_executors_run_both_stages_to_the_same_choice(tmp_path, flags):
    if flags[1] == "ray":
        pytest.importorskip("ray", reason="the Ray executor needs the 'ray' extra")
    path = write(tmp_path)
    stores = {name: f"sqlite:///{tmp_path / name}.db" for name in ("here", "there")}
    for name, extra in (("here", ()), ("there", flags)):
        outcome = bench(
            "run",
            str(path),
            "--tracking-uri",
            stores[name],
            "--checkpoint-dir",
            str(tmp_path / name),
            *extra,
        )
        assert outcome.exit_code == 0, outcome.output

    def choices(uri):
        all_runs = runs(uri)
        best = {
            r.data.tags[keys.TAG_LABEL]: r.data.tags[keys.TAG_BEST_TRIAL]
            for r in by_stage(all_runs, keys.STAGE_SEARCH)
        }
        cells = sorted(
            r.data.tags[keys.TAG_CELL_ID] for r in all_runs if keys.TAG_CELL_ID in r.data.tags
        )
        nested = all(r.data.tags[keys.TAG_PARENT_RUN] for r in by_stage(all_runs, keys.STAGE_TRIAL))
        return best, cells, nested

    here, there = choices(stores["here"]), choices(stores["there"])
    assert there == here and len(here[1]) == 10 and here[2]


def test_a_report_finds_the_cells_a_set_override_ran(tmp_path, write_suite):
    path = write_suite()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    overrides = ["--set", "models=[{label: vae, model: vae}]", "--set", "budget.steps=2"]
    ran = bench(
        "run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path), *overrides
    )
    assert ran.exit_code == 0, ran.output
    args = ["report", str(path), "--tracking-uri", uri, "--format", "md"]
    matched = bench(*args, "--out", str(tmp_path / "with"), *overrides)
    assert matched.exit_code == 0, matched.output
    assert "1 finished cells of 1" in matched.output
    unmatched = bench(*args, "--out", str(tmp_path / "without"))  # the file's 7 cells: none ran
    assert "0 finished cells of 7" in unmatched.output


def test_a_search_chooses_on_validation_images_and_reports_on_the_evaluation_split(tmp_path):
    """The trials train without a seeded, class-stratified validation set held out of the
    training split and are scored on it; the follow-ups train on the same pool and are scored on
    the evaluation split, which no choice has seen (the runs' dataset inputs say which)."""
    import json

    from bench.data import load_dataset
    from bench.data.datasets import hold_out_validation, validation_size

    path = write(tmp_path, VAE, trials=2)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    result = bench("run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output

    data = load_dataset("synthetic", train_limit=64, eval_limit=32)
    size = validation_size(64, None)
    assert size == 6  # 10% of 64, rounded
    held = hold_out_validation(data, size, seed=0)
    assert len(held.train.images) == 58 and len(held.validation.images) == 6
    # disjoint, and together the whole training split
    pool = torch.cat([held.train.images, held.validation.images]).flatten(1)
    assert len(torch.unique(pool, dim=0)) == len(torch.unique(data.train.images.flatten(1), dim=0))
    assert len(torch.unique(held.validation.labels)) == 6  # stratified: 6 different classes

    def inputs(run) -> dict[str, tuple[str, int, str]]:
        found = {}
        for entry in run.inputs.dataset_inputs:
            tags = {tag.key: tag.value for tag in entry.tags}
            profile = json.loads(entry.dataset.profile)
            found[tags["mlflow.data.context"]] = (
                entry.dataset.digest,
                profile["num_images"],
                tags[keys.INPUT_TAG_SPLIT],
            )
        return found

    all_runs = runs(uri)
    trials, finals = by_stage(all_runs, keys.STAGE_TRIAL), by_stage(all_runs, keys.STAGE_FINAL)
    assert len(trials) == 2 and len(finals) == 2
    for run in trials:
        seen = inputs(run)
        assert seen[keys.DATASET_TRAINING][:2] == (held.train.digest, 58)
        assert seen[keys.DATASET_EVALUATION] == (
            held.validation.digest,
            6,
            "validation (held out of train)",
        )
        assert run.data.params["validation.scored_on"] == "validation"
    for run in finals:
        seen = inputs(run)
        assert seen[keys.DATASET_TRAINING][:2] == (held.train.digest, 58)
        assert seen[keys.DATASET_EVALUATION] == (data.eval.digest, 32, "test")
        assert run.data.params["validation.scored_on"] == "eval"


def test_a_validation_set_too_large_for_the_training_split_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, VAE, trials=1)
    text = path.read_text().replace("  seed: 7\n", "  seed: 7\n  validation: 60\n")
    path.write_text(text)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    result = bench("run", str(path), "--tracking-uri", uri)
    assert result.exit_code == 2, result.output
    assert "search.validation: holding out 60 of 64 training images" in result.output
