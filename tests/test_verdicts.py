"""Verdicts a reviewer cannot break (issue: failures count, a certain difference is a difference,
the test family does not depend on which weights were on disk). Hand-built frames of cells, the
same shape load_report gives the statistics."""

from __future__ import annotations

from bench import keys
from bench.metrics.table import metric_specs
from bench.report.stats import significance, summarize, welch_p_value
from bench.report.tables import best_row, describe
from tests.test_report import cells_frame

SPECS = {m.key: m for m in metric_specs()}
FID = SPECS[keys.fid_key("domain")]
FID_INCEPTION = SPECS[keys.fid_key("inception")]
COVERAGE_INCEPTION = SPECS[keys.coverage_key("inception")]


def test_both_sides_constant_but_different_is_a_certain_difference():
    assert welch_p_value([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == 0.0
    assert welch_p_value([3.0, 3.0], [3.0, 3.0]) is None  # nothing to test
    values = {"a": {FID.key: [10.0, 10.0, 10.0]}, "b": {FID.key: [12.0, 12.0, 12.0]}}
    comparison = significance(cells_frame(values), [FID], ["a", "b"]).comparison(FID.key)
    assert comparison.others[0].verdict == "beyond seed noise"
    assert comparison.winner == "a"  # the certain difference no longer blocks the star


def test_a_variant_with_a_failed_seed_cannot_earn_the_star():
    """WGAN-GP diverging on 1 of 3 seeds, judged on its 2 survivors, would win by far."""
    values = {
        "wgan": {FID.key: [10.0, 10.1]},
        "vae": {FID.key: [20.0, 20.5, 19.8]},
        "dcgan": {FID.key: [30.0, 31.0, 29.5]},
    }
    cells = cells_frame(values, failed={"wgan": 1})
    tests = significance(cells, [FID], list(values))
    comparison = tests.comparison(FID.key)
    assert comparison.best == "wgan" and comparison.best_failed == 1
    assert all(v.verdict == "beyond seed noise" for v in comparison.others)
    assert comparison.winner is None
    assert best_row([FID], tests) == ["no ★ (wgan failed a seed); tied: wgan"]
    text = describe(comparison, summarize(cells, [FID], list(values)))
    assert text["verdict"].startswith("No ★: wgan has 1 failed or diverged run(s) among its 3")
    assert "1 failed of 3 seeds" in text["lead"]
    # the same numbers without the failure: the star
    clean = significance(cells_frame(values), [FID], list(values)).comparison(FID.key)
    assert clean.winner == "wgan"


def test_a_variant_with_seeds_not_run_yet_cannot_earn_the_star():
    """A partial report (a suite stopped at a deadline, or still running): the best mean over the
    seeds run so far earns no star, and says how many are missing."""
    values = {"gan": {FID.key: [10.0, 10.1]}, "vae": {FID.key: [20.0, 20.5, 19.8]}}
    cells = cells_frame(values)
    cells.loc[len(cells)] = {"label": "gan", "seed": 2, "status": "not run"}
    tests = significance(cells, [FID], list(values))
    comparison = tests.comparison(FID.key)
    assert comparison.best == "gan" and comparison.best_missing == 1 and not comparison.best_failed
    assert comparison.others[0].verdict == "beyond seed noise"
    assert comparison.winner is None
    assert best_row([FID], tests) == ["no ★ (gan has seeds missing); tied: gan"]
    text = describe(comparison, summarize(cells, [FID], list(values)))
    assert text["verdict"].startswith("No ★: gan has 1 of its 3 seeds without a result yet")
    assert "1 of 3 seeds without a result yet" in text["lead"]
    assert significance(cells_frame(values), [FID], list(values)).comparison(FID.key).winner


def test_no_star_while_another_variant_has_seeds_not_run_yet():
    """A suite stopped at a deadline before one variant ran, or with a rival's seeds still
    running: the best of the variants measured so far is not "beyond every other variant"."""
    values = {"gan": {FID.key: [10.0, 10.1, 9.9]}, "vae": {FID.key: [20.0, 20.5, 19.8]}}
    cells = cells_frame(values)
    for seed in range(3):  # a third variant with no result at all
        cells.loc[len(cells)] = {"label": "vaegan", "seed": seed, "status": "not run"}
    variants = [*values, "vaegan"]
    comparison = significance(cells, [FID], variants).comparison(FID.key)
    assert comparison.best == "gan" and not comparison.best_missing
    assert comparison.others[0].verdict == "beyond seed noise"
    assert comparison.incomplete == ["vaegan"] and comparison.winner is None
    tests = significance(cells, [FID], variants)
    assert best_row([FID], tests) == ["no ★ (vaegan has seeds missing); tied: gan"]
    text = describe(comparison, summarize(cells, [FID], variants))
    assert text["verdict"].startswith("No ★ while vaegan has seeds without a result yet")
    # a rival with one seed still running blocks it as well; with every seed in, the star
    partial = cells_frame(values)
    partial.loc[len(partial)] = {"label": "vae", "seed": 3, "status": "RUNNING"}
    assert significance(partial, [FID], list(values)).comparison(FID.key).incomplete == ["vae"]
    assert significance(partial, [FID], list(values)).comparison(FID.key).winner is None
    assert significance(cells_frame(values), [FID], list(values)).comparison(FID.key).winner


def test_inception_metrics_form_their_own_family_and_never_move_a_domain_verdict():
    domain = {
        "a": {FID.key: [10.0, 10.4, 9.9]},
        "b": {FID.key: [11.0, 11.5, 11.2]},
        "c": {FID.key: [13.0, 12.6, 13.3]},
    }
    alone = significance(cells_frame(domain), [FID], list(domain))
    with_inception = {
        label: per | {FID_INCEPTION.key: [50.0 + i, 51.0 + i, 49.0 + i],
                      COVERAGE_INCEPTION.key: [0.3 + i / 10, 0.31 + i / 10, 0.29 + i / 10]}
        for i, (label, per) in enumerate(domain.items())
    }  # fmt: skip
    both = significance(
        cells_frame(with_inception), [FID, FID_INCEPTION, COVERAGE_INCEPTION], list(domain)
    )
    assert alone.family_sizes == {"domain": 2}
    assert both.family_sizes == {"domain": 2, "inception": 4}

    def adjusted(tests):
        return [v.adjusted_p for v in tests.comparison(FID.key).others]

    assert adjusted(both) == adjusted(alone)
    assert both.comparison(FID.key).winner == alone.comparison(FID.key).winner


def test_a_diverged_cell_is_an_outcome_and_its_attempt_counts_after_a_rerun(tmp_path, monkeypatch):
    """The VAE diverges on seed 0 and a DCGAN crashes (out of memory): the next `bench run`
    retries the crash, not the divergence; after --rerun the VAE's seed finishes, and the
    report still counts its diverged attempt and gives the VAE no star."""
    import torch
    from click.testing import CliRunner

    import models
    from bench.cli import main
    from bench.report.load import load_report
    from tests.test_reliability import DCGANS, VAE, runs_by_cell, suite_text

    vae, dcgan = models.model_class("vae"), models.model_class("dcgan")
    vae_step, dcgan_step = vae.train_step, dcgan.train_step
    broken = {"vae": True, "dcgan": True}

    def nan_loss(self, x):
        losses = vae_step(self, x)
        if broken["vae"] and self.num_steps > 6 and torch.initial_seed() == 0:
            losses["loss"] = torch.tensor(float("nan"))
        return losses

    def out_of_memory(self, x):
        if broken["dcgan"] and self.options.loss == "wgan-gp":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return dcgan_step(self, x)

    monkeypatch.setattr(vae, "train_step", nan_loss)
    monkeypatch.setattr(dcgan, "train_step", out_of_memory)
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(VAE + DCGANS).replace("seeds: [0]", "seeds: [0, 1]"))
    uri, checkpoints = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "ck"
    args = ["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(checkpoints)]

    def bench(*extra):
        return CliRunner().invoke(main, [*args, "--no-progress", *extra])

    first = bench()
    assert first.exit_code == 1, first.output
    assert "vae/seed0: FAILED: diverged at step" in first.output
    broken["dcgan"] = False  # the out-of-memory does not recur; nor would the divergence
    broken["vae"] = False
    second = bench()
    assert second.exit_code == 1, second.output  # the diverged cell is still the suite's failure
    assert "vae/seed0: not retried, it diverged before (--rerun trains it again)" in second.output
    assert "dcgan-wgan-gp/seed0: finished" in second.output  # the crash was retried
    third = bench("--rerun")
    assert third.exit_code == 0, third.output
    runs = runs_by_cell(uri)
    vae_runs = [r for rs in runs.values() for r in rs if r.data.tags[keys.TAG_LABEL] == "vae"]
    kinds = sorted(r.data.tags.get(keys.TAG_FAILURE_KIND, "") for r in vae_runs)
    assert kinds == ["", "", "", "diverged"]  # 2 seeds twice: one diverged run, kind-tagged

    report = load_report(str(path), uri)
    counts = report.cells.groupby("label")["diverged_attempts"].sum()
    assert counts["vae"] == 1 and counts["dcgan-bce"] == 0
    tests = significance(report.cells, report.metrics, report.variants)
    for comparison in tests.comparisons:
        assert comparison.failed["vae"] == 1
        assert comparison.winner != "vae"


def test_a_variant_whose_samples_copy_the_training_set_cannot_earn_the_star():
    """A generator that replays training images wins FID, KID and coverage by far; Meehan et
    al.'s C_T below -3 flags it, and the flag takes the mark away (issue #35), whichever way it
    was chosen: a search's follow-up seeds or a fixed setting."""
    values = {
        "copier": {FID.key: [5.0, 5.1, 5.2], keys.DATA_COPYING: [-8.0, 1.0, 2.0]},
        "vae": {FID.key: [20.0, 20.5, 19.8], keys.DATA_COPYING: [3.0, 2.5, 3.1]},
    }
    tests = significance(cells_frame(values), [FID], list(values))
    comparison = tests.comparison(FID.key)
    assert comparison.best == "copier" and comparison.best_copying == 1
    assert comparison.others[0].verdict == "beyond seed noise"
    assert comparison.winner is None
    assert best_row([FID], tests) == ["no ★ (copier copies its training set); tied: copier"]
    text = describe(comparison, summarize(cells_frame(values), [FID], list(values)))
    assert text["verdict"].startswith("No ★: copier copies its training set on 1 of its 3 seeds")
    # C_T at -2.9 is not the flag: the mark stands
    values["copier"][keys.DATA_COPYING] = [-2.9, 1.0, 2.0]
    assert significance(cells_frame(values), [FID], list(values)).comparison(FID.key).winner
