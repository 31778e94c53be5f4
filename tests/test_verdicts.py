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
RECALL_INCEPTION = SPECS[keys.recall_key("inception")]


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
    assert text["verdict"].startswith("No ★: 1 of wgan's 3 seeds failed")
    assert "1 of 3 seeds failed" in text["lead"]
    # the same numbers without the failure: the star
    clean = significance(cells_frame(values), [FID], list(values)).comparison(FID.key)
    assert clean.winner == "wgan"


def test_inception_metrics_form_their_own_family_and_never_move_a_domain_verdict():
    domain = {
        "a": {FID.key: [10.0, 10.4, 9.9]},
        "b": {FID.key: [11.0, 11.5, 11.2]},
        "c": {FID.key: [13.0, 12.6, 13.3]},
    }
    alone = significance(cells_frame(domain), [FID], list(domain))
    with_inception = {
        label: per | {FID_INCEPTION.key: [50.0 + i, 51.0 + i, 49.0 + i],
                      RECALL_INCEPTION.key: [0.3 + i / 10, 0.31 + i / 10, 0.29 + i / 10]}
        for i, (label, per) in enumerate(domain.items())
    }  # fmt: skip
    both = significance(
        cells_frame(with_inception), [FID, FID_INCEPTION, RECALL_INCEPTION], list(domain)
    )
    assert alone.family_sizes == {"domain": 2}
    assert both.family_sizes == {"domain": 2, "inception": 4}

    def adjusted(tests):
        return [v.adjusted_p for v in tests.comparison(FID.key).others]

    assert adjusted(both) == adjusted(alone)
    assert both.comparison(FID.key).winner == alone.comparison(FID.key).winner
