"""Declared claims: checked by bench validate, tested in the report with one Holm correction, and
judged with the failure rules of the best-mark."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from bench import keys
from bench.cli import main
from bench.report.claims import CONTRADICTED, HOLDS, MIXED, UNDECIDED, evaluate_claims
from bench.suite.schema import ClaimConfig
from tests.conftest import TINY_SUITE

FID = keys.fid_key("domain")


def cells(values: dict[str, list[float | None]]) -> pd.DataFrame:
    """One row per (variant, seed); None: a failed seed."""
    rows = []
    for label, seeds in values.items():
        for seed, value in enumerate(seeds):
            status = keys.STATUS_FAILED if value is None else keys.STATUS_FINISHED
            rows.append({"label": label, "seed": seed, "status": status, FID: value})
    return pd.DataFrame(rows)


def claim(better: list[str], worse: list[str], metric: str = FID) -> ClaimConfig:
    return ClaimConfig(name="x", metric=metric, better=better, worse=worse, source="test")


def test_holds_contradicted_and_undecided():
    frame = cells(
        {
            "gan": [10.0, 11.0, 10.5],
            "gan2": [10.2, 10.8, 10.4],
            "vae": [30.0, 31.0, 29.5],
            "noisy": [12.0, 40.0, 5.0],
        }
    )
    results = evaluate_claims(
        frame,
        [
            claim(["gan", "gan2"], ["vae"]),  # lower FID: the GANs are better
            claim(["vae"], ["gan"]),  # the opposite
            claim(["noisy"], ["gan"]),  # within seed noise
        ],
    )
    assert [r.verdict for r in results] == [HOLDS, CONTRADICTED, UNDECIDED]
    assert [p.name for p in results[0].pairs] == ["gan vs vae", "gan2 vs vae"]  # never pooled
    assert results[0].p_value == max(p.p_value for p in results[0].pairs)  # the IUT's p
    # one Holm correction over the three: the smallest raw p is multiplied by 3
    smallest = min(r.p_value for r in results)
    assert min(r.adjusted_p for r in results) == pytest.approx(3 * smallest)


def test_a_side_with_a_failed_seed_cannot_win_its_claim():
    frame = cells({"gan": [10.0, 11.0, None, 10.5], "vae": [30.0, 31.0, 29.5]})
    holds, contradicted = evaluate_claims(frame, [claim(["gan"], ["vae"]), claim(["vae"], ["gan"])])
    assert holds.adjusted_p < 0.05 and holds.verdict == UNDECIDED
    assert "failed or diverged" in holds.why and holds.failed_better == 1
    # vae claimed better is significantly worse, but the side that beat it (gan) failed a seed
    assert contradicted.adjusted_p < 0.05 and contradicted.verdict == UNDECIDED


def test_a_variant_with_seeds_not_run_yet_cannot_win_its_pair():
    """gan2 has finished two of its three seeds: its pair with vae is significant but not
    decided, so the claim does not hold yet; with every seed in, it does."""
    frame = cells({"gan": [10.0, 11.0, 10.5], "gan2": [10.2, 10.8], "vae": [30.0, 31.0, 29.5]})
    frame.loc[len(frame)] = {"label": "gan2", "seed": 2, "status": "not run"}
    (result,) = evaluate_claims(frame, [claim(["gan", "gan2"], ["vae"])])
    assert result.adjusted_p < 0.05 and result.sides["gan2"].missing == 1
    assert result.verdict == MIXED
    assert "gan2 vs vae: significant, but gan2 has seeds without a result yet" in result.why
    (complete,) = evaluate_claims(frame[frame["label"] != "gan2"], [claim(["gan"], ["vae"])])
    assert complete.verdict == HOLDS


def test_a_variant_with_no_finished_seed_leaves_its_claim_untestable():
    frame = cells({"gan": [10.0, 11.0, 10.5], "vae": [30.0, 31.0, 29.5]})
    frame.loc[len(frame)] = {"label": "vae2", "seed": 0, "status": "not run"}
    (result,) = evaluate_claims(frame, [claim(["gan"], ["vae", "vae2"])])
    assert result.p_value is None and result.verdict == UNDECIDED
    assert "gan vs vae2: not testable" in result.why


def test_a_claim_with_one_seed_a_side_is_not_testable():
    (result,) = evaluate_claims(cells({"a": [1.0], "b": [2.0, 3.0]}), [claim(["a"], ["b"])])
    assert result.p_value is None and result.verdict == UNDECIDED
    assert "not testable" in result.why


def test_an_untestable_claim_over_several_pairs_renders():
    """One seed a variant (the GPU run's rehearsal): the row names no pair behind a p it lacks."""
    from bench.report.claims import claim_rows

    frame = cells({"a": [1.0], "a2": [1.5], "b": [2.0], "b2": [2.5]})
    (row,) = claim_rows(evaluate_claims(frame, [claim(["a", "a2"], ["b", "b2"])]))
    assert row["p"] == "–" and row["verdict"] == UNDECIDED


@pytest.mark.parametrize(
    "claims, message",
    [
        (
            "[{name: c, metric: fid_domian, better: [vae], worse: [dcgan-bce], source: s}]",
            "claims[0] (c): metric 'fid_domian' is not a metric with a direction (did you mean "
            "'fid_domain'?)",
        ),
        (
            "[{name: c, metric: fid_domain, better: [vea], worse: [dcgan-bce], source: s}]",
            "claims[0] (c): better names 'vea', not a variant of this suite (did you mean 'vae'?)",
        ),
        (
            "[{name: c, metric: fid_domain, better: [vae], worse: [vae], source: s}]",
            "claims[0] (c): 'vae' is on both sides",
        ),
        (
            "[{name: c, metric: fid_domain, better: [vae], worse: [dcgan-bce]}]",
            "missing required field 'claims.0.source'",
        ),
    ],
)
def test_bench_validate_checks_every_claim(write_suite, claims, message):
    path = write_suite(TINY_SUITE + f"claims: {claims}\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_valid_claim_passes_validation(write_suite):
    text = "[{name: c, metric: coverage_domain, better: [vae], worse: [dcgan-bce], source: s}]"
    path = write_suite(TINY_SUITE + f"claims: {text}\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
